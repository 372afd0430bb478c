"""uvicorn's WebSocket protocol, writing what one loop iteration sends in one socket write.

uvicorn writes each ASGI ``websocket.send`` to the socket at once: one system call, and
on loopback one wake-up of the peer, per frame. The effects of a committed batch send
several frames in a row (a reply, the executions it assigned, topic updates), so here a
frame is only encoded when it is sent, and everything encoded before the loop comes
round is written together by a callback. Each frame stays its own WebSocket message.

Order is kept: uvicorn's other writes (accept, close, pong) take the pending frames
with them, since they flush the same sans-I/O connection's output first.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState


class CoalescingWebSocketProtocol(WebSocketsSansIOProtocol):
    """``websockets-sansio`` with one transport write per loop iteration for data frames."""

    _flush_scheduled = False

    async def send(self, message: Any) -> None:
        if (
            message["type"] != "websocket.send"
            or not self.handshake_complete
            or self.close_sent
            or self.initial_response is not None
        ):
            await super().send(message)
            return
        await self.writable.wait()  # uvicorn's flow control: paused while the peer lags
        if self.disconnected:
            raise ClientDisconnected()
        data, text = message.get("bytes"), message.get("text")
        try:
            if data is not None:
                self.conn.send_binary(data)
            elif text is not None:
                self.conn.send_text(text.encode())
        except InvalidState:
            raise ClientDisconnected() from None
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        output = self.conn.data_to_send()
        if output and not self.transport.is_closing():
            self.transport.write(b"".join(output))
