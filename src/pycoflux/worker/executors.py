"""Executor modes: how the pool gets an adapter process for an execution.

* ``fork`` (default where ``os.fork`` exists, i.e. Linux and macOS): a fork server imports
  the SDK and the worker's modules once; each execution gets a forked child of it running
  the SDK's executor entry point over the unchanged adapter protocol. One process per
  execution, as with ``spawn``, at the cost of a fork instead of an interpreter start.
* ``spawn``: a fresh ``<adapter> execute`` interpreter per execution.
* ``reuse``: a warm ``sdk_runner.py reuse`` process runs executions one after another;
  module state persists between them.

``fork`` and ``reuse`` need the Python SDK as the adapter (``<python...> -m coflux``): the
runner is started with that interpreter, so it imports ``coflux`` and the user's modules
from the adapter's environment. Any other adapter, or a platform without ``fork``, falls
back to ``spawn`` with a log line; so does a fork server that cannot start, or whose
imports started threads (forking a threaded process is unsafe).
"""

from __future__ import annotations

import asyncio
import enum
import sys
from pathlib import Path
from typing import Protocol

from pycoflux import errors
from pycoflux.worker import console, forkserver
from pycoflux.worker.adapter import AdapterProcess, spawn_child

log = console.get_logger()

RUNNER = Path(__file__).with_name("sdk_runner.py")
_MAX_RESTARTS = 3


class ExecutorMode(enum.StrEnum):
    FORK = "fork"
    SPAWN = "spawn"
    REUSE = "reuse"


def default_mode() -> ExecutorMode:
    return ExecutorMode.FORK if forkserver.supported() else ExecutorMode.SPAWN


def parse_mode(text: str | None) -> ExecutorMode | None:
    """``None`` for empty text (use the default); ``ConfigError`` for an unknown mode."""
    if not text:
        return None
    try:
        return ExecutorMode(text.strip().lower())
    except ValueError:
        choices = ", ".join(mode.value for mode in ExecutorMode)
        raise errors.ConfigError(
            f"invalid executor mode {text!r}; expected one of: {choices}"
        ) from None


def sdk_interpreter(argv: tuple[str, ...]) -> tuple[str, ...] | None:
    """The interpreter command of a Python SDK adapter (``<python...> -m coflux``), else None."""
    if len(argv) >= 3 and argv[-2:] == ("-m", "coflux"):
        return argv[:-2]
    return None


class Launcher(Protocol):
    """Starts executors for the pool."""

    @property
    def mode(self) -> ExecutorMode:
        """The mode in effect (after any fallback)."""
        ...

    @property
    def reusable(self) -> bool:
        """Whether a process that finished an execution may take another."""
        ...

    async def start(self) -> None: ...

    async def launch(self) -> AdapterProcess:
        """A process that has said ``ready``; raises ``AdapterError``."""
        ...

    async def close(self) -> None: ...


class SpawnLauncher:
    """A fresh ``<adapter> execute`` process per execution."""

    mode = ExecutorMode.SPAWN
    reusable = False

    def __init__(self, argv: tuple[str, ...], *, cwd: Path, ready_timeout: float) -> None:
        self._argv = argv
        self._cwd = cwd
        self._ready_timeout = ready_timeout

    async def start(self) -> None:
        pass

    async def launch(self) -> AdapterProcess:
        return await AdapterProcess.spawn(
            self._argv, cwd=self._cwd, ready_timeout=self._ready_timeout
        )

    async def close(self) -> None:
        pass


class ReuseLauncher:
    """Warm runners that execute one execution after another."""

    mode = ExecutorMode.REUSE
    reusable = True

    def __init__(
        self,
        argv: tuple[str, ...],
        interpreter: tuple[str, ...],
        modules: tuple[str, ...],
        *,
        cwd: Path,
        ready_timeout: float,
    ) -> None:
        self._argv = argv
        self._command = (*interpreter, str(RUNNER), "reuse", *modules)
        self._cwd = cwd
        self._ready_timeout = ready_timeout

    async def start(self) -> None:
        pass

    async def launch(self) -> AdapterProcess:
        child = await spawn_child(self._command, cwd=self._cwd)
        return await AdapterProcess.attach(
            child, self._argv, ready_timeout=self._ready_timeout, reusable=True
        )

    async def close(self) -> None:
        pass


