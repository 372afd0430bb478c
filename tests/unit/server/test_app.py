"""Cross-cutting protection: project routing before auth, CORS, body limits, failed-auth
rate limiting, JWKS availability, the health check and the root redirect."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from pycoflux.server import projects
from tests.unit.server.conftest import HOST, SUPER, Serve

UNAUTHORIZED = {"error": "unauthorized"}


@pytest.mark.parametrize(
    ("host", "headers", "status", "error"),
    [
        ("localhost:7777", {}, 400, "project_required"),
        ("example.com", {}, 400, "invalid_host"),
        ("", {}, 400, "invalid_host"),
        ("..localhost:7777", {}, 400, "invalid_project"),
        ("a b.localhost:7777", {}, 400, "invalid_project"),
        (f"{'x' * 64}.localhost", {}, 400, "invalid_project"),
        ("acme.localhost:7777", {"X-Project": "other"}, 403, "project_mismatch"),
    ],
)
async def test_project_errors_come_before_authentication(
    serve: Serve, host: str, headers: dict[str, str], status: int, error: str
) -> None:
    async with serve() as h:
        response = await h.client.get("/api/discover", headers={"Host": host, **headers})
        assert (response.status_code, response.json()) == (status, {"error": error})


async def test_header_conflicting_with_the_configured_project(serve: Serve) -> None:
    async with serve(COFLUX_PUBLIC_HOST="<unset>", COFLUX_PROJECT="acme") as h:
        response = await h.client.get("/api/discover", headers={"X-Project": "other"})
        assert (response.status_code, response.json()) == (403, {"error": "project_mismatch"})
        fine = await h.client.get("/api/discover", headers={"X-Project": "acme", **h.bearer(SUPER)})
        assert fine.status_code == 200


async def test_cors_headers_on_errors_and_preflight(serve: Serve) -> None:
    async with serve(COFLUX_ALLOW_ORIGINS="https://*.example.com") as h:
        allowed = {"Origin": "https://app.example.com"}
        refused = await h.client.get("/api/discover", headers=allowed)
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == "https://app.example.com"
        assert refused.headers["vary"] == "origin"
        other = await h.client.get("/api/discover", headers={"Origin": "https://evil.test"})
        assert "access-control-allow-origin" not in other.headers
        preflight = await h.client.options("/blobs/" + "0" * 64, headers=allowed)
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-headers"] == (
            "content-type,authorization,x-api-version,x-project"
        )
    async with serve(COFLUX_ALLOW_ORIGINS="<unset>") as h:
        studio = await h.client.get(
            "/api/discover", headers={"Origin": "https://studio.coflux.com"}
        )
        assert studio.headers["access-control-allow-origin"] == "https://studio.coflux.com"


async def test_request_bodies_over_the_limit_get_413(serve: Serve, tmp_path: Path) -> None:
    async with serve(COFLUX_MAX_BODY_SIZE="1000", COFLUX_MAX_BLOB_SIZE="2000") as h:
        big = {"name": "x" * 2000}
        response = await h.call("create_workspace", big)
        assert (response.status_code, response.json()) == (413, {"error": "payload_too_large"})
        assert response.headers["access-control-allow-methods"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(5):
                yield b"x" * 500

        streamed = await h.client.post("/logs", content=chunks(), headers=h.bearer(SUPER))
        assert (streamed.status_code, streamed.json()) == (413, {"error": "payload_too_large"})
        blob = b"y" * 1500
        key = hashlib.sha256(blob).hexdigest()
        put = await h.client.put(f"/blobs/{key}", content=blob, headers=h.bearer(SUPER))
        assert put.status_code == 204  # blobs have their own, larger limit
        blob = b"z" * 3000
        key = hashlib.sha256(blob).hexdigest()

        async def blob_chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(blob), 1000):
                yield blob[start : start + 1000]

        put = await h.client.put(f"/blobs/{key}", content=blob_chunks(), headers=h.bearer(SUPER))
        assert put.status_code == 413
        assert not (tmp_path / "data" / "blobs" / key[:2] / key[2:4] / key[4:]).exists()
        assert list((tmp_path / "data" / "blobs" / "incoming").iterdir()) == []


async def test_failed_authentications_are_rate_limited_per_client(serve: Serve) -> None:
    async with serve(COFLUX_AUTH_FAILURE_LIMIT="3") as h:
        for _ in range(3):
            assert (
                await h.client.get("/api/discover", headers=h.bearer("guess"))
            ).status_code == 401
        blocked = await h.client.get("/api/discover", headers=h.bearer(SUPER))
        assert (blocked.status_code, blocked.json()) == (429, {"error": "too_many_requests"})
        assert int(blocked.headers["retry-after"]) > 0
        # Missing credentials are not guesses, and other clients are unaffected.
        assert (await h.client.get("/api/discover")).status_code == 401
        transport = httpx.ASGITransport(app=h.client._transport.app, client=("10.0.0.2", 1))  # type: ignore[attr-defined]
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{HOST}") as other:
            assert (await other.get("/api/discover", headers=h.bearer(SUPER))).status_code == 200


async def test_jwks_outage_and_disabled_studio(serve: Serve) -> None:
    async with serve() as h:
        h.fetch.down = True
        jwt = h.idp.studio_token("t1", HOST)
        response = await h.client.get("/api/discover", headers=h.bearer(jwt))
        assert (response.status_code, response.json()) == (401, UNAUTHORIZED)
        assert (await h.client.get("/api/discover", headers=h.bearer(SUPER))).status_code == 200
        h.fetch.down = False
        assert (await h.client.get("/api/discover", headers=h.bearer(jwt))).status_code == 200
    async with serve(COFLUX_STUDIO_TEAMS="<unset>") as h:
        jwt = h.idp.studio_token("t1", HOST)
        response = await h.client.get("/api/discover", headers=h.bearer(jwt))
        assert (response.status_code, response.json()) == (401, UNAUTHORIZED)
        assert h.fetch.urls == []


async def test_health_names_what_failed(
    serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serve() as h:
        healthy = await h.client.get("/health")
        assert (healthy.status_code, healthy.json()) == (200, {"status": "ok", "db": "ok"})
        await h.client.get("/api/discover", headers=h.bearer(SUPER))  # opens project acme

        async def broken(self: projects.ProjectHost, fn: object) -> object:
            raise OSError("disk I/O error")

        monkeypatch.setattr(projects.ProjectHost, "read", broken)
        blobs = tmp_path / "data" / "blobs"
        shutil.rmtree(blobs, ignore_errors=True)
        blobs.write_text("not a directory")
        degraded = await h.client.get("/health")
        assert degraded.status_code == 503
        assert degraded.json() == {
            "status": "degraded",
            "db": "error",
            "blobs": "error",
            "failed": {
                "projects/acme": "OSError: disk I/O error",
                "blobs": f"{blobs} is not a writable directory",
            },
        }


async def test_root_redirects_to_studio_setup(serve: Serve) -> None:
    async with serve(COFLUX_STUDIO_URL="https://studio.example.com/") as h:
        response = await h.client.get("/anything")
        assert response.status_code == 302
        assert response.headers["location"] == (
            "https://studio.example.com/setup?host=acme.localhost%3A7777"
        )
        plain = await h.client.get("/", headers={"Host": "coflux.example.com"})
        assert plain.headers["location"].endswith("?host=coflux.example.com%3A80")
