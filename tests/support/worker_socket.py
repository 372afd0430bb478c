"""A scripted worker speaking the ``/worker`` WebSocket protocol (``server-api.md`` §9).

Tests drive it frame by frame: ``request``/``notify`` send worker messages, and
``command``/``reply`` wait for the matching server frame. A reader task collects every
incoming frame so waiting for one kind never loses frames of another kind.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

FRAME_TIMEOUT = 10.0


def subprotocol(token: str) -> str:
    return "session." + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


class WorkerSocket:
    """One connection to ``/worker``; frames are JSON arrays in, JSON objects out."""

    def __init__(self, connection: ClientConnection, token: str | None = None) -> None:
        self.connection = connection
        self.token = token
        self.frames: list[Any] = []
        self._arrived = asyncio.Condition()
        self._ids = itertools.count(1)
        self._reader = asyncio.create_task(self._read(), name="test-worker-reader")

    @classmethod
    async def connect(
        cls,
        ws_url: str,
        token: str | None,
        workspace_id: str,
        *,
        query: str = "",
    ) -> WorkerSocket:
        subprotocols = ["v1"] if token is None else [subprotocol(token), "v1"]
        connection = await connect(
            f"{ws_url}/worker?workspaceId={workspace_id}{query}",
            subprotocols=subprotocols,  # type: ignore[arg-type]
            proxy=None,
            open_timeout=FRAME_TIMEOUT,
            ping_interval=None,
            close_timeout=2,
        )
        return cls(connection, token)

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in self.connection:
                frame = json.loads(message)
                async with self._arrived:
                    self.frames.append(frame)
                    self._arrived.notify_all()
        async with self._arrived:
            self._arrived.notify_all()

    # --- Sending ------------------------------------------------------------------

    async def notify(self, name: str, *params: Any) -> None:
        await self.connection.send(json.dumps({"request": name, "params": list(params)}))

    async def request(self, name: str, *params: Any) -> int:
        request_id = next(self._ids)
        await self.connection.send(
            json.dumps({"request": name, "params": list(params), "id": request_id})
        )
        return request_id

    async def declare(
        self,
        module: str,
        *,
        workflows: tuple[str, ...] = (),
        tasks: tuple[str, ...] = (),
        concurrency: int = 0,
    ) -> None:
        await self.notify(
            "declare_targets",
            {module: {"workflow": list(workflows), "task": list(tasks)}},
            concurrency,
        )

    # --- Receiving ----------------------------------------------------------------

    async def take(self, match: Any, *, timeout: float = FRAME_TIMEOUT) -> Any:
        """Remove and return the first received frame for which ``match(frame)`` holds."""
        async with asyncio.timeout(timeout), self._arrived:
            while True:
                for index, frame in enumerate(self.frames):
                    if match(frame):
                        return self.frames.pop(index)
                if self._reader.done():
                    raise AssertionError(
                        f"connection closed ({self.close_code} {self.close_reason!r});"
                        f" unmatched frames: {self.frames}"
                    )
                await self._arrived.wait()

    async def session_frame(self) -> list[Any]:
        frame: list[Any] = await self.take(lambda f: f[0] == 0)
        return frame

    async def command(self, name: str, execution_id: str | None = None) -> list[Any]:
        """The params of the next ``name`` command (for ``execution_id`` if given)."""
        frame = await self.take(
            lambda f: (
                f[0] == 1
                and f[1]["command"] == name
                and (execution_id is None or f[1]["params"][0] == execution_id)
            )
        )
        params: list[Any] = frame[1]["params"]
        return params

    async def reply(self, request_id: int, *, timeout: float = FRAME_TIMEOUT) -> list[Any]:
        """The ``[2, id, result]`` or ``[3, id, error]`` frame answering a request."""
        frame: list[Any] = await self.take(
            lambda f: f[0] in (2, 3) and f[1] == request_id, timeout=timeout
        )
        return frame

    def has_frame(self, match: Any) -> bool:
        return any(match(frame) for frame in self.frames)

    async def closed(self, *, timeout: float = FRAME_TIMEOUT) -> tuple[int | None, str | None]:
        """Wait for the server to close the connection; returns (code, reason)."""
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._reader)
        return self.close_code, self.close_reason

    @property
    def close_code(self) -> int | None:
        return self.connection.close_code

    @property
    def close_reason(self) -> str | None:
        return self.connection.close_reason

    async def close(self) -> None:
        await self.connection.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def create_session(client: httpx.AsyncClient, workspace_id: str) -> str:
    response = await client.post("/api/create_session", json={"workspaceId": workspace_id})
    assert response.status_code == 200, response.text
    token: str = response.json()["sessionId"]
    return token
