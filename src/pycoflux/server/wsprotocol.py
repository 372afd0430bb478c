"""uvicorn's WebSocket protocol with two short cuts for the sockets that carry most frames.

* **One socket write per loop iteration.** uvicorn writes each ASGI ``websocket.send`` to
  the socket at once: one system call, and on loopback one wake-up of the peer, per frame.
  The effects of a committed batch send several frames in a row (a reply, the executions
  it assigned, topic updates), so here a frame is only encoded when it is sent, and
  everything encoded before the loop comes round is written together by a callback.
* **Direct frames** (``DirectSocket``, found in the scope's extensions). An endpoint may
  take text messages as plain calls (``deliver``) and send text without awaiting
  (``send_now``). Through ASGI each incoming message is queued, wakes the endpoint's task
  a loop iteration later, and pauses then resumes reading the socket; each outgoing one
  goes through the framework's send wrappers. Both cost more than handling the frame.

Order is kept: uvicorn's other writes (accept, close, pong) take the pending frames with
them, since they flush the same sans-I/O connection's output first; a message is only
delivered directly while no earlier one waits in the ASGI queue; ``send_now`` refuses
(returns False) whenever the socket cannot take the frame at once, and the caller then
queues it behind the ones it already queued.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.http11 import Request

EXTENSION = "pycoflux.direct"


class CoalescingWebSocketProtocol(WebSocketsSansIOProtocol):
    """``websockets-sansio`` with coalesced writes and direct text frames."""

    _flush_scheduled = False
    _on_text: Callable[[str], None] | None = None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)
        if scope is not None and not self.close_sent:
            scope["extensions"][EXTENSION] = DirectSocket(self)

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
        self._schedule_flush()

    def send_now(self, text: str) -> bool:
        """Send a text message without waiting, if the socket can take it now."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.initial_response is not None
            or self.disconnected
            or not self.writable.is_set()
        ):
            return False
        try:
            self.conn.send_text(text.encode())
        except InvalidState:
            return False
        self._schedule_flush()
        return True

    def send_receive_event_to_app(self) -> None:
        on_text = self._on_text
        if (
            on_text is None
            or self.curr_msg_data_type != "text"
            or self.close_sent
            or not self.queue.empty()
        ):
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.conn.send_close(1007)
            self.handle_parser_exception()
            return
        on_text(text)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        output = self.conn.data_to_send()
        if output and not self.transport.is_closing():
            self.transport.write(b"".join(output))


class DirectSocket:
    """What an endpoint sees of ``CoalescingWebSocketProtocol``'s short cuts."""

    def __init__(self, protocol: CoalescingWebSocketProtocol) -> None:
        self._protocol = protocol

    def deliver(self, on_text: Callable[[str], None] | None) -> None:
        """From now on, call ``on_text`` for each text message instead of queueing it for
        ``receive`` (while none is queued). Other events still go to ``receive``."""
        self._protocol._on_text = on_text

    def send_now(self, text: str) -> bool:
        return self._protocol.send_now(text)


def direct(scope: Any) -> DirectSocket | None:
    """The connection's ``DirectSocket``, when the server runs our protocol."""
    extension = scope.get("extensions", {}).get(EXTENSION)
    return extension if isinstance(extension, DirectSocket) else None
