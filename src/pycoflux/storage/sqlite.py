"""Opening a project's SQLite files: WAL, pragmas and schema migrations."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from pathlib import Path

from pycoflux import errors

log = logging.getLogger("pycoflux.storage")

CHUNK = 500  # ids per ``IN (...)`` list, well under SQLite's bound-parameter limit


def connect(
    path: Path | str, *, migrations: bool = True, synced_by_caller: bool = False
) -> sqlite3.Connection:
    """Open (creating if needed) a database for the single writer thread that owns it.

    By default every commit is fsynced (``synchronous=FULL``). A caller that passes
    ``synced_by_caller`` takes that on itself: commits reach the operating system only
    (``synchronous=NORMAL``, which in WAL mode still survives a crash of the process),
    and the caller must ``sync_wal`` before it treats a commit as durable. It also takes
    on checkpoints (``checkpoint``, from another thread): the commit that crosses
    SQLite's automatic checkpoint threshold would otherwise copy the log into the main
    file and fsync both, holding up the writer for milliseconds.
    """
    try:
        connection = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=30
        )
        connection.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across process crashes in WAL mode; FULL adds power-loss safety.
        connection.execute(f"PRAGMA synchronous={'NORMAL' if synced_by_caller else 'FULL'}")
        if synced_by_caller:
            connection.execute("PRAGMA wal_autocheckpoint=0")
        connection.execute("PRAGMA foreign_keys=ON")
        if migrations:
            migrate(connection)
    except sqlite3.Error as e:
        raise errors.StoreError(f"cannot open {path}: {e}") from e
    return connection


def sync_wal(path: Path) -> None:
    """Flush the write-ahead log of the database at ``path`` to disk.

    Safe from any thread while the database is in use: it only fsyncs the file. After it
    returns, every transaction committed before the call survives a power loss, as with
    ``synchronous=FULL``. SQLite itself syncs the log before it checkpoints it into the
    main file, so what was checkpointed meanwhile is durable too.
    """
    try:
        descriptor = os.open(_wal(path), os.O_RDONLY)
    except FileNotFoundError:
        return  # no log: everything is in the main file, synced by its checkpoint
    try:
        getattr(os, "fdatasync", os.fsync)(descriptor)
    finally:
        os.close(descriptor)


def checkpoint(path: Path) -> None:
    """Copy the write-ahead log of the database at ``path`` into the main file.

    For databases opened with ``synced_by_caller``. It runs on a short-lived connection of
    its own, so the writer keeps committing meanwhile (a passive checkpoint never waits
    for it), and SQLite fsyncs the log before it copies and the main file after. The
    writer reuses the log from its start once a checkpoint has taken all of it.
    """
    if not _wal(path).exists():
        return
    try:
        connection = sqlite3.connect(str(path), isolation_level=None, timeout=30)
    except sqlite3.Error as e:
        raise errors.StoreError(f"cannot open {path}: {e}") from e
    try:
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.Error as e:
        raise errors.StoreError(f"cannot checkpoint {path}: {e}") from e
    finally:
        connection.close()


def _wal(path: Path) -> Path:
    """The write-ahead log of the database at ``path``."""
    return path.with_name(path.name + "-wal")


def packaged_migrations() -> tuple[str, ...]:
    """The project schema's ``migrations/*.sql`` scripts, in order (numbered 1 to n)."""
    entries = sorted(
        (
            entry
            for entry in resources.files("pycoflux.storage.migrations").iterdir()
            if entry.name.endswith(".sql")
        ),
        key=lambda entry: entry.name,
    )
    numbers = [int(entry.name.split("_", 1)[0]) for entry in entries]
    if numbers != list(range(1, len(entries) + 1)):
        raise errors.StoreError(f"migrations are not numbered 1 to {len(entries)}: {numbers}")
    return tuple(entry.read_text() for entry in entries)


def migrate(connection: sqlite3.Connection) -> None:
    """Bring a project database to the packaged schema."""
    apply_migrations(connection, packaged_migrations())


def apply_migrations(db: sqlite3.Connection, migrations: Sequence[str]) -> None:
    """Apply the migrations (the first is number 1) that the database's ``user_version``
    says are not applied yet, each in its own transaction.

    Upgrading an existing database is logged, one line per migration with its time: a
    migration that backfills from the history can take seconds on a large one. A new
    (empty) database is migrated silently."""
    (current,) = db.execute("PRAGMA user_version").fetchone()
    name = _name(db) if current > 0 else None  # set when upgrading an existing database
    for number, script in enumerate(migrations, start=1):
        if number <= current:
            continue
        started = time.monotonic()
        if name is not None:
            log.info("%s: applying schema migration %d of %d", name, number, len(migrations))
        db.execute("BEGIN")
        try:
            for statement in script.split(";\n"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={number}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if name is not None:
            log.info(
                "%s: schema migration %d applied in %.1f s",
                name,
                number,
                time.monotonic() - started,
            )


def _name(db: sqlite3.Connection) -> str:
    """The database's file (or ``:memory:``), for messages."""
    for _, name, file in db.execute("PRAGMA database_list"):
        if name == "main":
            return str(file) or ":memory:"
    return ":memory:"


def chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    """The ids, sorted, in lists of at most ``CHUNK`` for ``IN (...)`` queries."""
    items = sorted(ids)
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def marks(items: Sequence[object]) -> str:
    """One ``?`` placeholder per item, comma-separated."""
    return ",".join("?" * len(items))
