"""Checkpoints of caller-synced databases: never inside a commit, done by ``checkpoint``."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from pycoflux.storage import sqlite

ROW = b"x" * 1000


def _wal_size(path: Path) -> int:
    return path.with_name(path.name + "-wal").stat().st_size


def _writer(path: Path) -> sqlite3.Connection:
    db = sqlite.connect(path, migrations=False, synced_by_caller=True)
    db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body BLOB)")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the schema in the main file
    return db


def _insert(db: sqlite3.Connection, rows: int) -> None:
    for _ in range(rows):  # one commit each, as the server's batches under light load
        db.execute("INSERT INTO t (body) VALUES (?)", (ROW,))


def _rows_in_main_file(path: Path, tmp_path: Path) -> int:
    """Rows readable from the main file alone, as if the log were lost."""
    copy = tmp_path / "main-only.sqlite"
    shutil.copyfile(path, copy)
    with sqlite3.connect(copy) as db:
        (count,) = db.execute("SELECT count(*) FROM t").fetchone()
    return int(count)


def test_commits_never_checkpoint_a_caller_synced_database(tmp_path: Path) -> None:
    path = tmp_path / "orchestration.sqlite"
    db = _writer(path)
    assert db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    _insert(db, 3000)  # ~3 MB of log: past SQLite's default threshold of 1,000 pages
    assert _wal_size(path) > 3000 * len(ROW)
    assert _rows_in_main_file(path, tmp_path) == 0
    db.close()


def test_checkpoint_copies_the_log_into_the_main_file(tmp_path: Path) -> None:
    path = tmp_path / "orchestration.sqlite"
    db = _writer(path)
    _insert(db, 500)
    sqlite.checkpoint(path)
    assert _rows_in_main_file(path, tmp_path) == 500
    db.close()


def test_after_a_checkpoint_the_writer_starts_the_log_over(tmp_path: Path) -> None:
    path = tmp_path / "orchestration.sqlite"
    db = _writer(path)
    _insert(db, 1000)
    size = _wal_size(path)
    for _ in range(3):
        sqlite.checkpoint(path)
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the writer's own catch-up
        _insert(db, 1000)
    assert _wal_size(path) < 1.5 * size  # reused from its start, not grown to 4x
    assert _rows_in_main_file(path, tmp_path) == 3000  # the last 1,000 only in the log
    db.close()


def test_checkpoint_without_a_log_does_nothing(tmp_path: Path) -> None:
    path = tmp_path / "orchestration.sqlite"
    sqlite.checkpoint(path)
    assert not path.exists()
