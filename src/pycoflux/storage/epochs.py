"""Epochs: an append-only SQLite store split into one active file and read-only archives.

Theory of operation. A partitioned store ``<name>`` of a project lives in
``<project>/<name>.sqlite`` (the *active* partition, read-write) plus
``<project>/<name>/<epochId>.sqlite`` (archived partitions) and
``<project>/<name>/index.json`` (the epoch index). Rotation, triggered by size or on
demand, proceeds so that a crash at any point leaves a readable store:

1. compute the next epoch id ``YYYYMMDD_NNNN`` (UTC day of rotation, counter per day);
2. add ``{epochId: [null, rotatedAtMs]}`` to the index and save it atomically, so the
   index lists every archive even if we die before step 3 completes;
3. checkpoint the active file, switch it out of WAL mode (an archive is a single file),
   close it, rename it into the archive directory and open a fresh active file;
4. later (the caller schedules it) build Bloom filters over the archive's keys and save
   them in the index. An archive without filters is always searched.

At open, index entries whose file is missing (we died between 2 and 3) are dropped,
archive files the index doesn't know are adopted without filters, and the epochs that
still lack filters are returned so the caller can queue their builds.

Reads go oldest archive first, then the active partition. An archive is skipped when
its Bloom filter rules the key out, when its rotation day is before a ``from`` day,
or when it precedes the caller's cursor. Archives are opened read-only and immutable
for the duration of one read; only the active connection stays open.

Everything here is synchronous and single-threaded: one store is used from one thread.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote

from pycoflux import errors
from pycoflux.storage import sqlite
from pycoflux.storage.bloom import BloomFilter

log = logging.getLogger("pycoflux.storage")

ROTATE_SIZE = 100 * 1024 * 1024  # bytes; the active partition rotates at this size
EPOCH_ID = re.compile(r"^(\d{8})_(\d{4})$")
ACTIVE = ""  # the epoch id of the active partition in cursors


# --- Epoch ids ------------------------------------------------------------------------


def epoch_day(epoch_id: str) -> date:
    match = EPOCH_ID.match(epoch_id)
    if match is None:
        raise ValueError(f"not an epoch id: {epoch_id!r}")
    return datetime.strptime(match.group(1), "%Y%m%d").date()


def next_epoch_id(existing: Sequence[str], now_ms: int) -> str:
    """``YYYYMMDD_NNNN``: the UTC day of ``now_ms`` and 1 + the day's highest counter."""
    day = datetime.fromtimestamp(now_ms / 1000, UTC).strftime("%Y%m%d")
    counters = [
        int(match.group(2))
        for match in map(EPOCH_ID.match, existing)
        if match is not None and match.group(1) == day
    ]
    return f"{day}_{max(counters, default=0) + 1:04d}"


# --- Cursors --------------------------------------------------------------------------

N = TypeVar("N", int, float)


@dataclass(frozen=True, slots=True)
class Cursor(Generic[N]):
    """A position in a partitioned store: ``{epochId}:{position}:{id}`` (epoch "" = active)."""

    epoch_id: str
    position: N
    row_id: int

    def render(self) -> str:
        position = repr(self.position) if isinstance(self.position, float) else self.position
        return f"{self.epoch_id}:{position}:{self.row_id}"

    @staticmethod
    def parse(text: str, number: type[N]) -> Cursor[N]:
        """Parse a cursor; the legacy two-part ``{position}:{id}`` means the active partition."""
        parts = text.split(":")
        if len(parts) == 2:
            parts.insert(0, ACTIVE)
        if len(parts) != 3 or (parts[0] != ACTIVE and not EPOCH_ID.match(parts[0])):
            raise ValueError(f"invalid cursor: {text!r}")
        position = number(parts[1])
        if isinstance(position, float) and position != position:
            raise ValueError(f"invalid cursor: {text!r}")
        return Cursor(parts[0], position, int(parts[2]))


# --- The index ------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Archive:
    """One archived epoch as the index knows it."""

    epoch_id: str
    archived_at: int
    filters: dict[str, BloomFilter] | None = None

    def may_contain(self, field: str, key: str | bytes) -> bool:
        if self.filters is None or field not in self.filters:
            return True
        return key in self.filters[field]


