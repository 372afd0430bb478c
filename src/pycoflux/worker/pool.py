"""Warm executor pool: a few adapter processes kept ready so executions start fast."""

from __future__ import annotations

import asyncio
import collections
import enum
from collections.abc import Awaitable, Callable
from pathlib import Path

from pycoflux import errors
from pycoflux.worker import console
from pycoflux.worker.adapter import AdapterProcess

log = console.get_logger()

MAX_WARM = 4

Spawner = Callable[[], Awaitable[AdapterProcess]]


class PoolClosedError(errors.WorkerError):
    """pool is shut down"""


class _State(enum.Enum):
    OPEN = "open"
    DRAINING = "draining"  # no warm executors; on-demand spawns still allowed
    CLOSED = "closed"


class ExecutorPool:
    """Hands out ready adapter processes, one per execution, never reused."""

    def __init__(
        self,
        argv: tuple[str, ...],
        *,
        cwd: Path,
        concurrency: int,
        ready_timeout: float,
        graceful_exit: float,
        spawner: Spawner | None = None,
    ) -> None:
        self._argv = argv
        self._cwd = cwd
        self._concurrency = max(concurrency, 1)
        self.warm_target = min(self._concurrency, MAX_WARM)
        self._ready_timeout = ready_timeout
        self._graceful_exit = graceful_exit
        self._spawner = spawner or self._spawn_adapter
        self._warm: collections.deque[AdapterProcess] = collections.deque()
        self._busy: set[AdapterProcess] = set()
        self._spawning = 0
        self._state = _State.OPEN
        self._tasks: set[asyncio.Task[None]] = set()

    async def _spawn_adapter(self) -> AdapterProcess:
        return await AdapterProcess.spawn(
            self._argv, cwd=self._cwd, ready_timeout=self._ready_timeout
        )

    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED

    @property
    def warm_count(self) -> int:
        return len(self._warm)

    def processes(self) -> list[AdapterProcess]:
        return [*self._warm, *self._busy]

    async def start(self) -> None:
        """Spawn the warm executors one after another; failures leave slots empty."""
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

    def release(self, process: AdapterProcess) -> None:
        """An execution's process has gone; top the warm pool up by one if there is room."""
        self._busy.discard(process)
        if self._state is _State.OPEN and self._needs_warm():
            task = asyncio.create_task(self._top_up(), name="pool-top-up")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

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
            await process.stop(self._graceful_exit)

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
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.close_warm()
