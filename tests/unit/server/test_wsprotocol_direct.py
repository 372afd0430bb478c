"""Direct frames (``wsprotocol.DirectSocket``) on a real uvicorn server and socket.

An endpoint that takes text messages as calls and sends without awaiting must see and
send them in the order of the wire, including the messages that arrived before it
asked for direct delivery, and whatever its sends had to queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from pycoflux.server import ws as worker_ws
from pycoflux.server import wsprotocol


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Recorder:
    def __init__(self) -> None:
        self.received: list[str] = []
        self.direct: list[bool] = []
        self.done = asyncio.Event()


def _app(recorder: Recorder) -> Starlette:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        # Let the client's first messages arrive before direct delivery starts: they
        # are queued for ``receive`` and must still come first.
        await asyncio.sleep(0.2)
        direct = wsprotocol.direct(websocket.scope)
        assert direct is not None
        connection = worker_ws.WorkerConnection(websocket)
        writer = asyncio.create_task(connection.write())

        def handle(text: str, *, queued: bool) -> None:
            recorder.received.append(text)
            recorder.direct.append(not queued)
            connection.send(["echo", text])
            if text == "end":
                recorder.done.set()

        direct.deliver(lambda text: handle(text, queued=False))
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("text") is not None:
                    handle(message["text"], queued=True)
        finally:
            direct.deliver(None)
            writer.cancel()

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)])


@contextlib.asynccontextmanager
async def _server(recorder: Recorder) -> AsyncIterator[int]:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            _app(recorder),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            ws=wsprotocol.CoalescingWebSocketProtocol,
            ws_per_message_deflate=False,
            lifespan="off",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


def test_messages_arrive_and_echo_in_wire_order_across_the_switch_to_direct() -> None:
    async def main() -> tuple[Recorder, list[Any]]:
        recorder = Recorder()
        async with _server(recorder) as port:
            client = await websockets.connect(f"ws://127.0.0.1:{port}/ws")
            try:
                early = [f"early-{n}" for n in range(5)]
                for text in early:
                    await client.send(text)
                await asyncio.sleep(0.4)  # the endpoint has switched to direct delivery
                late = [f"late-{n}" for n in range(200)]
                for text in [*late, "end"]:
                    await client.send(text)
                await asyncio.wait_for(recorder.done.wait(), 10)
                echoes = [json.loads(await client.recv()) for _ in range(len(early) + 201)]
            finally:
                await client.close()
        return recorder, echoes

    recorder, echoes = asyncio.run(main())
    expected = [f"early-{n}" for n in range(5)] + [f"late-{n}" for n in range(200)] + ["end"]
    assert recorder.received == expected
    assert recorder.direct[:5] == [False] * 5  # queued before the switch
    assert all(recorder.direct[5:])  # calls from the protocol after it
    assert echoes == [["echo", text] for text in expected]


class FakeDirect:
    """A ``DirectSocket`` whose socket takes frames only while ``open``."""

    def __init__(self) -> None:
        self.open = True
        self.sent: list[str] = []

    def send_now(self, text: str) -> bool:
        if self.open:
            self.sent.append(text)
        return self.open


class FakeWebSocket:
    def __init__(self, direct: FakeDirect) -> None:
        self.scope = {"extensions": {wsprotocol.EXTENSION: direct}}
        self.sent: list[str] = []
        self.release = asyncio.Event()

    async def send_text(self, text: str) -> None:
        await self.release.wait()
        self.sent.append(text)

    async def close(self, code: int, reason: str) -> None:
        pass


def test_once_a_frame_is_queued_later_frames_queue_behind_it(monkeypatch: Any) -> None:
    direct = FakeDirect()
    monkeypatch.setattr(
        wsprotocol, "direct", lambda scope: scope["extensions"][wsprotocol.EXTENSION]
    )

    async def main() -> tuple[list[str], list[str]]:
        websocket = FakeWebSocket(direct)
        connection = worker_ws.WorkerConnection(websocket)  # type: ignore[arg-type]
        writer = asyncio.create_task(connection.write())
        connection.send([1])  # straight to the socket
        direct.open = False
        connection.send([2])  # the socket is full: queued
        direct.open = True
        connection.send([3])  # the socket could take it, but [2] is still queued
        await asyncio.sleep(0)
        websocket.release.set()
        while len(websocket.sent) < 2:
            await asyncio.sleep(0)
        connection.send([4])  # the queue is empty again: direct
        connection.close(None)
        await asyncio.wait_for(writer, 5)
        return direct.sent, websocket.sent

    sent_direct, sent_queued = asyncio.run(main())
    assert sent_direct == ["[1]", "[4]"]
    assert sent_queued == ["[2]", "[3]"]
