"""A program the worker runs under the adapter's interpreter: a fork server or a reuse runner.

Run as ``<python> sdk_runner.py fork|reuse <module>...``, never imported by the worker: it
must import ``coflux`` (and the user's modules) from the adapter's environment, which may
not have pycoflux installed, so it uses the standard library and the SDK only.

``fork``: the process imports the SDK and the modules once, then serves a control socket on
its stdin (newline-delimited JSON; file descriptors travel as SCM_RIGHTS). For each
``{"op": "fork", "id": n}`` carrying three descriptors (the child's stdin, stdout and
stderr) it forks; the child makes them its fds 0-2, starts its own session and runs the
SDK's normal executor entry point, so the worker sees an ordinary executor speaking the
adapter protocol. The server answers ``{"forked": n, "pid": p}``, reports every reaped
child as ``{"exited": p, "code": c}``, kills a child's process group on
``{"op": "kill", "pid": p}`` and exits when the socket reaches EOF.

``reuse``: one warm executor that runs executions one after another through the SDK's
``execute_target``. After each one it sends ``ready`` again, which tells the worker the
process is free. Module state persists between executions (the documented trade-off).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import queue
import selectors
import signal
import socket
import sys
import threading
import traceback
from typing import Any, NoReturn

_MAX_FDS = 3
_RECV_SIZE = 65536


def _fix_path() -> None:
    # A script's directory leads sys.path; this one holds modules (config.py, logs.py...)
    # that would shadow the user's. ``python -m coflux`` puts the working directory there.
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or os.curdir) == here:
        sys.path[0] = os.getcwd()


def _preload(modules: list[str]) -> dict[str, str]:
    """Import the user's modules; failures are reported, the executions will meet them again."""
    failed: dict[str, str] = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # import-time SystemExit too: a child reports it properly
            failed[name] = f"{type(exc).__name__}: {exc}"[:200]
    _flush_stdio()
    return failed


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


class _ForkServer:
    def __init__(self, control: socket.socket) -> None:
        self._control = control
        self._buffer = b""
        self._fds: list[int] = []
        self._children: set[int] = set()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        self._selector = selectors.DefaultSelector()

    def send(self, message: dict[str, Any]) -> None:
        self._control.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def serve(self) -> bool:
        """Serve until the worker goes away (False), or return True inside a new child."""
        signal.set_wakeup_fd(self._wake_w)
        # A handler (not SIG_DFL) is needed for the wakeup fd to be written on SIGCHLD.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        self._selector.register(self._control, selectors.EVENT_READ, "control")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        while True:
            for key, _ in self._selector.select():
                if key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self._wake_r, 512):
                            pass
                    self._reap()
                    continue
                try:
                    data, fds, _, _ = socket.recv_fds(self._control, _RECV_SIZE, _MAX_FDS)
                except InterruptedError:
                    continue
                self._fds.extend(fds)
                if not data:
                    self._shutdown()
                    return False
                self._buffer += data
                while b"\n" in self._buffer:
                    line, self._buffer = self._buffer.split(b"\n", 1)
                    if self._handle(line):
                        return True
            self._reap()

    def _handle(self, line: bytes) -> bool:
        try:
            message = json.loads(line)
        except ValueError:
            return False
        op = message.get("op") if isinstance(message, dict) else None
        if op == "kill":
            pid = message.get("pid")
            if pid in self._children:  # unreaped, so the pid is still this child's
                # The child itself first: right after the fork it may not lead its group yet.
                for kill in (os.kill, os.killpg):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        kill(pid, signal.SIGKILL)
            return False
        if op != "fork":
            return False
        request = message.get("id")
        # The descriptors arrive with the first byte of their message, so they are queued.
        fds, self._fds = self._fds[:_MAX_FDS], self._fds[_MAX_FDS:]
        if len(fds) != _MAX_FDS:
            self._close(fds)
            self.send({"failed": request, "error": "fork request without three descriptors"})
            return False
        _flush_stdio()
        try:
            pid = os.fork()
        except OSError as exc:
            self._close(fds)
            self.send({"failed": request, "error": f"fork failed: {exc}"})
            return False
        if pid == 0:
            self._become_child(fds)
            return True
        self._close(fds)
        self._children.add(pid)
        self.send({"forked": request, "pid": pid})
        return False

    def _become_child(self, fds: list[int]) -> None:
        try:
            os.setsid()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            self._close([fd for fd in fds if fd > 2])
            self._close(self._fds)
            self._selector.close()
            self._control.close()
            self._close([self._wake_r, self._wake_w])
        except BaseException:
            os._exit(70)

    def _reap(self) -> None:
        while self._children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._children.discard(pid)
            self.send({"exited": pid, "code": os.waitstatus_to_exitcode(status)})

    def _shutdown(self) -> None:
        # The worker went away; children are on their own (stdin EOF ends idle ones).
        self._selector.close()
        self._control.close()
        self._close(self._fds)

    @staticmethod
    def _close(fds: list[int]) -> None:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _fork_server(modules: list[str]) -> int | None:
    """Serve forks; returns the exit code in the server, ``None`` inside a forked child."""
    control = socket.socket(fileno=os.dup(0))
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)
    importlib.import_module("coflux.executor")
    failed = _preload(modules)
    # What exists now is shared with every child: keep the children's collector off it,
    # or each collection would copy those pages.
    gc.collect()
    gc.freeze()
    server = _ForkServer(control)
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    server.send({"hello": {"pid": os.getpid(), "failed": failed, "threads": others}})
    if server.serve():
        return None
    return 0


