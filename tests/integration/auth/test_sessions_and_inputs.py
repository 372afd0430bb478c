"""Session tokens over a session's lifetime and cross-workspace input responses, against
the real secured server (auth-and-config.md §8, §12; checklist items 50, 53 and 76)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from pycoflux.orchestration import core
from tests.integration.auth.conftest import SUPER
from tests.support.eventually import eventually_async
from tests.support.frames import submit_input_params
from tests.support.server import ServerProcess
from tests.support.worker_socket import WorkerSocket

pytestmark = pytest.mark.integration

# semantics.md §1.1: 12 + 1 characters of the short-id alphabet; then 24 of URL-safe base64.
SESSION_TOKEN = re.compile(
    r"[bcdfghjklmnpqrstvwxyzBCDFGHJKLMNPQRSTVWXYZ2-9]{13}\.[A-Za-z0-9_-]{24}"
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def admin(secured: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=secured.url, trust_env=False, timeout=10, headers=bearer(SUPER)
    ) as client:
        yield client


async def api(client: httpx.AsyncClient, name: str, body: Any, **kwargs: Any) -> Any:
    response = await client.post(f"/api/{name}", json=body, **kwargs)
    assert response.status_code in (200, 204), response.text
    return response.json() if response.status_code == 200 else None


async def new_workspace(admin: httpx.AsyncClient, prefix: str) -> tuple[str, str]:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    workspace_id: str = (await api(admin, "create_workspace", {"name": name}))["id"]
    return name, workspace_id


async def test_item_50_session_ids_are_short_ids(admin: httpx.AsyncClient) -> None:
    _, workspace = await new_workspace(admin, "shape")
    tokens = [
        (await api(admin, "create_session", {"workspaceId": workspace}))["sessionId"]
        for _ in range(5)
    ]
    assert [t for t in tokens if not SESSION_TOKEN.fullmatch(t)] == []


async def test_item_53_an_expired_sessions_token_is_refused(
    secured: ServerProcess, admin: httpx.AsyncClient
) -> None:
    _, workspace = await new_workspace(admin, "expiry")
    token = (await api(admin, "create_session", {"workspaceId": workspace}))["sessionId"]
    worker = await WorkerSocket.connect(secured.ws_url, token, workspace)
    await worker.session_frame()
    await worker.close()

    async def topics(credential: str) -> int:
        async with httpx.AsyncClient(base_url=secured.url, trust_env=False, timeout=10) as c:
            return (await c.get("/topics/workspaces", headers=bearer(credential))).status_code

    # Disconnected but within the reconnection timeout, the token still works.
    assert await topics(token) == 200
    listed = await admin.get(f"/topics/workspaces/{workspace}/sessions")
    assert token.split(".")[0] in listed.json()

    async def refused() -> bool:
        return await topics(token) == 401

    # The session expires RECONNECTION_TIMEOUT_MS (30 s) after the disconnect.
    await eventually_async(refused, timeout=core.RECONNECTION_TIMEOUT_MS / 1000 + 20, interval=0.5)
    # server-api.md item 111: the expired session is gone from the sessions topic too.
    sessions = await admin.get(f"/topics/workspaces/{workspace}/sessions")
    assert sessions.status_code == 200 and token.split(".")[0] not in sessions.json()
    again = await WorkerSocket.connect(secured.ws_url, token, workspace)
    assert await again.closed() == (4000, "session_invalid")


async def test_item_76_a_restricted_token_responds_to_an_input_of_another_workspace(
    secured: ServerProcess, admin: httpx.AsyncClient
) -> None:
    staging, _ = await new_workspace(admin, "staging")
    _, production = await new_workspace(admin, "production")
    created = await api(admin, "create_token", {"name": "ops", "workspaces": [staging]})

    session = (await api(admin, "create_session", {"workspaceId": production}))["sessionId"]
    worker = await WorkerSocket.connect(secured.ws_url, session, production)
    try:
        await worker.session_frame()
        await worker.declare("app.flows", workflows=("main",))
        run = await api(
            admin,
            "submit_workflow",
            {"workspaceId": production, "module": "app.flows", "target": "main", "arguments": []},
        )
        await worker.command("execute", run["executionId"])
        request = await worker.request("submit_input", *submit_input_params(run["executionId"]))
        reply = await worker.reply(request)
        assert reply[0] == 2, reply
        input_id = reply[2]

        restricted = bearer(created["token"])
        # The token is restricted: production's workspace actions are out of its reach...
        paused = await admin.post(
            "/api/pause_workspace", json={"workspaceId": production}, headers=restricted
        )
        assert paused.status_code == 403
        # ... but responding to an input checks no workspace.
        await api(admin, "respond_input", {"inputId": input_id, "value": "go"}, headers=restricted)
        found = await api(admin, "get_input", {"inputId": input_id})
        assert found["response"]["value"] == "go"
        assert found["response"]["createdBy"] == {
            "type": "token",
            "externalId": created["externalId"],
        }
    finally:
        await worker.close()
