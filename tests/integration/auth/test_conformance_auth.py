"""auth-and-config.md checklist items against the real secured server that no other test
checked: a changed secret, the project-token cache margin, logout, restricted reads and
the topics subprotocol."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from websockets.asyncio.client import connect

from pycoflux.cli.commands import login as login_command
from pycoflux.cli.main import cli
from tests.integration.auth.conftest import SECRET, SUPER, secured_env
from tests.support.eventually import eventually_async
from tests.support.frames import submit_input_params
from tests.support.idp import IdentityProvider
from tests.support.server import ServerProcess
from tests.support.worker_socket import WorkerSocket

pytestmark = pytest.mark.integration


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api(client: httpx.Client, name: str, body: Any, token: str = SUPER) -> Any:
    response = client.post(f"/api/{name}", json=body, headers=bearer(token))
    assert response.status_code in (200, 204), response.text
    return response.json() if response.status_code == 200 else None


def test_item_42_a_changed_secret_invalidates_every_token(
    tmp_path: Path, idp: IdentityProvider
) -> None:
    server = ServerProcess(tmp_path / "data", env=secured_env(idp))
    server.start()
    try:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
            token = api(client, "create_token", {"name": "ci"})["token"]
            assert client.get("/api/discover", headers=bearer(token)).status_code == 200
        server.extra_env["COFLUX_SECRET"] = "a-different-secret"
        server.restart(kill=False)
        with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
            refused = client.get("/api/discover", headers=bearer(token))
            assert (refused.status_code, refused.json()) == (401, {"error": "unauthorized"})
        # The stored hash is intact: the same token works again under its own secret.
        server.extra_env["COFLUX_SECRET"] = SECRET
        server.restart(kill=False)
        with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
            assert client.get("/api/discover", headers=bearer(token)).status_code == 200
    finally:
        server.stop()
    assert not server.tracebacks(), "\n\n".join(server.tracebacks())


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, idp: IdentityProvider) -> Iterator[Path]:
    for key in list(os.environ):
        if key.startswith("COFLUX_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("COFLUX_STUDIO_URL", idp.url)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(login_command, "sleep", lambda _: None)
    idp.pending_polls = 0
    idp.device_outcome = "grant"
    ttl = idp.project_token_ttl
    yield tmp_path / ".config" / "coflux"
    idp.project_token_ttl = ttl


def test_item_65_a_project_token_is_reused_only_until_60_s_before_it_expires(
    home: Path, idp: IdentityProvider, secured: ServerProcess
) -> None:
    host = f"127.0.0.1:{secured.port}"
    command = ["--host", host, "--project", "test", "--team", "t1", "workspaces", "list"]
    runner = CliRunner()
    assert runner.invoke(cli, ["login", "--no-browser"]).exit_code == 0
    for ttl, exchanges in ((59, 2), (120, 1)):
        (home / "token_cache.json").unlink(missing_ok=True)
        idp.project_token_ttl = ttl
        before = len(idp.exchanges)
        for _ in range(2):
            result = runner.invoke(cli, command)
            assert result.exit_code == 0, result.output
        assert len(idp.exchanges) - before == exchanges, ttl
        cached = json.loads((home / "token_cache.json").read_text())
        assert set(cached) == {f"t1:{host}"}


def test_item_68_logout_removes_credentials_and_the_token_cache(home: Path) -> None:
    home.mkdir(parents=True)
    (home / "credentials.json").write_text('{"studio_token": "x"}')
    (home / "token_cache.json").write_text('{"t1:h": {"token": "y", "expires_at": 0}}')
    result = CliRunner().invoke(cli, ["logout"])
    assert result.exit_code == 0, result.output
    assert not (home / "credentials.json").exists()
    assert not (home / "token_cache.json").exists()


async def test_item_75_reads_are_open_to_a_token_restricted_elsewhere(
    secured: ServerProcess,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(
        base_url=secured.url, trust_env=False, timeout=10, headers=bearer(SUPER)
    ) as admin:

        async def call(name: str, body: Any, **kwargs: Any) -> Any:
            response = await admin.post(f"/api/{name}", json=body, **kwargs)
            assert response.status_code in (200, 204), response.text
            return response.json() if response.status_code == 200 else None

        production = (await call("create_workspace", {"name": f"production-{suffix}"}))["id"]
        created = await call("create_token", {"workspaces": [f"unrelated-{suffix}"]})
        restricted = bearer(created["token"])
        session = (await call("create_session", {"workspaceId": production}))["sessionId"]
        worker = await WorkerSocket.connect(secured.ws_url, session, production)
        try:
            await worker.session_frame()
            await worker.declare("app.flows", workflows=("main",))
            run = await call(
                "submit_workflow",
                {
                    "workspaceId": production,
                    "module": "app.flows",
                    "target": "main",
                    "arguments": [],
                },
            )
            await worker.command("execute", run["executionId"])
            request = await worker.request("submit_input", *submit_input_params(run["executionId"]))
            reply = await worker.reply(request)
            assert reply[0] == 2, reply
            input_id = reply[2]
            log = {
                "runId": run["runId"],
                "executionId": run["executionId"],
                "workspaceId": production,
                "timestamp": 1,
                "level": 2,
                "template": "restricted reader",
                "values": {},
            }
            await admin.post("/logs", json={"messages": [log]})
            key = hashlib.sha256(b"readable").hexdigest()
            assert (await admin.put(f"/blobs/{key}", content=b"readable")).status_code == 204

            found = await call("get_input", {"inputId": input_id}, headers=restricted)
            assert found["response"] is None and "schema" in found, found
            pools = await admin.post(
                "/api/get_pools", json={"workspaceId": production}, headers=restricted
            )
            assert pools.status_code == 200, pools.text
            search = await admin.get(
                "/api/search",
                params={"workspaceId": production, "query": "main"},
                headers=restricted,
            )
            assert search.status_code == 200, search.text
            assert [m["name"] for m in search.json()["matches"]] == ["main"]
            for path in (
                f"/topics/workspaces/{production}/runs/{run['runId']}",
                f"/topics/workspaces/{production}/queue",
                f"/topics/workspaces/{production}/inputs",
                f"/topics/inputs/{input_id}",
            ):
                response = await admin.get(path, headers=restricted)
                assert response.status_code == 200, (path, response.text)
            got = await admin.get(f"/blobs/{key}", headers=restricted)
            assert (got.status_code, got.content) == (200, b"readable")
            logs = await admin.get(f"/logs?run={run['runId']}", headers=restricted)
            assert [e["template"] for e in logs.json()["logs"]] == ["restricted reader"]
            # ... while a write in that workspace is refused.
            paused = await admin.post(
                "/api/pause_workspace", json={"workspaceId": production}, headers=restricted
            )
            assert paused.status_code == 403
        finally:
            await worker.close()


async def test_item_72_the_topics_handshake_selects_v1(secured: ServerProcess) -> None:
    encoded = base64.urlsafe_b64encode(SUPER.encode()).decode().rstrip("=")
    async with connect(
        f"{secured.ws_url}/topics",
        subprotocols=[f"bearer.{encoded}", "v1"],  # type: ignore[list-item]
        proxy=None,
    ) as socket:
        assert socket.subprotocol == "v1"


async def test_item_46_an_open_worker_socket_outlives_the_revoked_token(
    secured: ServerProcess,
) -> None:
    """§7.5: sessions are separate credentials, so revoking the service token that created
    a session neither closes its open socket nor stops its work."""
    suffix = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(
        base_url=secured.url, trust_env=False, timeout=10, headers=bearer(SUPER)
    ) as admin:
        name = f"staging-{suffix}"
        created = await admin.post("/api/create_workspace", json={"name": name})
        workspace = created.json()["id"]
        token = (await admin.post("/api/create_token", json={"workspaces": [name]})).json()
        session = (
            await admin.post(
                "/api/create_session",
                json={"workspaceId": workspace},
                headers=bearer(token["token"]),
            )
        ).json()["sessionId"]
        worker = await WorkerSocket.connect(secured.ws_url, session, workspace)
        try:
            await worker.session_frame()
            await worker.declare("app.flows", workflows=("main",))
            revoked = await admin.post(
                "/api/revoke_token", json={"externalId": token["externalId"]}
            )
            assert revoked.status_code == 204
            refused = await admin.get("/api/discover", headers=bearer(token["token"]))
            assert refused.status_code == 401
            body = {"workspaceId": workspace, "module": "app.flows", "target": "main"}
            run = (await admin.post("/api/submit_workflow", json={**body, "arguments": []})).json()
            await worker.command("execute", run["executionId"])
            await worker.notify("put_result", run["executionId"], ["raw", 1, []])
            await worker.notify("notify_terminated", [run["executionId"]])

            async def recorded() -> bool:
                view = await admin.get(f"/topics/workspaces/{workspace}/runs/{run['runId']}")
                result = view.json()["steps"][run["stepId"]]["executions"]["1"]["result"]
                return result is not None and result["type"] == "value"

            await eventually_async(recorded)
            assert worker.close_code is None
        finally:
            await worker.close()
