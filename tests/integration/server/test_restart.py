"""Durability across a crash: SIGKILL the server and start it again on the same data dir."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.server.conftest import execution_view, run_topic, submit
from tests.support.eventually import eventually_async
from tests.support.server import ServerProcess
from tests.support.worker_socket import WorkerSocket, create_session

pytestmark = pytest.mark.integration


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data")
    process.start()
    try:
        yield process
    finally:
        process.stop()
    assert not process.tracebacks(), "\n\n".join(process.tracebacks())


@pytest.fixture
async def http(own_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=own_server.url, trust_env=False, timeout=10) as c:
        yield c


async def completed(http: httpx.AsyncClient, workspace: str, execution_id: str) -> Any:
    async def check() -> Any:
        execution = await execution_view(http, workspace, execution_id)
        assert execution is not None and execution["completedAt"] is not None, execution
        return execution

    return await eventually_async(check)


async def test_state_and_in_flight_work_survive_sigkill(
    own_server: ServerProcess, http: httpx.AsyncClient
) -> None:
    created = await http.post("/api/create_workspace", json={"name": "prod"})
    workspace = created.json()["id"]
    token = await create_session(http, workspace)
    worker = await WorkerSocket.connect(own_server.ws_url, token, workspace)
    session_id = (await worker.session_frame())[1]
    await worker.declare("app.flows", workflows=("main",))

    finished = await submit(http, workspace)
    await worker.command("execute", finished["executionId"])
    await worker.notify("put_result", finished["executionId"], ["raw", "before", []])
    await worker.notify("notify_terminated", [finished["executionId"]])
    await completed(http, workspace, finished["executionId"])

    in_flight = await submit(http, workspace)
    await worker.command("execute", in_flight["executionId"])
    await worker.notify("record_heartbeats", {in_flight["executionId"]: 1})
    queued = await submit(http, workspace, target="other")
    runs_before = (
        await http.get(f"/topics/workspaces/{workspace}/workflows/app.flows/main")
    ).json()

    own_server.restart(kill=True)
    await worker.closed()

    workspaces = (await http.get("/topics/workspaces")).json()
    assert workspaces[workspace] == {"name": "prod", "baseId": None, "state": "active"}
    runs_after = (await http.get(f"/topics/workspaces/{workspace}/workflows/app.flows/main")).json()
    assert runs_after["runs"] == runs_before["runs"]
    done = await execution_view(http, workspace, finished["executionId"])
    assert done["result"]["value"] == {"type": "raw", "data": "before", "references": []}
    queue = (await http.get(f"/topics/workspaces/{workspace}/queue")).json()
    assert set(queue) == {in_flight["executionId"], queued["executionId"]}
    assert (await execution_view(http, workspace, in_flight["executionId"]))["result"] is None

    # The worker comes back with its token: the session message lists what it holds.
    worker = await WorkerSocket.connect(own_server.ws_url, token, workspace)
    assert await worker.session_frame() == [0, session_id, [in_flight["executionId"]]]
    await worker.declare("app.flows", workflows=("main",))
    await worker.notify("record_heartbeats", {in_flight["executionId"]: 1})
    await worker.notify("put_result", in_flight["executionId"], ["raw", "late", []])
    await worker.notify("notify_terminated", [in_flight["executionId"]])
    execution = await completed(http, workspace, in_flight["executionId"])
    assert execution["result"]["type"] == "value"
    assert execution["result"]["value"]["data"] == "late"
    assert not worker.has_frame(lambda f: f[0] == 1 and f[1]["command"] == "execute")
    topic = await run_topic(http, workspace, in_flight["runId"])
    assert list(topic["steps"][in_flight["stepId"]]["executions"]) == ["1"]
    await worker.close()


async def test_new_work_is_durable_across_repeated_kills(
    own_server: ServerProcess, http: httpx.AsyncClient
) -> None:
    created = await http.post("/api/create_workspace", json={"name": "again"})
    workspace = created.json()["id"]
    runs: list[str] = []
    for _ in range(2):
        runs.append((await submit(http, workspace, idempotencyKey=f"k{len(runs)}"))["runId"])
        own_server.restart(kill=True)
    for index, run_id in enumerate(runs):
        assert (await run_topic(http, workspace, run_id))["steps"]
        again = await submit(http, workspace, idempotencyKey=f"k{index}")
        assert again["runId"] == run_id