def _run_forked_child() -> NoReturn:
    sys.argv = [sys.argv[0], "execute"]
    code: object = 0
    try:
        code = importlib.import_module("coflux.executor").run_executor()
    except SystemExit as exc:
        code = exc.code
    except BaseException:
        traceback.print_exc()
        code = 1
    _exit_without_finalizing(code)


def _exit_without_finalizing(code: object) -> NoReturn:
    """Exit as a normal interpreter would, minus the finalization.

    Tearing down the interpreter touches every object, so in a forked child it copies every
    page inherited from the fork server: tens of milliseconds of CPU per execution. As
    multiprocessing's fork children do, wait for non-daemon threads, run the atexit
    handlers and flush stdio, then leave with ``os._exit``.
    """
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if run_exitfuncs is not None:
        run_exitfuncs()
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    _flush_stdio()
    os._exit(status & 0xFF)


def _reuse(modules: list[str]) -> int:
    protocol = importlib.import_module("coflux.protocol")
    executor = importlib.import_module("coflux.executor")
    dispatcher = importlib.import_module("coflux.dispatcher")
    _preload(modules)
    inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
    protocol.send_ready()
    # Until the first execution starts the SDK's dispatcher, stdin is read directly; from
    # then on the dispatcher owns it and hands the next ``execute`` over.
    message = protocol.receive_message()
    listening = False
    while message is not None:
        if message.get("method") != "execute":
            print(f"Unknown method: {message.get('method')}", file=sys.stderr)
            return 1
        params = message.get("params") or {}
        executor.execute_target(
            execution_id=params["execution_id"],
            module_name=params["module"],
            target_name=params["target"],
            arguments=params.get("arguments", []),
            working_dir=params.get("working_dir"),
            streams=params.get("streams"),
            checkpoints=params.get("checkpoints"),
        )
        if not listening:
            active = dispatcher.get_dispatcher()
            active.register_notification(
                "execute", lambda p: inbox.put({"method": "execute", "params": p})
            )
            active.add_close_callback(lambda: inbox.put(None))
            listening = True
        protocol.send_ready()
        message = inbox.get()
    return 0


def main(argv: list[str]) -> int:
    _fix_path()
    if not argv or argv[0] not in ("fork", "reuse"):
        print("usage: sdk_runner.py fork|reuse [module...]", file=sys.stderr)
        return 2
    if argv[0] == "reuse":
        return _reuse(argv[1:])
    code = _fork_server(argv[1:])
    if code is None:
        _run_forked_child()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
