"""Authentication against the real server process: tokens, workers, Studio and OIDC JWTs,
the topics handshake, restarts, start-up output and secrets kept out of the logs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from pycoflux.cli.main import cli
from tests.integration.auth.conftest import SECRET, SUPER
from tests.support.eventually import eventually
from tests.support.idp import IdentityProvider
from tests.support.server import ServerProcess
from tests.support.worker_socket import WorkerSocket

pytestmark = pytest.mark.integration

BLOB = b"auth blob"
BLOB_KEY = hashlib.sha256(BLOB).hexdigest()
seen_secrets: list[str] = [SUPER, SECRET]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64(token: str) -> str:
    return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def api(client: httpx.Client, name: str, body: Any, token: str = SUPER) -> Any:
    response = client.post(f"/api/{name}", json=body, headers=bearer(token))
    assert response.status_code in (200, 204), response.text
    return response.json() if response.status_code == 200 else None


@pytest.fixture
def client(secured: ServerProcess) -> Any:
    with httpx.Client(base_url=secured.url, trust_env=False, timeout=10) as c:
        yield c


def test_every_endpoint_refuses_missing_credentials(secured: ServerProcess) -> None:
    with httpx.Client(base_url=secured.url, trust_env=False) as c:
        for path in ("/api/discover", f"/blobs/{BLOB_KEY}", "/logs?run=R1", "/metrics?run=R1"):
            response = c.get(path)
            assert (response.status_code, response.json()) == (401, {"error": "unauthorized"})

    async def handshake(subprotocols: list[str]) -> int:
        try:
            async with connect(
                f"{secured.ws_url}/topics",
                subprotocols=subprotocols,
                proxy=None,  # type: ignore[arg-type]
            ):
                return 101
        except InvalidStatus as e:
            return e.response.status_code

    assert asyncio.run(handshake(["v1"])) == 401
    assert asyncio.run(handshake([f"bearer.{b64('wrong')}", "v1"])) == 401
    assert asyncio.run(handshake([f"bearer.{b64(SUPER)}", "v1"])) == 101


async def test_a_revoked_token_is_refused_on_its_next_request(secured: ServerProcess) -> None:
    """Tokens topic over WebSocket; revocation bites on an already-open keep-alive connection."""
    async with httpx.AsyncClient(base_url=secured.url, trust_env=False, timeout=10) as admin:
        workspace = (
            await admin.post(
                "/api/create_workspace", json={"name": "staging"}, headers=bearer(SUPER)
            )
        ).json()["id"]
        async with connect(
            f"{secured.ws_url}/topics",
            subprotocols=[f"bearer.{b64(SUPER)}", "v1"],  # type: ignore[list-item]
            proxy=None,
        ) as topics:
            await topics.send(json.dumps([2, 1, "tokens"]))
            reset = json.loads(await topics.recv())
            assert reset[:2] == [2, 1]
            created = (
                await admin.post(
                    "/api/create_token",
                    json={"name": "worker", "workspaces": ["staging"]},
                    headers=bearer(SUPER),
                )
            ).json()
            token = created["token"]
            seen_secrets.append(token)
            update = json.loads(await topics.recv())
            assert update[0] == 3 and update[1] == 1
            assert any(op[0] == 0 and op[1] == [created["externalId"]] for op in update[2])

            limits = httpx.Limits(max_connections=1)
            async with httpx.AsyncClient(
                base_url=secured.url, trust_env=False, timeout=10, limits=limits
            ) as worker:
                session = (
                    await worker.post(
                        "/api/create_session",
                        json={"workspaceId": workspace},
                        headers=bearer(token),
                    )
                ).json()["sessionId"]
                seen_secrets.append(session)
                socket = await WorkerSocket.connect(secured.ws_url, session, workspace)
                try:
                    assert (await socket.session_frame())[0] == 0
                    for credential in (token, session):
                        put = await worker.put(
                            f"/blobs/{BLOB_KEY}", content=BLOB, headers=bearer(credential)
                        )
                        assert put.status_code == 204
                        logs = await worker.post(
                            "/logs", json={"messages": []}, headers=bearer(credential)
                        )
                        assert logs.status_code == 200
                    revoke = await admin.post(
                        "/api/revoke_token",
                        json={"externalId": created["externalId"]},
                        headers=bearer(SUPER),
                    )
                    assert revoke.status_code == 204
                    refused = await worker.put(
                        f"/blobs/{BLOB_KEY}", content=BLOB, headers=bearer(token)
                    )
                    assert (refused.status_code, refused.json()) == (
                        401,
                        {"error": "unauthorized"},
                    )
                    # The session it created lives on (auth-and-config.md §7.5).
                    still = await worker.get(f"/blobs/{BLOB_KEY}", headers=bearer(session))
                    assert still.status_code == 200
                finally:
                    await socket.close()
            update = json.loads(await topics.recv())
            assert update == [3, 1, [[1, [], created["externalId"]]]]


def test_production_is_out_of_a_staging_tokens_reach(client: httpx.Client) -> None:
    production = api(client, "create_workspace", {"name": "production"})["id"]
    token = api(client, "create_token", {"workspaces": ["staging"]})["token"]
    seen_secrets.append(token)
    refused = client.post(
        "/api/create_session", json={"workspaceId": production}, headers=bearer(token)
    )
    assert (refused.status_code, refused.json()) == (403, {"error": "forbidden"})


def test_studio_and_oidc_users(
    secured: ServerProcess, client: httpx.Client, idp: IdentityProvider
) -> None:
    host = f"127.0.0.1:{secured.port}"
    jwt = idp.studio_token("t1", host, sub="alice")
    seen_secrets.append(jwt)
    discover = client.get("/api/discover", headers=bearer(jwt))
    assert discover.json()["access"] == {"workspaces": ["*"]}
    workspace = api(client, "create_workspace", {"name": "jwt-space"}, jwt)["id"]
    run = api(
        client,
        "submit_workflow",
        {"workspaceId": workspace, "module": "m", "target": "t", "arguments": []},
        jwt,
    )
    result = CliRunner().invoke(
        cli,
        [
            "--host",
            host,
            "--token",
            SUPER,
            "-w",
            "jwt-space",
            "runs",
            "inspect",
            run["runId"],
            "--no-wait",
        ],
        env={"COFLUX_PROJECT": "test"},
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["createdBy"] == {"type": "user", "externalId": "alice"}

    rotated = idp.add_key()
    fresh = idp.mint(
        {"iss": idp.url, "aud": f"t1:{host}", "sub": "alice", "exp": time.time() + 60},
        kid=rotated,
    )
    assert client.get("/api/discover", headers=bearer(fresh)).status_code == 200
    other_team = idp.studio_token("t9", host)
    assert client.get("/api/discover", headers=bearer(other_team)).status_code == 401

    rsa = idp.add_key("rsa")
    oidc = idp.mint(
        {"iss": idp.oidc_issuer, "aud": "coflux", "sub": "carol", "exp": time.time() + 60},
        kid=rsa,
    )
    seen_secrets.append(oidc)
    assert client.get("/api/discover", headers=bearer(oidc)).status_code == 200
    from_studio_issuer = idp.mint(
        {"iss": idp.url, "aud": "coflux", "sub": "carol", "exp": time.time() + 60}, kid=rsa
    )
    assert client.get("/api/discover", headers=bearer(from_studio_issuer)).status_code == 401


def test_tokens_survive_a_restart_and_secrets_stay_out_of_the_log(
    secured: ServerProcess, client: httpx.Client
) -> None:
    token = api(client, "create_token", {"name": "durable"})["token"]
    seen_secrets.append(token)
    assert (secured.data_dir / "projects" / "test" / "admin.sqlite").exists()
    assert client.get("/api/discover", headers=bearer("guess-1")).status_code == 401
    secured.restart()
    with httpx.Client(base_url=secured.url, trust_env=False, timeout=10) as fresh:
        assert fresh.get("/api/discover", headers=bearer(token)).status_code == 200
    log = "\n".join(
        (secured.data_dir.parent / f"{secured.data_dir.name}-server-{n}.log").read_text()
        for n in range(1, secured.starts + 1)
    )
    assert "COFLUX_SECRET" in log and "Settings:" in log
    for secret in seen_secrets:
        assert secret not in log
    assert hashlib.sha256(SUPER.encode()).hexdigest() not in log


def test_a_server_with_no_environment_requires_auth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Bare(ServerProcess):
        def _env(self) -> dict[str, str]:
            env = {k: v for k, v in os.environ.items() if not k.startswith("COFLUX_")}
            return {**env, "PORT": str(self.port), "PYTHONUNBUFFERED": "1"}

    server = Bare(tmp_path / "unused", project=None)
    server.data_dir.parent.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(tmp_path)  # the default data directory is ./data
    server.start()
    try:
        with httpx.Client(base_url=server.url, trust_env=False) as c:
            response = c.get("/api/discover", headers={"X-Project": "p"})
            assert (response.status_code, response.json()) == (401, {"error": "unauthorized"})
        output = eventually(lambda: server.log() if "Server started" in server.log() else None)
        assert f"Data directory: {tmp_path / 'data'}" in output
        assert (tmp_path / "data").is_dir()
    finally:
        server.stop()


def test_bad_settings_stop_the_server_naming_the_variable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    base = {k: v for k, v in os.environ.items() if not k.startswith("COFLUX_")}
    cases = {
        "COFLUX_SUPER_TOKEN_HASH": {"COFLUX_SUPER_TOKEN_HASH": "not-a-hash"},
        "COFLUX_DATA_DIR": {"COFLUX_DATA_DIR": str(tmp_path / "file" / "sub")},
    }
    for variable, env in cases.items():
        result = subprocess.run(
            [sys.executable, "-m", "pycoflux", "server"],
            env={**base, **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, result.stderr
        assert variable in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
