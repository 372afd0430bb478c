"""Worker sessions over time: disconnects, reconnects, replacement, draining, capacity
(``server-api.md`` §9.2, §9.8, checklist 81, 109, 110, 114, 115)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.server.conftest import WorkerFactory, execution_view, submit
from tests.support.eventually import eventually_async
from tests.support.server import ServerProcess
from tests.support.worker_socket import WorkerSocket

pytestmark = pytest.mark.integration

SESSION_KEYS = {
    "connected",
    "executing",
    "concurrency",
    "poolName",
    "targets",
    "provides",
    "accepts",
    "workerState",
    "executions",
}


async def sessions(client: httpx.AsyncClient, workspace: str) -> Any:
    response = await client.get(f"/topics/workspaces/{workspace}/sessions")
    assert response.status_code == 200
    return response.json()


async def test_sessions_topic_tracks_connection_and_work(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await connect_worker(workspace)
    session_id = (await worker.session_frame())[1]
    await worker.declare("app.flows", workflows=("main",), tasks=("b", "a"), concurrency=3)
    run = await submit(client, workspace)
    await worker.command("execute", run["executionId"])

    async def busy() -> Any:
        entry = (await sessions(client, workspace))[session_id]
        assert entry["executing"] == 1
        return entry

    entry = await eventually_async(busy)
    assert set(entry) == SESSION_KEYS
    assert entry["connected"] is True
    assert entry["concurrency"] == 3
    assert entry["targets"] == {"app.flows": ["a", "b", "main"]}
    assert entry["executions"] == 1
    assert entry["provides"] == {} and entry["accepts"] == {}

    await worker.close()

    async def disconnected() -> bool:
        return (await sessions(client, workspace))[session_id]["connected"] is False

    await eventually_async(disconnected)


async def test_reconnect_delivers_the_session_message_then_queued_frames(
    server: ServerProcess,
    client: httpx.AsyncClient,
    connect_worker: WorkerFactory,
    workspace: str,
) -> None:
    worker = await connect_worker(workspace)
    session_id = (await worker.session_frame())[1]
    await worker.declare("app.flows", workflows=("main",))
    kept = await submit(client, workspace)
    await worker.command("execute", kept["executionId"])
    cancelled = await submit(client, workspace)
    await worker.command("execute", cancelled["executionId"])
    await worker.notify("record_heartbeats", {kept["executionId"]: 1, cancelled["executionId"]: 1})
    await worker.close()

    async def disconnected() -> bool:
        return (await sessions(client, workspace))[session_id]["connected"] is False

    await eventually_async(disconnected)
    # Generated while nobody is connected: queued for the session.
    response = await client.post(
        "/api/cancel_execution",
        json={"workspaceId": workspace, "executionId": cancelled["executionId"]},
    )
    assert response.status_code == 200

    assert worker.token is not None
    again = await WorkerSocket.connect(server.ws_url, worker.token, workspace)
    try:
        await eventually_async(lambda: len(again.frames) >= 2)
        session_frame, abort = again.frames
        assert session_frame[:2] == [0, session_id]
        assert sorted(session_frame[2]) == sorted([kept["executionId"], cancelled["executionId"]])
        assert abort == [1, {"command": "abort", "params": [cancelled["executionId"]]}]
        # A result sent after reconnecting is accepted.
        await again.notify("put_result", kept["executionId"], ["raw", "after", []])
        await again.notify("notify_terminated", [kept["executionId"], cancelled["executionId"]])

        async def done() -> Any:
            execution = await execution_view(client, workspace, kept["executionId"])
            assert execution["completedAt"] is not None
            return execution

        assert (await eventually_async(done))["result"]["type"] == "value"
    finally:
        await again.close()


async def test_a_second_connection_replaces_the_first(
    server: ServerProcess,
    client: httpx.AsyncClient,
    connect_worker: WorkerFactory,
    workspace: str,
) -> None:
    first = await connect_worker(workspace)
    session_id = (await first.session_frame())[1]
    assert first.token is not None
    second = await WorkerSocket.connect(server.ws_url, first.token, workspace)
    try:
        assert await second.session_frame() == [0, session_id, []]
        await first.closed()
        await second.declare("app.flows", workflows=("main",))
        run = await submit(client, workspace)
        await second.command("execute", run["executionId"])
        assert not first.has_frame(lambda f: f[0] == 1)
        assert (await sessions(client, workspace))[session_id]["connected"] is True
    finally:
        await second.close()


async def test_draining_session_gets_no_new_work_but_finishes_its_own(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    draining = await connect_worker(workspace)
    await draining.session_frame()
    await draining.declare("app.flows", workflows=("main",))
    held = await submit(client, workspace)
    await draining.command("execute", held["executionId"])
    await draining.notify("session_draining")
    # Frames are applied in order: once this request is answered, the drain is recorded.
    await draining.reply(await draining.request("cancel", [], held["executionId"]))
    later = await submit(client, workspace)
    # Another worker takes the new run: the draining one was passed over.
    fresh = await connect_worker(workspace)
    await fresh.session_frame()
    await fresh.declare("app.flows", workflows=("main",))
    await fresh.command("execute", later["executionId"])
    assert not draining.has_frame(lambda f: f[0] == 1 and f[1]["params"][0] == later["executionId"])
    await draining.notify("put_result", held["executionId"], ["raw", 1, []])
    await draining.notify("notify_terminated", [held["executionId"]])

    async def done() -> Any:
        execution = await execution_view(client, workspace, held["executionId"])
        assert execution["completedAt"] is not None
        return execution

    assert (await eventually_async(done))["result"]["type"] == "value"


async def test_concurrency_limits_assignments(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await connect_worker(workspace)
    await worker.session_frame()
    await worker.declare("app.flows", workflows=("main",), concurrency=1)
    first = await submit(client, workspace)
    second = await submit(client, workspace)
    await worker.command("execute", first["executionId"])
    queue = (await client.get(f"/topics/workspaces/{workspace}/queue")).json()
    assert queue[second["executionId"]]["assignedAt"] is None
    await worker.notify("put_result", first["executionId"], ["raw", 1, []])
    await worker.notify("notify_terminated", [first["executionId"]])
    await worker.command("execute", second["executionId"])
