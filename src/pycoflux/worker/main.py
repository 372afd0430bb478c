"""``coflux worker`` entry point: signals, drain, and the watch-mode reload loop.

Shutdown order: the first SIGINT/SIGTERM drains (no new work, running executions finish
within the drain timeout), the second aborts the drain (executors are killed and the
server told), the third exits at once with status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from pycoflux import errors
from pycoflux.worker import console
from pycoflux.worker.config import Timings, WorkerConfig
from pycoflux.worker.instance import WorkerInstance
from pycoflux.worker.watch import SourceWatcher

log = console.get_logger()

_RELOAD_PAUSE = 0.1


class Shutdown:
    """Counts stop requests: the first drains, the second aborts the drain, the third exits."""

    def __init__(self) -> None:
        self.count = 0
        self.drain = asyncio.Event()
        self.abort = asyncio.Event()
        self.instance: WorkerInstance | None = None

    def request(self) -> None:
        self.count += 1
        if self.count == 1:
            log.info("shutting down (signal again to abort drain early)")
            self.drain.set()
        elif self.count == 2:
            log.info("aborting drain")
            self.abort.set()
        else:
            if self.instance is not None:
                self.instance.kill_processes()
            os._exit(1)


async def serve(
    config: WorkerConfig,
    shutdown: Shutdown,
    *,
    cwd: Path | None = None,
    timings: Timings | None = None,
) -> None:
    """Run a worker (with reloads in watch mode) until ``shutdown`` drains it."""
    cwd = cwd or Path.cwd()
    timings = timings or Timings()
    if not config.watch:
        instance = WorkerInstance(config, cwd=cwd, timings=timings)
        shutdown.instance = instance
        await instance.start()
        await instance.serve(shutdown.drain, shutdown.abort)
        log.info("worker stopped")
        return
    await _watch(config, shutdown, cwd, timings)


async def _watch(config: WorkerConfig, shutdown: Shutdown, cwd: Path, timings: Timings) -> None:
    watcher = SourceWatcher(cwd, timings.watch_poll)
    await watcher.prime()
    first = True
    while not shutdown.drain.is_set():
        stop = asyncio.Event()
        change = asyncio.create_task(watcher.wait_for_change(), name="watch-changes")
        forward = asyncio.create_task(_forward(shutdown.drain, stop), name="watch-signal")
        try:
            instance = WorkerInstance(config, cwd=cwd, timings=timings, reload=not first)
            shutdown.instance = instance
            try:
                await instance.start()
            except errors.DiscoveryError as exc:
                if first or str(exc).startswith("no targets found"):
                    raise
                log.error(
                    "reload failed; waiting for the next change", extra=console.fields(error=exc)
                )
                await asyncio.wait({change, forward}, return_when=asyncio.FIRST_COMPLETED)
                continue
            change.add_done_callback(functools.partial(_set_event, stop))
            await instance.serve(stop, shutdown.abort)
        finally:
            change.cancel()
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await change
            with contextlib.suppress(asyncio.CancelledError):
                await forward
        first = False
        if shutdown.drain.is_set():
            break
        log.info("source changed; reloading")
        await asyncio.sleep(_RELOAD_PAUSE)
    log.info("worker stopped")


def _set_event(event: asyncio.Event, _: object) -> None:
    event.set()


async def _forward(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


async def _main(config: WorkerConfig) -> None:
    loop = asyncio.get_running_loop()
    shutdown = Shutdown()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, shutdown.request)
    try:
        await serve(config, shutdown)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (Linux, macOS), else asyncio's default."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency on every supported platform
        return None
    return uvloop.new_event_loop


def run(config: WorkerConfig) -> int:
    """Run the worker in the foreground; return the process exit code."""
    console.configure(config.log_level)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(_main(config))
    except errors.ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except errors.CofluxError as exc:
        print(f"worker error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1
    return 0


def _one_line(message: str) -> str:
    # Adapter stderr (tracebacks) can be long: keep it, but on a single line.
    return " | ".join(line.rstrip() for line in message.strip().splitlines() if line.strip())
