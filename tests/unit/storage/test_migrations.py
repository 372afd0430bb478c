"""The migration runner shared by the project store and every partitioned store."""

from __future__ import annotations

import logging
import sqlite3
from importlib import resources
from pathlib import Path

import pytest

from pycoflux.storage import sqlite

FIRST = "CREATE TABLE a (x INTEGER) STRICT;\nINSERT INTO a VALUES (1)"
BROKEN = "CREATE TABLE b (y INTEGER) STRICT;\nINSERT INTO nowhere VALUES (2)"
FIXED = "CREATE TABLE b (y INTEGER) STRICT;\nINSERT INTO b VALUES (2)"


def _open(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None)


def _version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_applies_only_what_is_missing(tmp_path: Path) -> None:
    db = _open(tmp_path / "db")
    sqlite.apply_migrations(db, [FIRST])
    sqlite.apply_migrations(db, [FIRST, FIXED])  # the first is not run again
    assert _version(db) == 2
    assert db.execute("SELECT count(*) FROM a").fetchone()[0] == 1
    assert db.execute("SELECT y FROM b").fetchall() == [(2,)]


def test_a_failing_migration_leaves_nothing_behind(tmp_path: Path) -> None:
    db = _open(tmp_path / "db")
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        sqlite.apply_migrations(db, [FIRST, BROKEN])
    # The first committed; the second rolled back whole, and the connection is usable.
    assert _version(db) == 1
    assert not db.in_transaction
    assert _tables(db) == {"a"}
    sqlite.apply_migrations(db, [FIRST, FIXED])
    assert _version(db) == 2
    assert _tables(db) == {"a", "b"}


def test_the_project_store_runs_every_packaged_migration(tmp_path: Path) -> None:
    packaged = [
        entry
        for entry in resources.files("pycoflux.storage.migrations").iterdir()
        if entry.name.endswith(".sql")
    ]
    db = sqlite.connect(tmp_path / "project.sqlite")
    assert _version(db) == len(packaged)
    db.close()
    again = sqlite.connect(tmp_path / "project.sqlite")  # a restart: nothing left to apply
    assert _version(again) == len(packaged)
    again.close()


def test_an_upgrade_says_what_it_applies_and_a_new_database_stays_quiet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pycoflux.storage")
    db = _open(tmp_path / "db")
    sqlite.apply_migrations(db, [FIRST])  # a new database
    assert caplog.messages == []
    sqlite.apply_migrations(db, [FIRST, FIXED, "CREATE TABLE c (z INTEGER) STRICT"])
    path = str(tmp_path / "db")
    assert [m.split(" applied in ")[0] for m in caplog.messages] == [
        f"{path}: applying schema migration 2 of 3",
        f"{path}: schema migration 2",
        f"{path}: applying schema migration 3 of 3",
        f"{path}: schema migration 3",
    ]