class ForkLauncher:
    """Children of a fork server; spawns instead while the fork server is unavailable."""

    reusable = False

    def __init__(
        self,
        argv: tuple[str, ...],
        interpreter: tuple[str, ...],
        modules: tuple[str, ...],
        *,
        cwd: Path,
        ready_timeout: float,
    ) -> None:
        self._argv = argv
        self._command = (*interpreter, str(RUNNER), "fork", *modules)
        self._cwd = cwd
        self._ready_timeout = ready_timeout
        self._fallback = SpawnLauncher(argv, cwd=cwd, ready_timeout=ready_timeout)
        self._server: forkserver.ForkServer | None = None
        self._restarts = 0
        self._closed = False
        self._lock = asyncio.Lock()

    @property
    def mode(self) -> ExecutorMode:
        return ExecutorMode.FORK if self._server is not None else ExecutorMode.SPAWN

    @property
    def server_pid(self) -> int | None:
        """The fork server's pid while one is in use."""
        return self._server.pid if self._server is not None and self._server.alive else None

    async def start(self) -> None:
        self._server = await self._start_server()

    async def _start_server(self) -> forkserver.ForkServer | None:
        server = forkserver.ForkServer(self._command, cwd=self._cwd)
        try:
            hello = await server.start(self._ready_timeout)
        except errors.AdapterError as exc:
            log.warning(
                "fork server unavailable; using spawn executors",
                extra=console.fields(error=exc),
            )
            return None
        threads = hello.get("threads") or []
        if threads:
            await server.close()
            log.warning(
                "importing the modules started threads, so forking is unsafe; "
                "using spawn executors",
                extra=console.fields(threads=",".join(map(str, threads))),
            )
            return None
        for module, error in (hello.get("failed") or {}).items():
            log.warning(
                "fork server could not import a module; its executions will report why",
                extra=console.fields(module=module, error=error),
            )
        log.info("fork server started", extra=console.fields(pid=server.pid))
        return server

    async def launch(self) -> AdapterProcess:
        for _ in range(2):
            server = await self._live_server()
            if server is None:
                return await self._fallback.launch()
            try:
                child = await server.fork(self._ready_timeout)
            except forkserver.ForkServerError:
                if server.alive or self._closed:
                    raise
                continue  # it died under us: restart it (or fall back) and try again
            return await AdapterProcess.attach(child, self._argv, ready_timeout=self._ready_timeout)
        raise forkserver.ForkServerError("fork server keeps exiting")

    async def _live_server(self) -> forkserver.ForkServer | None:
        async with self._lock:
            server = self._server
            if server is not None and not server.alive and not self._closed:
                await server.close()
                self._server = server = await self._restart()
            return server

    async def _restart(self) -> forkserver.ForkServer | None:
        self._restarts += 1
        if self._restarts > _MAX_RESTARTS:
            log.warning("fork server keeps failing; using spawn executors")
            return None
        log.warning("restarting the fork server")
        return await self._start_server()

    async def close(self) -> None:
        self._closed = True
        if self._server is not None:
            await self._server.close()


def make_launcher(
    requested: ExecutorMode | None,
    argv: tuple[str, ...],
    modules: tuple[str, ...],
    *,
    cwd: Path,
    ready_timeout: float,
) -> Launcher:
    """The launcher for a mode, falling back to ``spawn`` where the mode cannot work."""
    mode = requested or default_mode()
    if mode is ExecutorMode.SPAWN:
        return SpawnLauncher(argv, cwd=cwd, ready_timeout=ready_timeout)
    interpreter = sdk_interpreter(argv)
    if interpreter is None:
        log.info(
            f"executor mode {mode} needs the Python SDK adapter (<python> -m coflux); using spawn",
            extra=console.fields(adapter=" ".join(argv)),
        )
        return SpawnLauncher(argv, cwd=cwd, ready_timeout=ready_timeout)
    if mode is ExecutorMode.REUSE:
        return ReuseLauncher(argv, interpreter, modules, cwd=cwd, ready_timeout=ready_timeout)
    if not forkserver.supported():
        log.info(f"fork is not available on {sys.platform}; using spawn")
        return SpawnLauncher(argv, cwd=cwd, ready_timeout=ready_timeout)
    return ForkLauncher(argv, interpreter, modules, cwd=cwd, ready_timeout=ready_timeout)
