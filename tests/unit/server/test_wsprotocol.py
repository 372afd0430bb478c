"""The server's WebSocket protocol writes the frames of one loop iteration together."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.protocols.utils import ClientDisconnected
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from pycoflux.server.wsprotocol import CoalescingWebSocketProtocol


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing


def protocol(loop: asyncio.AbstractEventLoop) -> tuple[CoalescingWebSocketProtocol, Transport]:
    """An accepted connection, without the handshake bytes (only our send path runs)."""
    proto = object.__new__(CoalescingWebSocketProtocol)
    conn = ServerProtocol()
    conn.state = State.OPEN
    transport = Transport()
    attributes: dict[str, Any] = {
        "conn": conn,
        "transport": transport,
        "loop": loop,
        "writable": asyncio.Event(),
        "handshake_complete": True,
        "close_sent": False,
        "initial_response": None,
        "disconnected": False,
    }
    for name, value in attributes.items():
        setattr(proto, name, value)
    proto.writable.set()
    return proto, transport


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked short frame the server wrote, in order."""
    found = []
    while data:
        header, length = data[0], data[1]
        assert header & 0x80 and length < 126  # final frames, short payloads
        found.append((header & 0x0F, data[2 : 2 + length]))
        data = data[2 + length :]
    return found


def test_frames_sent_in_one_iteration_go_out_in_one_write() -> None:
    async def main() -> list[bytes]:
        proto, transport = protocol(asyncio.get_running_loop())
        for n in range(5):
            await proto.send({"type": "websocket.send", "text": f"[{n}]"})
        assert transport.writes == []  # nothing yet: the flush is a callback
        await asyncio.sleep(0)
        await proto.send({"type": "websocket.send", "bytes": b"later"})
        await asyncio.sleep(0)
        return transport.writes

    writes = asyncio.run(main())
    assert len(writes) == 2
    assert frames(writes[0]) == [(Opcode.TEXT, f"[{n}]".encode()) for n in range(5)]
    assert frames(writes[1]) == [(Opcode.BINARY, b"later")]


def test_a_closing_transport_gets_no_write() -> None:
    async def main() -> list[bytes]:
        proto, transport = protocol(asyncio.get_running_loop())
        await proto.send({"type": "websocket.send", "text": "x"})
        transport.closing = True
        await asyncio.sleep(0)
        return transport.writes

    assert asyncio.run(main()) == []


def test_sending_after_a_disconnect_raises() -> None:
    async def main() -> None:
        proto, _ = protocol(asyncio.get_running_loop())
        proto.disconnected = True
        with pytest.raises(ClientDisconnected):
            await proto.send({"type": "websocket.send", "text": "x"})

    asyncio.run(main())


def test_send_now_refuses_what_the_socket_cannot_take_at_once() -> None:
    async def main() -> tuple[list[bool], list[bytes]]:
        proto, transport = protocol(asyncio.get_running_loop())
        answers = [proto.send_now("a")]
        proto.writable.clear()  # the peer lags: uvicorn paused writing
        answers.append(proto.send_now("b"))
        proto.writable.set()
        proto.close_sent = True
        answers.append(proto.send_now("c"))
        await asyncio.sleep(0)
        return answers, transport.writes

    answers, writes = asyncio.run(main())
    assert answers == [True, False, False]
    assert [frames(w) for w in writes] == [[(Opcode.TEXT, b"a")]]
