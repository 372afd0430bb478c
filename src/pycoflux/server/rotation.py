"""Orchestration epochs of a running project: rotation on demand and by size, filter builds.

``ProjectHost`` mixes this in. Rotation is a state change, so it happens on the
project's writer, between batches: it takes the writer lock (the batch loop holds it
around each batch), waits until everything committed is on disk, then archives the file
and seeds the new one on the writer thread (``storage/archives.py``). The core is not
rebuilt: the rows it holds ids of keep their ids. Bloom filters are computed on a
thread of their own and recorded on the writer thread.

Checkpoints (copying the write-ahead log into the main file) are not left to SQLite's
automatic threshold, which would run them inside a commit on the writer: a thread of
their own runs one every ``CHECKPOINT_INTERVAL`` while commits come in, on a connection of
its own, and the writer then copies what was committed meanwhile, between two batches.
A rotation, which renames the file, never overlaps one (``_file_lock``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from pycoflux.storage import archives, sqlite
from pycoflux.storage import orchestration as orchestration_store

log = logging.getLogger("pycoflux.server")

T = TypeVar("T")
CHECK_INTERVAL = 60.0  # seconds between checks of the orchestration file's size
CHECKPOINT_INTERVAL = 0.5  # seconds between checkpoints while commits come in


class Rotation:
    """The epoch side of a project host (a mixin: the host provides the attributes below)."""

    project_id: str
    directory: Path
    epochs: archives.OrchestrationEpochs
    _db: sqlite3.Connection | None
    _store: orchestration_store.SqliteOrchestrationStore | None
    _committed_sequence: int

    async def _on_thread(self, fn: Callable[[], T]) -> T:
        raise NotImplementedError

    async def _durable(self, sequence: int) -> None:
        raise NotImplementedError

    def _init_rotation(self, directory: Path, epoch_size: int) -> None:
        self.epochs = archives.OrchestrationEpochs(directory, rotate_size=epoch_size)
        self._writer = asyncio.Lock()  # held around every batch, and by a rotation
        self._indexer = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"index-{self.project_id}"
        )
        self._background: set[asyncio.Task[Any]] = set()
        self._unindexed: list[str] = []  # archives found without filters at open
        self._checkpointer = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"checkpoint-{self.project_id}"
        )
        self._file_lock = threading.Lock()  # a checkpoint or a rotation, never both
        self._checkpointed_sequence = 0
        self.last_used = time.monotonic()  # for idle shutdown (``Projects``)

    def _open_epochs(self) -> sqlite3.Connection:
        """Writer thread: open the active epoch; queue the filters still to build."""
        self._unindexed = self.epochs.open()
        return self.epochs.active

    def _start_rotation(self) -> None:
        for epoch_id in self._unindexed:
            self._spawn(self._build_filters(epoch_id))
        self._spawn(self._check_epoch_size())
        self._spawn(self._checkpoints())

    async def _stop_rotation(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def _shutdown_rotation(self) -> None:
        self._indexer.shutdown(wait=True)
        self._checkpointer.shutdown(wait=True)

    async def rotate_epoch(self) -> str:
        """Archive the orchestration file now; returns the archived epoch's id."""
        async with self._writer:
            await self._durable(self._committed_sequence)
            epoch_id = await self._on_thread(self._rotate)
        self._spawn(self._build_filters(epoch_id))
        return epoch_id

    def _rotate(self) -> str:
        """On the writer thread, with no batch in flight."""
        try:
            with self._file_lock:
                return self.epochs.rotate(int(time.time() * 1000))
        finally:
            # Whatever happened, continue on the file that is active now.
            self._db = self.epochs.active
            if self._store is not None:
                self._store.reconnect(self._db)
            sqlite.sync_wal(self.epochs.active_path)

    async def _build_filters(self, epoch_id: str) -> None:
        loop = asyncio.get_running_loop()
        filters = await loop.run_in_executor(self._indexer, self.epochs.compute_filters, epoch_id)
        if filters is not None:
            await self._on_thread(lambda: self.epochs.set_filters(epoch_id, filters))

    async def _check_epoch_size(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            try:
                if await self._on_thread(self.epochs.full):
                    epoch_id = await self.rotate_epoch()
                    log.info("project %s: epoch %s archived (size)", self.project_id, epoch_id)
            except Exception:
                log.exception("epoch rotation failed in project %s", self.project_id)

    async def _checkpoints(self) -> None:
        loop = asyncio.get_running_loop()
        path = self.epochs.active_path

        def checkpoint() -> None:
            with self._file_lock:
                sqlite.checkpoint(path)

        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            sequence = self._committed_sequence
            if sequence == self._checkpointed_sequence:
                continue
            try:
                await loop.run_in_executor(self._checkpointer, checkpoint)
                # Commits made meanwhile are still in the log only; the writer copies
                # those few pages itself, between two batches, so that its next commit
                # can start the log over instead of growing it.
                await self._on_thread(self._finish_checkpoint)
            except Exception:
                log.exception("checkpoint failed in project %s", self.project_id)
            else:
                self._checkpointed_sequence = sequence

    def _finish_checkpoint(self) -> None:
        if self._db is not None:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
