"""Fixtures: one shared real server per test session, HTTP clients, workspaces, workers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess, running_server
from tests.support.worker_socket import WorkerSocket, create_session

WorkerFactory = Callable[..., Awaitable[WorkerSocket]]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server shared by the tests that only need isolation by workspace."""
    with running_server(tmp_path_factory.mktemp("shared") / "data") as process:
        yield process


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=10) as c:
        yield c


def unique_name(prefix: str = "ws") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def new_workspace(client: httpx.AsyncClient, base_id: str | None = None) -> str:
    body: dict[str, object] = {"name": unique_name()}
    if base_id is not None:
        body["baseId"] = base_id
    response = await client.post("/api/create_workspace", json=body)
    assert response.status_code == 200, response.text
    workspace_id: str = response.json()["id"]
    return workspace_id


async def submit(
    client: httpx.AsyncClient,
    workspace_id: str,
    module: str = "app.flows",
    target: str = "main",
    **extra: Any,
) -> dict[str, str]:
    """Submit a workflow run; returns ``{"runId", "stepId", "executionId"}``."""
    body: dict[str, object] = {
        "workspaceId": workspace_id,
        "module": module,
        "target": target,
        "arguments": [],
        **extra,
    }
    response = await client.post("/api/submit_workflow", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, str] = response.json()
    return result


async def run_topic(client: httpx.AsyncClient, workspace_id: str, run_id: str) -> Any:
    response = await client.get(f"/topics/workspaces/{workspace_id}/runs/{run_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def execution_view(client: httpx.AsyncClient, workspace_id: str, execution_id: str) -> Any:
    """The run topic's entry for one execution (None if it is not there yet)."""
    run, number, attempt = execution_id.split(":")
    step = (await run_topic(client, workspace_id, run))["steps"].get(f"{run}:{number}")
    return None if step is None else step["executions"].get(attempt)


@pytest.fixture
async def workspace(client: httpx.AsyncClient) -> str:
    return await new_workspace(client)


@pytest.fixture
async def connect_worker(
    server: ServerProcess, client: httpx.AsyncClient
) -> AsyncIterator[WorkerFactory]:
    """Create a session in a workspace and connect a scripted worker with it."""
    sockets: list[WorkerSocket] = []

    async def connect(workspace_id: str, token: str | None = None) -> WorkerSocket:
        if token is None:
            token = await create_session(client, workspace_id)
        socket = await WorkerSocket.connect(server.ws_url, token, workspace_id)
        sockets.append(socket)
        return socket

    yield connect
    for socket in sockets:
        await socket.close()
