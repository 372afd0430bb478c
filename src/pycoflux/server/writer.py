"""A thread that runs calls one at a time, in order, for code on the event loop.

A project's store is used from one thread only: the writer. Work reaches it from the
loop several times per command (the batch, reads, the fsync on a second such thread),
so the hand-off is kept to a queue put and one ``call_soon_threadsafe`` back, without
the futures and locks of a general-purpose pool.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


class SerialThread:
    """One thread running submitted calls in submission order."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        # A daemon: a call stuck at exit must not hold the process (SQLite's log keeps
        # what was committed either way).
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn`` on the thread; the future resolves on the calling loop."""
        if self._closed:
            raise RuntimeError(f"{self._thread.name} is shut down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, future, loop))
        return future

    def shutdown(self) -> None:
        """Finish the calls already submitted, then end the thread."""
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _main(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, future, loop = job
            try:
                result = fn()
            except BaseException as e:  # handed to the caller, like an executor would
                _deliver(loop, _fail, future, e)
            else:
                _deliver(loop, _succeed, future, result)


def _deliver(
    loop: asyncio.AbstractEventLoop,
    settle: Callable[[asyncio.Future[Any], Any], None],
    future: asyncio.Future[Any],
    outcome: Any,
) -> None:
    try:
        loop.call_soon_threadsafe(settle, future, outcome)
    except RuntimeError:
        pass  # the loop is closed: nobody is waiting any more


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
