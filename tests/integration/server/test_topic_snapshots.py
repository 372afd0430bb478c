"""REST topic snapshots agree with the live topic's reset (``server-api.md`` §8.3, item 80)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.integration.server.conftest import submit
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
