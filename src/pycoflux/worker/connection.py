"""The worker's WebSocket session with the server: envelope, ordering, reconnection.

Theory of operation. Everything the worker sends goes through one FIFO *outbox*, drained
by a single writer task, so frames for an execution reach the socket in the order they
were produced and a request's reply acknowledges everything written before it. The writer
only runs once the server's session frame (``[0, sid, ids]``) has arrived on the current
socket: at that point the handler prunes executions the server no longer lists, the
outbox is stripped of frames for pruned executions and of terminal reports (the handler
regenerates those from its records, re-sent after every session frame and never lost),
and only then does writing start.

When the socket drops, unwritten heartbeats/reports are discarded; stream and group
notifications marked *replayable* stay queued; requests follow their ``RetryPolicy``:
``RETRY`` (select, cancel) and ``WAIT`` (idempotent ones) are re-queued at the front and
re-issued with fresh ids, ``FAIL`` ones fail with "connection lost". Reconnection backs
off from 1 s, doubling to 10 s, plus 0-50 % jitter; a successful connection resets it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import enum
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from pycoflux import errors
from pycoflux.protocol import version
from pycoflux.worker import console
from pycoflux.worker.config import Timings

log = console.get_logger()

FATAL_CLOSE_REASONS = frozenset({"session_invalid", "project_not_found", "workspace_mismatch"})
_MAX_FRAME = 128 * 1024 * 1024
_UNTIMED_WRITE_LIMIT = 16 * 1024  # asyncio pauses writers at 64 KiB of buffered output
_BATCH_BYTES = 64 * 1024  # frames queued together are written together, up to about this
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class _CoalescingConnection(ClientConnection):
    """Writes the frames of one ``send_context`` with one transport write.

    The transport sends each write at once (a syscall each); frames queued together
    (several executions' reports, a burst of stream items) need only one.
    """

    def send_data(self) -> None:
        chunks = self.protocol.data_to_send()
        if chunks and all(chunks):
            self.transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            return
        # An end-of-stream marker among them (closing): the base class handles it.
        self.protocol.writes[:0] = chunks
        super().send_data()


class NotConnectedError(errors.SessionLostError):
    """not connected to server"""


class ReplyError(errors.WorkerError):
    """The server answered a request with an error."""

    def __init__(self, error: Any) -> None:
        self.error = error
        super().__init__(error if isinstance(error, str) else json.dumps(error))


class RetryPolicy(enum.Enum):
    FAIL = "fail"  # fail at once when disconnected, and on connection loss
    WAIT = "wait"  # queue while disconnected; re-issue after a loss (caller bounds the wait)
    RETRY = "retry"  # like WAIT, without limit: a disconnect is never an error


class _Kind(enum.Enum):
    NOTE = "note"
    REPORT = "report"  # terminal report or termination, regenerated after each session frame
    REQUEST = "request"
    BARRIER = "barrier"


@dataclass(eq=False, slots=True)
class _Outgoing:
    kind: _Kind
    request: str
    params: list[Any] | None
    execution_id: str | None
    replayable: bool
    policy: RetryPolicy
    done: asyncio.Future[Any]


class ConnectionHandler(Protocol):
    """What the connection needs from the worker instance."""

    def on_session(self, session_id: str, execution_ids: list[str]) -> None: ...

    def is_live(self, execution_id: str) -> bool: ...

    def after_session(self, first: bool) -> None: ...

    def on_command(self, command: str, params: list[Any]) -> None: ...

    def heartbeat(self) -> dict[str, int]: ...


def _consume(future: asyncio.Future[Any]) -> None:
    # Fire-and-forget frames may fail; retrieving the exception keeps asyncio quiet.
    if not future.cancelled():
        future.exception()


def session_subprotocol(token: str) -> str:
    encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    return f"session.{encoded}"


def worker_url(ws_base: str, workspace_id: str) -> str:
    query = f"workspaceId={workspace_id}"
    if version.API_VERSION != "dev":
        query += f"&version={version.API_VERSION}"
    return f"{ws_base}/worker?{query}"


class Connection:
    """Keeps a WebSocket to ``/worker`` open until closed or refused for good."""

    def __init__(
        self,
        *,
        url: str,
        session_token: str,
        headers: dict[str, str],
        declare: Callable[[], list[Any]],
        handler: ConnectionHandler,
        timings: Timings,
    ) -> None:
        self._url = url
        self._subprotocols = [session_subprotocol(session_token), "v1"]
        self._headers = headers
        self._declare = declare
        self._handler = handler
        self._timings = timings
        # Unbounded on purpose: the protocol forbids silently dropping frames (worker
        # spec §4.6 rule 4), and the server bounds stream traffic through demand grants.
        self._outbox: collections.deque[_Outgoing] = collections.deque()
        self._inflight: dict[int, _Outgoing] = {}
        self._wake = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._session_ready = False
        self._next_id = 1
        self._closing = False
        self._close_event = asyncio.Event()
        self._ever_connected = False
        self.connected_event = asyncio.Event()

    # --- public API -------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Connected and past the session frame."""
        return self._session_ready

    def notify(
        self,
        request: str,
        params: list[Any] | None,
        *,
        execution_id: str | None = None,
        replayable: bool = False,
    ) -> asyncio.Future[None]:
        """Queue a notification; the future resolves once it has been written.

        Non-replayable notifications are dropped while disconnected (the future fails).
        """
        return self._enqueue(_Kind.NOTE, request, params, execution_id, replayable)

    def report(self, request: str, params: list[Any], execution_id: str) -> asyncio.Future[None]:
        """Queue a terminal report or termination (the caller keeps it for re-sending)."""
        return self._enqueue(_Kind.REPORT, request, params, execution_id, False)

    def _enqueue(
        self,
        kind: _Kind,
        request: str,
        params: list[Any] | None,
        execution_id: str | None,
        replayable: bool,
        policy: RetryPolicy = RetryPolicy.FAIL,
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        if (
            self._ws is None
            and not replayable
            and not (kind is _Kind.REQUEST and policy is not RetryPolicy.FAIL)
        ):
            future.set_exception(NotConnectedError())
            return future
        self._outbox.append(
            _Outgoing(kind, request, params, execution_id, replayable, policy, future)
        )
        self._wake.set()
        return future

    async def request(
        self,
        request: str,
        params: list[Any],
        *,
        execution_id: str | None = None,
        policy: RetryPolicy = RetryPolicy.FAIL,
        timeout: float | None = None,
    ) -> Any:
        """Send a request and await its reply.

        Raises ``ReplyError`` for an error reply and ``SessionLostError``/``NotConnectedError``
        when the connection is (or becomes) unavailable. ``timeout`` bounds the whole wait.
        """
        future = self._enqueue(_Kind.REQUEST, request, params, execution_id, False, policy)
        try:
            # Awaited directly: a cancelled caller cancels the future, which withdraws
            # the request exactly as the ``finally`` below does.
            if timeout is None:
                return await future
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            if not self._session_ready:
                raise NotConnectedError() from None
            raise
        finally:
            # A caller that stops waiting withdraws the request (the writer skips it).
            if not future.done():
                future.cancel()

    async def barrier(self, timeout: float) -> None:
        """Wait until every frame queued before this call has been written."""
        future = self._enqueue(_Kind.BARRIER, "", None, None, True)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(future)
        except TimeoutError:
            raise NotConnectedError() from None
        finally:
            if not future.done():
                future.cancel()

    async def close(self) -> None:
        """Stop reconnecting and close the socket."""
        self._closing = True
        self._close_event.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await ws.close()

    # --- connection loop --------------------------------------------------------------

    async def run(self) -> None:
        """Connect and reconnect until ``close()``; raises ``FatalSessionError``/``VersionMismatchError``."""
        backoff = self._timings.backoff_initial
        while not self._closing:
            established = False
            try:
                async with connect(
                    self._url,
                    subprotocols=[websockets.Subprotocol(p) for p in self._subprotocols],
                    additional_headers=self._headers,
                    open_timeout=self._timings.open_timeout,
                    ping_interval=self._timings.ping_interval,
                    ping_timeout=self._timings.ping_timeout,
                    close_timeout=2.0,
                    max_size=_MAX_FRAME,
                    # Frames are small JSON (large values travel as blobs), and deflating
                    # each one costs CPU on both ends; upstream's worker does not offer it.
                    compression=None,
                    create_connection=_CoalescingConnection,
                ) as ws:
                    established = True
                    await self._serve(ws)
                    self._raise_if_fatal(ws.close_reason)
                    if not self._closing:
                        log.warning(
                            "connection closed by server",
                            extra=console.fields(code=ws.close_code, reason=ws.close_reason),
                        )
            except InvalidStatus as exc:
                self._raise_for_status(exc)
                log.warning("connection refused", extra=console.fields(error=exc))
            except ConnectionClosed as exc:
                reason = exc.rcvd.reason if exc.rcvd is not None else None
                self._raise_if_fatal(reason)
                log.warning(
                    "connection lost", extra=console.fields(reason=reason or exc or "unknown")
                )
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                log.warning(
                    "cannot connect to server",
                    extra=console.fields(url=self._url, error=exc or type(exc).__name__),
                )
            if self._closing:
                break
            if established:
                backoff = self._timings.backoff_initial
            backoff = min(backoff * 2, self._timings.backoff_max)
            delay = backoff * (1 + random.random() * 0.5)
            log.info("reconnecting", extra=console.fields(delay=f"{delay:.1f}s"))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._close_event.wait()

    def _raise_if_fatal(self, reason: str | None) -> None:
        if reason in FATAL_CLOSE_REASONS:
            raise errors.FatalSessionError(f"server closed the connection: {reason}")

    def _raise_for_status(self, exc: InvalidStatus) -> None:
        response = exc.response
        if response.status_code != 409:
            return
        try:
            body = json.loads(response.body or b"")
        except ValueError:
            return
        if isinstance(body, dict) and body.get("error") == "version_mismatch":
            details = body.get("details")
            server = details.get("server") if isinstance(details, dict) else None
            raise errors.VersionMismatchError(
                f"the CLI expects API version {version.API_VERSION}, "
                f"but the server is {server or 'unknown'}"
            )

    async def _serve(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._session_ready = False
        self._next_id = 1
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._send_raw(ws, {"request": "declare_targets", "params": self._declare()})
            async for raw in ws:
                if isinstance(raw, bytes):
                    continue
                if self._handle_frame(raw) and not tasks:
                    tasks.append(asyncio.create_task(self._write_loop(ws), name="ws-writer"))
                    tasks.append(asyncio.create_task(self._heartbeat_loop(), name="ws-heartbeat"))
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._on_lost()

    async def _send_raw(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        await self._write_frames(ws, [_ENCODER.encode(frame).encode()])

    def _handle_frame(self, raw: str) -> bool:
        """Dispatch one server frame; True when it was the session frame."""
        try:
            frame = json.loads(raw)
        except ValueError:
            log.warning("malformed frame from server", extra=console.fields(frame=raw[:200]))
            return False
        if not isinstance(frame, list) or not frame:
            log.warning("malformed frame from server", extra=console.fields(frame=raw[:200]))
            return False
        tag = frame[0]
        try:
            if tag == 0 and len(frame) >= 3:
                self._on_session_frame(
                    str(frame[1]), frame[2] if isinstance(frame[2], list) else []
                )
                return True
            if tag == 1 and len(frame) >= 2 and isinstance(frame[1], dict):
                params = frame[1].get("params")
                self._handler.on_command(
                    str(frame[1].get("command")), params if isinstance(params, list) else []
                )
            elif tag in (2, 3) and len(frame) >= 3:
                self._on_reply(frame[1], frame[2], error=tag == 3)
            else:
                log.warning("malformed frame from server", extra=console.fields(frame=raw[:200]))
        except Exception:
            log.exception("failed to handle server frame", extra=console.fields(frame=raw[:200]))
        return False

    def _on_session_frame(self, session_id: str, execution_ids: list[Any]) -> None:
        first = not self._ever_connected
        self._ever_connected = True
        try:
            self._handler.on_session(session_id, [str(i) for i in execution_ids])
        except Exception:
            log.exception("failed to apply the session frame")
        kept: collections.deque[_Outgoing] = collections.deque()
        for item in self._outbox:
            stale = item.execution_id is not None and not self._handler.is_live(item.execution_id)
            if item.done.done():
                continue
            if item.kind is _Kind.REPORT or stale:
                item.done.set_exception(errors.SessionLostError("execution no longer held"))
            else:
                kept.append(item)
        self._outbox = kept
        try:
            self._handler.after_session(first)
        except Exception:
            log.exception("failed to re-send after the session frame")
        self._session_ready = True
        self.connected_event.set()
        self._wake.set()
        log.info("connected" if first else "reconnected", extra=console.fields(session=session_id))

    def _on_reply(self, request_id: Any, payload: Any, *, error: bool) -> None:
        item = self._inflight.pop(request_id, None) if isinstance(request_id, int) else None
        if item is None or item.done.done():
            return
        if error:
            item.done.set_exception(ReplyError(payload))
        else:
            item.done.set_result(payload)

    async def _write_loop(self, ws: ClientConnection) -> None:
        while True:
            while not self._outbox:
                self._wake.clear()
                await self._wake.wait()
            batch, frames = self._take_batch()
            if not frames:
                continue
            try:
                await self._write_frames(ws, frames)
            except BaseException as exc:
                # Not written: back to the front, in order, for ``_on_lost`` to sort out.
                self._outbox.extendleft(reversed([item for item, _ in batch]))
                if not isinstance(exc, ConnectionClosed | TimeoutError | OSError):
                    raise
                log.warning("write failed", extra=console.fields(error=exc or type(exc).__name__))
                transport = getattr(ws, "transport", None)
                if transport is not None:
                    transport.abort()
                return
            for item, request_id in batch:
                if request_id is not None:
                    self._inflight[request_id] = item
                elif not item.done.done():
                    item.done.set_result(None)

    def _take_batch(self) -> tuple[list[tuple[_Outgoing, int | None]], list[bytes]]:
        """Encode frames from the front of the outbox, in order, up to a barrier or a size.

        What is queued together is written together: one socket write for the lot.
        """
        batch: list[tuple[_Outgoing, int | None]] = []
        frames: list[bytes] = []
        size = 0
        outbox = self._outbox
        while outbox and size < _BATCH_BYTES:
            item = outbox[0]
            if item.done.done():
                outbox.popleft()
                continue
            if item.kind is _Kind.BARRIER:
                if frames:
                    break  # resolved once the frames before it are written
                outbox.popleft()
                item.done.set_result(None)
                continue
            frame: dict[str, Any] = {"request": item.request}
            if item.params is not None:
                frame["params"] = item.params
            request_id = None
            if item.kind is _Kind.REQUEST:
                request_id = self._next_id
                frame["id"] = request_id
            try:
                data = _ENCODER.encode(frame).encode()
            except ValueError as exc:
                outbox.popleft()
                item.done.set_exception(errors.WorkerError(f"cannot encode {item.request}: {exc}"))
                continue
            if request_id is not None:
                self._next_id += 1
            outbox.popleft()
            batch.append((item, request_id))
            frames.append(data)
            size += len(data)
        return batch, frames

    async def _write_frames(self, ws: ClientConnection, frames: list[bytes]) -> None:
        """Write text frames, one message each, in one ``send_context`` (and one socket write)."""
        transport = ws.transport
        size = sum(len(data) for data in frames)
        # Far below the transport's high-water mark the send never waits for the peer, so
        # no deadline: ``timeout(None)`` arms no timer, which per batch is not worth it.
        untimed = (
            transport is not None
            and transport.get_write_buffer_size() + size < _UNTIMED_WRITE_LIMIT
        )
        async with asyncio.timeout(None if untimed else self._timings.write_timeout):
            async with ws.send_context():
                for data in frames:
                    ws.protocol.send_text(data)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._timings.heartbeat_interval)
            self.notify("record_heartbeats", [self._handler.heartbeat()])

    def _on_lost(self) -> None:
        self._ws = None
        self._session_ready = False
        self.connected_event.clear()
        requeue: list[_Outgoing] = []
        for _, item in sorted(self._inflight.items()):
            if item.done.done():
                continue
            if item.policy is RetryPolicy.FAIL:
                item.done.set_exception(errors.SessionLostError("connection lost"))
            else:
                requeue.append(item)
        self._inflight.clear()
        kept: collections.deque[_Outgoing] = collections.deque(requeue)
        for item in self._outbox:
            if item.done.done():
                continue
            keep = (
                item.kind is _Kind.BARRIER
                or (item.kind is _Kind.NOTE and item.replayable)
                or (item.kind is _Kind.REQUEST and item.policy is not RetryPolicy.FAIL)
            )
            if keep:
                kept.append(item)
            else:
                item.done.set_exception(errors.SessionLostError("connection lost"))
        self._outbox = kept
