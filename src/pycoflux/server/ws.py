"""The worker WebSocket (``/worker``): frames in, commands to the project host, frames out.

Theory of operation. After the upgrade the session token (from the ``session.<b64>``
sub-protocol) is checked by the core. The session frame is always the first frame
on a connection, followed by everything queued for the session while it was away;
``ProjectHost.attach`` does both before any new frame can be sent. Outgoing frames
go straight to the socket while it can take them (``wsprotocol.DirectSocket``), else
through an unbounded per-connection queue drained by one writer task, so the core never
waits on a slow socket and frames are never dropped or reordered. Incoming frames are
decoded into commands and submitted in arrival order, as plain calls from the protocol
where the server runs ours.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from pycoflux.orchestration import commands, effects
from pycoflux.protocol import version
from pycoflux.server import auth, workers, wsprotocol
from pycoflux.server.context import ApiError

log = logging.getLogger("pycoflux.server.ws")


class WorkerConnection:
    """One accepted worker socket with its ordered, unbounded outbox."""

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        self._direct = wsprotocol.direct(websocket.scope)
        self._outbox: asyncio.Queue[str | tuple[str | None]] = asyncio.Queue()
        self._queued = 0  # frames in the outbox or being written by ``write``
        self.closed = asyncio.Event()

    def send(self, frame: list[Any]) -> None:
        text = json.dumps(frame, separators=(",", ":"))
        if not self._queued and self._direct is not None and self._direct.send_now(text):
            return
        self._queued += 1
        self._outbox.put_nowait(text)

    def close(self, reason: str | None) -> None:
        self._queued += 1
        self._outbox.put_nowait((reason,))

    async def write(self) -> None:
        try:
            while True:
                item = await self._outbox.get()
                if isinstance(item, tuple):
                    reason = item[0]
                    await self._websocket.close(code=4000 if reason else 1000, reason=reason or "")
                    return
                await self._websocket.send_text(item)
                self._queued -= 1
        except (WebSocketDisconnect, RuntimeError, OSError):
            return
        finally:
            self.closed.set()


def worker_endpoint(server: Any) -> Callable[[WebSocket], Awaitable[None]]:
    async def endpoint(websocket: WebSocket) -> None:
        expected = websocket.query_params.get("version")
        try:
            if expected and expected != version.API_VERSION:
                raise ApiError(
                    409,
                    "version_mismatch",
                    {"server": version.SERVER_VERSION, "expected": expected},
                )
            host = await server.project(websocket)
        except ApiError as e:
            await websocket.send_denial_response(e.response())
            return
        await websocket.accept(subprotocol="v1")
        token = auth.subprotocol_token(list(websocket.scope.get("subprotocols", [])), "session")
        outcome = await host.execute(
            commands.ConnectSession(
                token=token, workspace_id=websocket.query_params.get("workspaceId", "")
            )
        )
        if not isinstance(outcome, effects.Reply):
            reason = outcome.error if isinstance(outcome, effects.Rejected) else "session_invalid"
            await websocket.close(code=4000, reason=reason)
            return
        session_frame: list[Any] = outcome.result
        session_id: str = session_frame[1]
        connection = WorkerConnection(websocket)
        host.attach(session_id, connection, session_frame)
        writer = asyncio.create_task(connection.write(), name=f"worker-writer-{session_id}")
        # Frames are read right here, one await each. When the server closes the socket
        # (the writer sends the close frame), the read loop is cancelled, in case the
        # peer never completes the closing handshake.
        reader = asyncio.current_task()
        writer.add_done_callback(lambda _: reader.cancel() if reader is not None else None)

        def handle(text: str) -> None:
            command = workers.decode(session_id, text)
            if isinstance(command, workers.ProtocolError):
                log.warning("protocol error from session %s: %s", session_id, command)
                connection.close("protocol_error")
            elif isinstance(command, workers.Unsupported):
                connection.send([3, command.request_id, str(command)])
            elif command is not None:
                try:
                    host.submit(command)
                except asyncio.QueueFull:
                    log.error(
                        "project %s is overloaded; closing session %s", host.project_id, session_id
                    )
                    connection.close("overloaded")

        # Text frames arrive as calls to ``handle`` (where the server runs our protocol);
        # ``receive`` still brings any queued before that, other messages and the end.
        direct = wsprotocol.direct(websocket.scope)
        if direct is not None:
            direct.deliver(handle)
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is not None:
                    handle(text)
        except (WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            if direct is not None:
                direct.deliver(None)
            host.detach(session_id, connection)
            connection.close(None)
            try:
                await asyncio.wait_for(writer, timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                writer.cancel()

    return endpoint
