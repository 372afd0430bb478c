"""REST topic snapshots agree with the live topic's reset (``server-api.md`` §8.3, item 80)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.integration.server.conftest import WorkerFactory, run_topic, submit
from tests.integration.server.test_orchestration_model import Topics
from tests.integration.server.test_worker_socket import (
    finish,
    ready_worker,
    started,
    submit_child,
)
from tests.support.eventually import eventually_async
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration


async def reset(server: ServerProcess, topic: str) -> Any:
    async with connect(f"{server.ws_url}/topics", subprotocols=["v1"], proxy=None) as socket:  # type: ignore[list-item]
        await socket.send(json.dumps([2, 1, topic]))
        async with asyncio.timeout(10):
            frame = json.loads(await socket.recv())
    assert frame[:2] == [2, 1], frame
    return frame[2]


@pytest.mark.parametrize(
    "topic",
    [
        "workspaces",
        "workspaces/{ws}/queue",
        "workspaces/{ws}/sessions",
        "workspaces/{ws}/manifests",
        "workspaces/{ws}/modules",
        "workspaces/{ws}/workflows/app.flows/main",
        "workspaces/{ws}/runs/{run}",
    ],
)
async def test_snapshot_equals_the_live_reset(
    server: ServerProcess, client: httpx.AsyncClient, workspace: str, topic: str
) -> None:
    run = await submit(client, workspace)
    path = topic.format(ws=workspace, run=run["runId"])
    snapshot = await client.get(f"/topics/{path}")
    assert snapshot.status_code == 200
    assert snapshot.headers["content-type"].startswith("application/json")
    assert await reset(server, path) == snapshot.json()


async def test_a_run_of_many_steps_watched_while_it_runs_ends_equal_to_its_snapshot(
    server: ServerProcess,
    client: httpx.AsyncClient,
    connect_worker: WorkerFactory,
    workspace: str,
) -> None:
    """The live run topic is built in slices, each its own read, while the run changes
    between them; what the subscriber ends with is what a snapshot reads at once."""
    worker = await ready_worker(connect_worker, workspace)
    run = await started(client, worker, workspace)
    path = f"workspaces/{workspace}/runs/{run['runId']}"
    async with connect(f"{server.ws_url}/topics", subprotocols=["v1"], proxy=None) as socket:  # type: ignore[list-item]
        topics = Topics(socket)
        await topics.subscribe(1, path)
        children = []
        for i in range(300):
            children.append(await submit_child(worker, run["executionId"]))
            if i % 100 == 0:
                await topics.receive()  # let the subscriber see the run part-built
        for child in children:
            await worker.command("execute", child)
            await finish(worker, child, 1)
        await finish(worker, run["executionId"], "done")

        async def finished() -> Any:
            snapshot = await run_topic(client, workspace, run["runId"])
            assert snapshot["steps"][f"{run['runId']}:1"]["executions"]["1"]["result"]
            return snapshot

        snapshot = await eventually_async(finished)
        assert len(snapshot["steps"]) == 301
        async with asyncio.timeout(30):
            while topics.values[1] != snapshot:
                await topics.receive()
