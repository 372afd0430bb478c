"""Feeds: buffered, group-committed writes to a partitioned store, with live subscribers.

Theory of operation. A project has two feeds, logs and metrics, sharing one storage
thread of their own (so a burst of log writes never delays an orchestration commit).
``append`` puts a batch on the feed's buffer and waits. One flusher task drains the
buffer: it takes everything buffered (up to ``FLUSH_LIMIT`` entries), inserts it on the
storage thread in one transaction with a savepoint per batch, and only then resolves
the waiting appends. So a ``200`` to ``POST /logs`` means the batch is on disk: an
accepted batch survives a crash, and a failed write is reported, never dropped. Under
load the buffer fills while a flush runs, which is what batches the writes.

After each flush the rotation check runs (size of the active partition); a rotation
queues the Bloom-filter build of the new archive as a later job on the same thread.

Subscribers see every flushed entry that matches their query. Each flush carries a
sequence number assigned on the storage thread; a subscriber is registered before its
snapshot is read (on the same thread, so the snapshot's sequence number is exact) and
then skips live batches the snapshot already covered. A subscriber whose queue fills
up is dropped rather than allowed to hold entries for ever.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pycoflux import errors
from pycoflux.storage import epochs

log = logging.getLogger("pycoflux.server")

T = TypeVar("T")
Q = TypeVar("Q", bound=epochs.Query)

FLUSH_LIMIT = 1000  # entries per transaction (whole batches; one batch may exceed it)
SUBSCRIBER_QUEUE = 1000  # flushed batches a subscriber may lag behind before it is dropped


def now_ms() -> int:
    return int(time.time() * 1000)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


@dataclass(slots=True)
class _Pending:
    batch: list[Any]
    future: asyncio.Future[None]


class Subscription:
    """Live entries matching one query, after a snapshot taken at sequence ``since``."""

    def __init__(self, match: Callable[[epochs.Written], bool]) -> None:
        self.match = match
        self.since = 0
        self.dropped = False
        self.queue: asyncio.Queue[tuple[int, list[dict[str, Any]]] | None] = asyncio.Queue(
            maxsize=SUBSCRIBER_QUEUE
        )

    def offer(self, seq: int, written: list[epochs.Written]) -> None:
        entries = [w.entry for w in written if self.match(w)]
        if not entries or self.dropped:
            return
        try:
            self.queue.put_nowait((seq, entries))
        except asyncio.QueueFull:
            self.dropped = True

    def end(self) -> None:
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            self.dropped = True

    async def next(self, timeout: float) -> list[dict[str, Any]] | None:
        """The next batch of new entries; ``[]`` after ``timeout`` idle seconds; None at the end."""
        while True:
            if self.dropped:
                return None
            try:
                item = await asyncio.wait_for(self.queue.get(), timeout)
            except TimeoutError:
                return []
            if item is None:
                return None
            seq, entries = item
            if seq > self.since:
                return entries


class Feed(Generic[Q]):
    """One partitioned store behind a buffer, a flusher and a set of subscribers."""

    def __init__(
        self,
        store: epochs.PartitionedStore[Q],
        thread: ThreadPoolExecutor,
        *,
        name: str,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.name = name
        self._store = store
        self._thread = thread
        self._clock = clock
        self._buffer: list[_Pending] = []
        self._tail: asyncio.Future[None] | None = None  # the last batch appended
        self._flusher: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Future[Any]] = set()
        self._subscribers: set[Subscription] = set()
        self._seq = 0  # flushes committed; read and written on the storage thread only
        self._closed = False

    async def _on_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def open(self) -> None:
        for epoch_id in await self._on_thread(self._store.open):
            self._build_filters(epoch_id)

    def _build_filters(self, epoch_id: str) -> None:
        """Queue a Bloom-filter build (a later job on the storage thread; failures are logged)."""
        job = asyncio.get_running_loop().run_in_executor(
            self._thread, self._store.partitions.build_filters, epoch_id
        )
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    # --- Writes ------------------------------------------------------------------------

    async def append(self, batch: list[Any]) -> None:
        """Store ``batch`` (all or nothing); returns once it is committed."""
        if self._closed:
            raise errors.StoreError(f"the {self.name} store is closed")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # If the caller goes away, nobody awaits the outcome: don't warn about it.
        future.add_done_callback(_retrieve)
        self._buffer.append(_Pending(batch, future))
        self._tail = future
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=f"{self.name}-flush")
        # The flush goes on if the client goes away: the batch was accepted into the buffer.
        await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._buffer:
            taken, size = 0, 0
            while taken < len(self._buffer) and (taken == 0 or size < FLUSH_LIMIT):
                size += len(self._buffer[taken].batch)
                taken += 1
            pending, self._buffer = self._buffer[:taken], self._buffer[taken:]
            now = self._clock()
            try:
                outcomes, seq, rotated = await self._on_thread(
                    functools.partial(self._write, [item.batch for item in pending], now)
                )
            except Exception as e:
                log.exception("%s flush failed", self.name)
                failure = errors.StoreError(f"{self.name} write failed: {e}")
                for item in pending:
                    if not item.future.done():
                        item.future.set_exception(failure)
                continue
            written: list[epochs.Written] = []
            for item, outcome in zip(pending, outcomes, strict=True):
                if item.future.done():
                    continue
                if isinstance(outcome, Exception):
                    item.future.set_exception(outcome)
                else:
                    written.extend(outcome)
                    item.future.set_result(None)
            for subscriber in list(self._subscribers):
                subscriber.offer(seq, written)
                if subscriber.dropped:
                    # Also reaps a stream whose response never started iterating.
                    self._subscribers.discard(subscriber)
            if rotated is not None:
                log.info("%s rotated to epoch %s (size limit)", self.name, rotated)
                self._build_filters(rotated)

    def _write(
        self, batches: list[list[Any]], now: int
    ) -> tuple[list[list[epochs.Written] | Exception], int, str | None]:
        """On the storage thread: insert, count the flush, rotate when the file is full."""
        outcomes = self._store.append(batches, now)
        self._seq += 1
        rotated = self._store.rotate(now) if self._store.partitions.full() else None
        return outcomes, self._seq, rotated

    async def _drain(self) -> None:
        """Wait until everything appended so far has been written (or has failed)."""
        tail = self._tail
        if tail is not None and not tail.done():
            await asyncio.wait([tail])

    async def rotate(self) -> str:
        """Archive the active partition now; returns the new epoch id."""
        await self._drain()
        now = self._clock()
        epoch_id = await self._on_thread(lambda: self._store.rotate(now))
        log.info("%s rotated to epoch %s (on request)", self.name, epoch_id)
        self._build_filters(epoch_id)
        return epoch_id

    # --- Reads -------------------------------------------------------------------------

    async def query(self, query: Q, limit: int) -> epochs.Page:
        """A page of stored entries; everything appended before the call is included."""
        await self._drain()
        return await self._on_thread(lambda: self._store.query(query, limit))

    async def subscribe(
        self, query: Q, match: Callable[[epochs.Written], bool], limit: int
    ) -> tuple[epochs.Page, Subscription]:
        """A snapshot of up to ``limit`` entries and a subscription to the ones after it."""
        if self._closed:
            raise errors.StoreError(f"the {self.name} store is closed")
        subscription = Subscription(match)
        self._subscribers.add(subscription)
        try:
            await self._drain()
            page, seq = await self._on_thread(lambda: (self._store.query(query, limit), self._seq))
        except BaseException:
            self._subscribers.discard(subscription)
            raise
        subscription.since = seq
        return page, subscription

    @property
    def subscribed(self) -> bool:
        """Whether an event stream is following this feed (a project with one isn't idle)."""
        return bool(self._subscribers)

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    async def follow(
        self, subscription: Subscription, keepalive: float
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """New entries as they are flushed; ``[]`` when idle for ``keepalive`` seconds."""
        try:
            while (batch := await subscription.next(keepalive)) is not None:
                yield batch
        finally:
            self.unsubscribe(subscription)

    # --- Shutdown ----------------------------------------------------------------------

    def end_subscriptions(self) -> None:
        """End every live stream (their responses complete, so the HTTP server can drain)."""
        for subscription in list(self._subscribers):
            subscription.end()
        self._subscribers.clear()

    async def close(self) -> None:
        """Stop intake, write what is buffered, end subscriptions, close the store."""
        self._closed = True
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        self.end_subscriptions()
        if self._jobs:
            await asyncio.gather(*self._jobs, return_exceptions=True)
        await self._on_thread(self._store.close)
