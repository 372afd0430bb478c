"""A server with a super token (for ``rotate_logs``), HTTP clients and an SSE reader."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess, running_server

SUPER_TOKEN = "storage-super-token"
EVENT_TIMEOUT = 10.0  # a bound on waiting for an expected event, not a timing assertion


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "COFLUX_SUPER_TOKEN_HASH": hashlib.sha256(SUPER_TOKEN.encode()).hexdigest(),
        "COFLUX_MAX_BLOB_SIZE": str(64 * 1024),
    }
    with running_server(tmp_path_factory.mktemp("storage") / "data", env=env) as process:
        yield process


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=10) as c:
        yield c


async def rotate_logs(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/rotate_logs", json={}, headers={"authorization": f"Bearer {SUPER_TOKEN}"}
    )
    assert response.status_code == 204, response.text


def new_run_id() -> str:
    return "R" + uuid.uuid4().hex[:10]


class EventStream:
    """The ``data:`` events of a server-sent event response, one JSON value each."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.comments = 0

    async def next(self) -> Any:
        async with asyncio.timeout(EVENT_TIMEOUT):
            async for line in self._lines:
                if line.startswith("data: "):
                    return json.loads(line[len("data: ") :])
                if line.startswith(":"):
                    self.comments += 1
        raise AssertionError("the stream ended")


@asynccontextmanager
async def event_stream(
    client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> AsyncIterator[EventStream]:
    headers = {"accept": "text/event-stream"}
    async with client.stream("GET", path, params=params, headers=headers, timeout=None) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        yield EventStream(response)
