"""Warm executor pool: a few adapter processes kept ready so executions start fast.

Where the processes come from is the launcher's business (``executors.py``). In ``fork``
and ``spawn`` modes a process serves one execution and is never reused; in ``reuse`` mode
a process that finished cleanly comes back as warm, up to the concurrency.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from collections.abc import Coroutine
from typing import Any

from pycoflux import errors
from pycoflux.worker import console
from pycoflux.worker.adapter import AdapterProcess
from pycoflux.worker.executors import Launcher

log = console.get_logger()

MAX_WARM = 4


class PoolClosedError(errors.WorkerError):
    """pool is shut down"""


class _State(enum.Enum):
    OPEN = "open"
    DRAINING = "draining"  # no warm executors; on-demand spawns still allowed
    CLOSED = "closed"


def _background(tasks: set[asyncio.Task[None]], work: Coroutine[Any, Any, None], name: str) -> None:
    """Run ``work`` as a task held in ``tasks`` until it ends."""
    task = asyncio.create_task(work, name=name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


class ExecutorPool:
    """Hands out ready adapter processes, one per execution."""

    def __init__(self, launcher: Launcher, *, concurrency: int, graceful_exit: float) -> None:
        self.launcher = launcher
        self._concurrency = max(concurrency, 1)
        self.warm_target = min(self._concurrency, MAX_WARM)
        self._graceful_exit = graceful_exit
        self._spawner = launcher.launch
        self._warm: collections.deque[AdapterProcess] = collections.deque()
        self._busy: set[AdapterProcess] = set()
        self._spawning = 0
        self._state = _State.OPEN
        self._tasks: set[asyncio.Task[None]] = set()  # top-ups: cancelled on close
        self._stopping: set[asyncio.Task[None]] = set()  # stops: awaited on close

    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED

    @property
    def warm_count(self) -> int:
        return len(self._warm)

    def processes(self) -> list[AdapterProcess]:
        return [*self._warm, *self._busy]

    async def start(self) -> None:
        """Start the launcher, then the warm executors one after another (failures leave gaps)."""
        await self.launcher.start()
        log.info("executor mode", extra=console.fields(mode=str(self.launcher.mode)))
        for _ in range(self.warm_target):
            if self._state is not _State.OPEN:
                return
            try:
                process = await self._spawner()
            except errors.AdapterError as exc:
                log.warning("failed to start warm executor", extra=console.fields(error=exc))
                continue
            self._warm.append(process)

    async def acquire(self) -> AdapterProcess:
        """Take the oldest warm executor, or spawn one on demand."""
        if self._state is _State.CLOSED:
            raise PoolClosedError()
        while self._warm:
            process = self._warm.popleft()
            if process.alive:
                self._busy.add(process)
                return process
            await process.kill()
        self._spawning += 1
        try:
            process = await self._spawner()
        finally:
            self._spawning -= 1
        if self.closed:
            await process.kill()
            raise PoolClosedError()
        self._busy.add(process)
        return process

    def release(self, process: AdapterProcess, *, reuse: bool = False) -> None:
        """An execution is over: keep its process if ``reuse`` allows, else top up by one.

        Without ``reuse`` the process must already be gone (the execution stopped it).
        """
        self._busy.discard(process)
        if reuse and process.alive:
            if self._state is _State.OPEN and len(self._warm) + len(self._busy) < self._concurrency:
                # At the front: the most recently used process is taken next (warm caches).
                self._warm.appendleft(process)
                return
            self._stop_later(process)
        if self._state is _State.OPEN and self._needs_warm():
            _background(self._tasks, self._top_up(), "pool-top-up")

    def _stop_later(self, process: AdapterProcess) -> None:
        """Stop a process in the background; ``close`` waits for it (a cancelled stop would
        leave the process running with nobody to reap it)."""
        _background(self._stopping, process.stop(self._graceful_exit), "pool-stop-surplus")

    def _needs_warm(self) -> bool:
        warm = len(self._warm) + self._spawning
        return warm + len(self._busy) < self._concurrency and warm < self.warm_target

    async def _top_up(self) -> None:
        self._spawning += 1
        try:
            process = await self._spawner()
        except errors.AdapterError as exc:
            log.warning("failed to start warm executor", extra=console.fields(error=exc))
            return
        finally:
            self._spawning -= 1
        # Limits are re-checked after the spawn: work may have arrived meanwhile.
        if self._state is _State.OPEN and self._needs_warm():
            self._warm.append(process)
        else:
            self._stop_later(process)

    async def close_warm(self) -> None:
        """Stop keeping executors warm (drain): idle ones exit on stdin EOF."""
        if self._state is _State.OPEN:
            self._state = _State.DRAINING
        warm = list(self._warm)
        self._warm.clear()
        stops = [
            asyncio.create_task(p.stop(self._graceful_exit), name=f"stop-warm-{p.pid}")
            for p in warm
        ]
        if stops:
            await asyncio.gather(*stops)

    async def close(self) -> None:
        self._state = _State.CLOSED
        # A top-up cancelled while its executor starts kills and reaps it (``attach``).
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
        await self.close_warm()
        await self.launcher.close()