def _fsync_directory(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class EpochIndex:
    """``index.json``: ``{epochId: [{field: base64(bloom)} | null, archivedAtMs]}``, newest first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.archives: dict[str, Archive] = {}

    def load(self) -> None:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            raw = {}
        except (OSError, ValueError) as e:
            # A damaged index loses only the filters: every archive file is re-adopted.
            log.error("unreadable epoch index %s (%s); rebuilding it", self.path, e)
            raw = {}
        self.archives = {}
        for epoch_id, value in raw.items() if isinstance(raw, dict) else []:
            if not EPOCH_ID.match(epoch_id) or not isinstance(value, list) or len(value) != 2:
                continue
            filters_raw, archived_at = value
            filters: dict[str, BloomFilter] | None = None
            if isinstance(filters_raw, dict):
                try:
                    filters = {
                        name: BloomFilter.from_bytes(base64.b64decode(encoded))
                        for name, encoded in filters_raw.items()
                    }
                except (ValueError, TypeError, errors.StoreError):
                    filters = None
            self.archives[epoch_id] = Archive(
                epoch_id=epoch_id,
                archived_at=archived_at if isinstance(archived_at, int) else 0,
                filters=filters,
            )

    def save(self) -> None:
        """Write the index atomically (temporary file, fsync, rename, fsync the directory)."""
        body = {
            archive.epoch_id: [
                None
                if archive.filters is None
                else {
                    name: base64.b64encode(bloom.to_bytes()).decode()
                    for name, bloom in archive.filters.items()
                },
                archive.archived_at,
            ]
            for archive in sorted(self.archives.values(), key=lambda a: a.epoch_id, reverse=True)
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        with open(temporary, "w") as handle:
            json.dump(body, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        _fsync_directory(self.path.parent)


# --- Partitions -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Schema:
    """What a partitioned store keeps: its file name, migrations and Bloom-filtered keys."""

    name: str  # active file <name>.sqlite, archives in <name>/
    migrations: tuple[str, ...]  # applied in order; user_version counts the applied ones
    filters: Mapping[str, str] = field(default_factory=dict)  # field -> SQL yielding its keys
    # An AUTOINCREMENT table whose ids continue from one partition to the next, so that a
    # cursor issued before a rotation can still be placed in the right partition.
    sequence: str | None = None
    # How a stored key becomes the filter's key, per field (default: as stored). The
    # orchestration store keeps 32-byte keys as hex text; its filters hold the raw bytes.
    decode: Mapping[str, Callable[[Any], str | bytes]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Partition:
    epoch_id: str  # ACTIVE for the active partition
    path: Path


def _same(key: Any) -> str | bytes:
    return key if isinstance(key, bytes) else str(key)


def open_read_only(path: Path) -> sqlite3.Connection:
    """An archive: read-only and immutable (no locking, no journal files created)."""
    return sqlite3.connect(
        f"file:{quote(str(path.resolve()))}?mode=ro&immutable=1",
        uri=True,
        check_same_thread=False,
    )


class Partitions:
    """The active file, the archives and the index of one partitioned store."""

    def __init__(
        self,
        directory: Path,
        schema: Schema,
        *,
        rotate_size: int = ROTATE_SIZE,
        synced_by_caller: bool = False,
    ) -> None:
        self.schema = schema
        self.rotate_size = rotate_size
        self.synced_by_caller = synced_by_caller  # see sqlite.connect
        self.active_path = directory / f"{schema.name}.sqlite"
        self.archive_dir = directory / schema.name
        self.index = EpochIndex(self.archive_dir / "index.json")
        self._active: sqlite3.Connection | None = None
        self._active_base = 0  # ids in the active partition are greater than this

    @property
    def active(self) -> sqlite3.Connection:
        if self._active is None:
            raise errors.StoreError(f"the {self.schema.name} store is not open")
        return self._active

    def archive_path(self, epoch_id: str) -> Path:
        return self.archive_dir / f"{epoch_id}.sqlite"

    def open(self) -> list[str]:
        """Open the active partition and reconcile the index; returns epochs lacking filters."""
        self.index.load()
        changed = False
        for epoch_id in list(self.index.archives):
            if not self.archive_path(epoch_id).is_file():
                del self.index.archives[epoch_id]  # rotation died before the rename
                changed = True
        if self.archive_dir.is_dir():
            for path in self.archive_dir.glob("*.sqlite"):
                if EPOCH_ID.match(path.stem) and path.stem not in self.index.archives:
                    self.index.archives[path.stem] = Archive(
                        epoch_id=path.stem, archived_at=int(path.stat().st_mtime * 1000)
                    )
                    changed = True
        if changed:
            self.index.save()
        self._open_active()
        return self.unfiltered()

    def _open_active(self) -> None:
        db = sqlite.connect(
            self.active_path, migrations=False, synced_by_caller=self.synced_by_caller
        )
        try:
            sqlite.apply_migrations(db, self.schema.migrations)
            db.execute("CREATE TABLE IF NOT EXISTS partition_base (base INTEGER NOT NULL) STRICT")
            row = db.execute("SELECT base FROM partition_base").fetchone()
        except sqlite3.Error as e:
            db.close()
            raise errors.StoreError(f"cannot migrate {self.active_path}: {e}") from e
        self._active = db
        self._active_base = 0 if row is None else int(row[0])

    def _last_id(self, db: sqlite3.Connection) -> int:
        """The highest id the partition has handed out (or inherited)."""
        if self.schema.sequence is None:
            return 0
        row = db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = ?", (self.schema.sequence,)
        ).fetchone()
        return self._active_base if row is None else max(int(row[0]), self._active_base)

    def _seed(self, base: int) -> None:
        """Make the fresh active partition's ids start after ``base``."""
        if self.schema.sequence is None or base <= 0:
            return
        db = self.active
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM partition_base")
            db.execute("INSERT INTO partition_base (base) VALUES (?)", (base,))
            db.execute("DELETE FROM sqlite_sequence WHERE name = ?", (self.schema.sequence,))
            db.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)",
                (self.schema.sequence, base),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._active_base = base

    def locate(self, cursor: Cursor[N]) -> Cursor[N]:
        """Place an active-partition cursor issued before a rotation in its archive."""
        if cursor.epoch_id != ACTIVE or cursor.row_id > self._active_base:
            return cursor
        for archive in reversed(self.archives()):
            try:
                db = open_read_only(self.archive_path(archive.epoch_id))
                try:
                    row = db.execute("SELECT base FROM partition_base").fetchone()
                finally:
                    db.close()
            except sqlite3.Error:
                continue
            if cursor.row_id > (0 if row is None else int(row[0])):
                return Cursor(archive.epoch_id, cursor.position, cursor.row_id)
        return cursor

    def close(self) -> None:
        if self._active is not None:
            self._active.close()
            self._active = None

    def unfiltered(self) -> list[str]:
        return sorted(a.epoch_id for a in self.index.archives.values() if a.filters is None)

    def archives(self) -> list[Archive]:
        """Archived epochs, oldest first."""
        return sorted(self.index.archives.values(), key=lambda a: a.epoch_id)

    def size(self) -> int:
        """The active partition's logical size in bytes (WAL content included)."""
        (pages,) = self.active.execute("PRAGMA page_count").fetchone()
        (page_size,) = self.active.execute("PRAGMA page_size").fetchone()
        return int(pages) * int(page_size)

    def full(self) -> bool:
        return self.size() >= self.rotate_size

    def rotate(self, now_ms: int) -> str:
        """Archive the active partition and start a fresh one; returns the new epoch id."""
        epoch_id = next_epoch_id(list(self.index.archives), now_ms)
        target = self.archive_path(epoch_id)
        self.index.archives[epoch_id] = Archive(epoch_id=epoch_id, archived_at=now_ms)
        self.index.save()
        db = self.active
        last_id = self._last_id(db)
        renamed = False
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("PRAGMA journal_mode=DELETE")
            db.close()
            self._active = None
            os.replace(self.active_path, target)
            renamed = True
            _fsync_directory(self.archive_dir)
            _fsync_directory(self.active_path.parent)
        finally:
            if not renamed:
                del self.index.archives[epoch_id]
                self.index.save()
            # Whatever happened, the store keeps an active partition to write to.
            if self._active is None:
                self._open_active()
        self._seed(last_id)
        return epoch_id

    def compute_filters(self, epoch_id: str) -> dict[str, BloomFilter] | None:
        """An archive's Bloom filters, or None on failure.

        Reads only the (immutable) archive file, so it may run on any thread; a store whose
        owner thread is busy (orchestration) computes here and applies with ``set_filters``.
        """
        try:
            db = open_read_only(self.archive_path(epoch_id))
            try:
                return {
                    name: BloomFilter.of(
                        self.schema.decode.get(name, _same)(row[0])
                        for row in db.execute(sql)
                        if row[0] is not None
                    )
                    for name, sql in self.schema.filters.items()
                }
            finally:
                db.close()
        except sqlite3.Error as e:
            log.error("cannot build filters for %s/%s: %s", self.schema.name, epoch_id, e)
            return None

    def set_filters(self, epoch_id: str, filters: dict[str, BloomFilter]) -> None:
        """Record an archive's filters in the index (owner thread)."""
        archive = self.index.archives.get(epoch_id)
        if archive is not None:
            archive.filters = filters
            self.index.save()

    def build_filters(self, epoch_id: str) -> bool:
        """Compute and record an archive's filters; False if it stays unindexed."""
        if epoch_id not in self.index.archives:
            return False
        filters = self.compute_filters(epoch_id)
        if filters is None:
            return False
        self.set_filters(epoch_id, filters)
        return True

    def select(
        self,
        *,
        field: str | None = None,
        key: str | None = None,
        since: date | None = None,
        after_epoch: str | None = None,
    ) -> list[Partition]:
        """The partitions a read must visit, in chronological order (the active one last)."""
        chosen: list[Partition] = []
        if after_epoch != ACTIVE:
            for archive in self.archives():
                if after_epoch is not None and archive.epoch_id < after_epoch:
                    continue
                if since is not None and epoch_day(archive.epoch_id) < since:
                    continue
                if field is not None and key is not None and not archive.may_contain(field, key):
                    continue
                chosen.append(Partition(archive.epoch_id, self.archive_path(archive.epoch_id)))
        chosen.append(Partition(ACTIVE, self.active_path))
        return chosen

    @contextlib.contextmanager
    def reading(self, partition: Partition) -> Iterator[sqlite3.Connection]:
        if partition.epoch_id == ACTIVE:
            yield self.active
            return
        db = open_read_only(partition.path)
        try:
            yield db
        finally:
            db.close()


