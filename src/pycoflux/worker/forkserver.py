"""The worker's side of the fork server: start it, ask it for executors, learn when they exit.

Theory of operation. The fork server is ``sdk_runner.py fork`` running under the adapter's
interpreter with a Unix stream socket as its stdin. To get an executor the worker makes
three pipes, sends ``{"op": "fork", "id": n}`` with the child's ends attached
(SCM_RIGHTS), closes its copies of them, and waits for ``{"forked": n, "pid": p}``. The
child then behaves exactly like a spawned ``python -m coflux execute``: it says ``ready``
on its stdout pipe and the ordinary ``AdapterProcess`` takes over. The child is the fork
server's, not ours, so its exit code arrives as ``{"exited": p, "code": c}`` and kills go
through the server, which only signals children it has not reaped (no pid-reuse race).
If the fork server dies, its children are killed and every waiter is released.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import IO, Any

from pycoflux import errors
from pycoflux.worker import console
from pycoflux.worker.adapter import LINE_LIMIT

log = console.get_logger()

_STDERR_TAIL = 40


class ForkServerError(errors.AdapterError):
    """the fork server is not available"""


def pipe_file(loop: asyncio.AbstractEventLoop, fd: int, mode: str) -> IO[Any]:
    """A file object for ``loop.connect_*_pipe`` that leaves ``fd`` closed exactly once.

    asyncio's own transports close the descriptor through the file object. uvloop's
    (libuv's) close the descriptor themselves and then close the file object too,
    expecting EBADF; if another thread opened a file in between, that second close would
    take the other thread's new descriptor with the same number. Under uvloop the file
    object must therefore not own the descriptor.
    """
    owns = isinstance(loop, asyncio.BaseEventLoop)
    return os.fdopen(fd, mode, buffering=0, closefd=owns)


class ForkedChild:
    """An executor forked by the fork server; satisfies ``adapter.ChildProcess``."""

    def __init__(
        self,
        server: ForkServer,
        pid: int,
        stdin: asyncio.StreamWriter,
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
        pipes: list[asyncio.BaseTransport],
    ) -> None:
        self._server = server
        self._pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._pipes = pipes  # stdout's and stderr's read transports
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._exit.result() if self._exit.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    def kill(self) -> None:
        if not self._exit.done():
            self._server.kill(self._pid)

    def close_pipes(self) -> None:
        """Close the read ends of stdout and stderr. A pipe whose reader stopped before its
        end of file (the execution was over) would otherwise stay open in the worker."""
        for pipe in self._pipes:
            if not pipe.is_closing():
                pipe.close()

    def exited(self, code: int) -> None:
        if not self._exit.done():
            self._exit.set_result(code)


class ForkServer:
    """One fork server process and the control socket to it."""

    def __init__(self, command: tuple[str, ...], *, cwd: Path) -> None:
        self._command = command  # ``<python> sdk_runner.py fork <modules>``
        self._cwd = cwd
        self._process: asyncio.subprocess.Process | None = None
        self._socket: socket.socket | None = None
        self._buffer = b""
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._children: dict[int, ForkedChild] = {}
        self._orphans: dict[int, int] = {}  # exit codes that arrived before their child
        self._hello: asyncio.Future[dict[str, Any]] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)
        self.pid: int | None = None

    @property
    def alive(self) -> bool:
        return self._socket is not None

    async def start(self, timeout: float) -> dict[str, Any]:
        """Start the server and wait for its hello (``pid``, ``failed`` imports, ``threads``)."""
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self._command,
                cwd=self._cwd,
                stdin=theirs.fileno(),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise ForkServerError(f"cannot start fork server: {exc}") from exc
        finally:
            theirs.close()
        ours.setblocking(False)
        self._socket = ours
        self._hello = loop.create_future()
        loop.add_reader(ours.fileno(), self._on_readable)
        self._stderr_task = asyncio.create_task(self._drain_stderr(), name="forkserver-stderr")
        self._watch = asyncio.create_task(self._watch_process(), name="forkserver-watch")
        try:
            async with asyncio.timeout(timeout):
                hello = await asyncio.shield(self._hello)
        except (TimeoutError, ForkServerError) as exc:
            await self.close()
            tail = " | ".join(self.stderr_tail)
            raise ForkServerError(
                f"fork server did not start: {exc or 'timed out'} {tail}"
            ) from None
        except BaseException:
            await self.close()  # cancelled while it starts: nobody else would stop it
            raise
        self.pid = int(hello.get("pid") or 0)
        return hello

    async def fork(self, timeout: float) -> ForkedChild:
        """A new executor process (not yet ``ready``); the server answers within ``timeout``."""
        sock = self._socket
        if sock is None:
            raise ForkServerError()
        loop = asyncio.get_running_loop()
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        theirs = [stdin_r, stdout_w, stderr_w]
        ours = [stdin_w, stdout_r, stderr_r]
        self._next_id += 1
        request = self._next_id
        reply: asyncio.Future[int] = loop.create_future()
        self._pending[request] = reply
        try:
            try:
                await self._send({"op": "fork", "id": request}, theirs)
            finally:
                for fd in theirs:
                    os.close(fd)
            try:
                async with asyncio.timeout(timeout):
                    pid = await reply
            except TimeoutError:
                raise ForkServerError("fork server did not answer") from None
        except BaseException:
            self._pending.pop(request, None)
            for fd in ours:
                os.close(fd)
            raise
        try:
            child = await self._connect(pid, stdin_w, stdout_r, stderr_r)
        except BaseException:
            self.kill(pid)
            raise
        self._children[pid] = child
        if pid in self._orphans:
            child.exited(self._orphans.pop(pid))
        return child

    async def _connect(self, pid: int, stdin: int, stdout: int, stderr: int) -> ForkedChild:
        loop = asyncio.get_running_loop()
        writer_file = pipe_file(loop, stdin, "wb")
        reader_files = [pipe_file(loop, fd, "rb") for fd in (stdout, stderr)]
        readers = []
        pipes: list[asyncio.BaseTransport] = []
        for file in reader_files:
            reader = asyncio.StreamReader(limit=LINE_LIMIT, loop=loop)
            pipe, _ = await loop.connect_read_pipe(
                functools.partial(asyncio.StreamReaderProtocol, reader), file
            )
            readers.append(reader)
            pipes.append(pipe)
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, writer_file
        )
        writer = asyncio.StreamWriter(transport, protocol, None, loop)
        return ForkedChild(self, pid, writer, readers[0], readers[1], pipes)

    def kill(self, pid: int) -> None:
        """SIGKILL a child's process group (through the server, which knows it is unreaped)."""
        if self._socket is not None:
            self._send_now({"op": "kill", "pid": pid})
            return
        child = self._children.get(pid)
        if child is not None and child.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    async def close(self) -> None:
        """Stop the server: its socket reaches EOF; children are the pool's business."""
        self._detach("fork server closed")
        process = self._process
        if process is not None and process.returncode is None:
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        for task in (self._watch, self._stderr_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # --- the control socket -----------------------------------------------------------

    async def _send(self, message: dict[str, Any], fds: list[int]) -> None:
        sock = self._socket
        if sock is None:
            raise ForkServerError()
        data = json.dumps(message).encode() + b"\n"
        while True:
            try:
                sent = socket.send_fds(sock, [data], fds) if fds else sock.send(data)
            except BlockingIOError:
                await self._writable(sock)
                continue
            except OSError as exc:
                raise ForkServerError(f"fork server gone: {exc}") from exc
            data = data[sent:]
            if not data:
                return
            fds = []  # the descriptors went with the first byte

    def _send_now(self, message: dict[str, Any]) -> None:
        """Fire and forget (kills): tiny, and the socket buffer is nearly always empty."""
        sock = self._socket
        if sock is None:
            return
        data = json.dumps(message).encode() + b"\n"
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            return
        if sent < len(data):
            task = asyncio.ensure_future(self._send_rest(data[sent:]))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _send_rest(self, data: bytes) -> None:
        sock = self._socket
        while sock is not None and data:
            try:
                data = data[sock.send(data) :]
            except BlockingIOError:
                await self._writable(sock)
            except OSError:
                return

    async def _writable(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_writer(sock.fileno(), _resolve, ready)
        try:
            await ready
        finally:
            loop.remove_writer(sock.fileno())

    def _on_readable(self) -> None:
        sock = self._socket
        if sock is None:
            return
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self._detach("fork server exited")
                return
            self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        if "forked" in message:
            future = self._pending.pop(int(message["forked"]), None)
            if future is not None and not future.done():
                future.set_result(int(message["pid"]))
        elif "failed" in message:
            future = self._pending.pop(int(message["failed"]), None)
            if future is not None and not future.done():
                future.set_exception(ForkServerError(str(message.get("error"))))
        elif "exited" in message:
            pid, code = int(message["exited"]), int(message.get("code", -1))
            child = self._children.pop(pid, None)
            if child is not None:
                child.exited(code)
            else:
                self._orphans[pid] = code
        elif "hello" in message and self._hello is not None and not self._hello.done():
            hello = message["hello"]
            self._hello.set_result(hello if isinstance(hello, dict) else {})

    def _detach(self, reason: str) -> None:
        """The server is gone (or being closed): fail waiters, kill and release children."""
        sock, self._socket = self._socket, None
        if sock is None:
            return
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        error = ForkServerError(reason)
        if self._hello is not None and not self._hello.done():
            self._hello.set_exception(error)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    async def _watch_process(self) -> None:
        process = self._process
        assert process is not None
        code = await process.wait()
        if self._socket is not None:
            log.error(
                "fork server exited",
                extra=console.fields(code=code, stderr=" | ".join(self.stderr_tail)),
            )
        self._detach("fork server exited")
        # Its children now belong to init: nobody would report their exit. Kill them so
        # their executions end (as crashes) instead of hanging.
        for pid, child in list(self._children.items()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            child.exited(-signal.SIGKILL)
        self._children.clear()

    async def _drain_stderr(self) -> None:
        process = self._process
        assert process is not None and process.stderr is not None
        while True:
            try:
                line = await process.stderr.readline()
            except ValueError:
                continue
            except (ConnectionError, OSError):
                return
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip("\n")
            self.stderr_tail.append(text)
            log.debug("fork server stderr", extra=console.fields(line=text))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def supported() -> bool:
    """Whether this platform can fork executors."""
    return hasattr(os, "fork") and hasattr(socket, "send_fds") and sys.platform != "win32"