# --- A store over partitions ----------------------------------------------------------


class Query(Protocol):
    """What a partitioned read needs to know to choose partitions."""

    @property
    def run_id(self) -> str | None: ...
    @property
    def since(self) -> date | None: ...
    @property
    def after(self) -> Cursor[Any] | None: ...


Q = TypeVar("Q", bound=Query)


@dataclass(frozen=True, slots=True)
class Row:
    """A stored entry: its ordering position and id within its partition, and its wire form."""

    position: Any
    row_id: int
    entry: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Page:
    entries: list[dict[str, Any]]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class Written:
    """A flushed entry, with the run it belongs to (entries carry no run id on the wire)."""

    run_id: str
    entry: dict[str, Any]


class PartitionedStore(Generic[Q]):
    """Appends batches to the active partition and pages through all partitions.

    Subclasses supply the SQL: ``insert`` for one batch, ``select`` within one partition.
    """

    schema: Schema

    def __init__(self, directory: Path, *, rotate_size: int = ROTATE_SIZE) -> None:
        self.partitions = Partitions(directory, self.schema, rotate_size=rotate_size)
        self.generation = 0  # bumped on rotation: per-partition caches key on it

    def open(self) -> list[str]:
        return self.partitions.open()

    def close(self) -> None:
        self.partitions.close()

    def insert(self, db: sqlite3.Connection, batch: list[Any], now: int) -> list[Written]:
        raise NotImplementedError

    def select(
        self, db: sqlite3.Connection, query: Q, after: Cursor[Any] | None, limit: int
    ) -> list[Row]:
        raise NotImplementedError

    def append(self, batches: list[list[Any]], now: int) -> list[list[Written] | Exception]:
        """Insert batches in one transaction, each all-or-nothing (one savepoint per batch)."""
        db = self.partitions.active
        outcomes: list[list[Written] | Exception] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for batch in batches:
                db.execute("SAVEPOINT batch")
                try:
                    outcomes.append(self.insert(db, batch, now))
                    db.execute("RELEASE batch")
                except (sqlite3.Error, ValueError, TypeError, OverflowError) as e:
                    db.execute("ROLLBACK TO batch")
                    db.execute("RELEASE batch")
                    outcomes.append(e)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return outcomes

    def rotate(self, now: int) -> str:
        self.generation += 1
        return self.partitions.rotate(now)

    def query(self, query: Q, limit: int) -> Page:
        """Up to ``limit`` entries after the query's cursor, across partitions in order."""
        entries: list[dict[str, Any]] = []
        last: Cursor[Any] | None = None
        after = None if query.after is None else self.partitions.locate(query.after)
        chosen = self.partitions.select(
            field="runs" if query.run_id is not None else None,
            key=query.run_id,
            since=query.since,
            after_epoch=None if after is None else after.epoch_id,
        )
        for partition in chosen:
            if len(entries) >= limit:
                break
            start = after if after is not None and after.epoch_id == partition.epoch_id else None
            with self.partitions.reading(partition) as db:
                rows = self.select(db, query, start, limit - len(entries))
            for row in rows:
                entries.append(row.entry)
                last = Cursor(partition.epoch_id, row.position, row.row_id)
        return Page(entries, None if last is None else last.render())
