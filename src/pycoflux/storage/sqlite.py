"""Opening a project's SQLite files: WAL, pragmas and schema migrations."""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path

from pycoflux import errors


def connect(path: Path | str, *, migrations: bool = True) -> sqlite3.Connection:
    """Open (creating if needed) a database for the single writer thread that owns it."""
    try:
        connection = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=30
        )
        connection.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across process crashes in WAL mode; FULL adds power-loss safety.
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        if migrations:
            migrate(connection)
    except sqlite3.Error as e:
        raise errors.StoreError(f"cannot open {path}: {e}") from e
    return connection


def migrate(connection: sqlite3.Connection) -> None:
    """Apply the numbered ``migrations/*.sql`` files not yet applied (``user_version``)."""
    (current,) = connection.execute("PRAGMA user_version").fetchone()
    scripts = sorted(
        (
            entry
            for entry in resources.files("pycoflux.storage.migrations").iterdir()
            if entry.name.endswith(".sql")
        ),
        key=lambda entry: entry.name,
    )
    for entry in scripts:
        number = int(entry.name.split("_", 1)[0])
        if number <= current:
            continue
        connection.execute("BEGIN")
        for statement in entry.read_text().split(";\n"):
            if statement.strip():
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version={number}")
        connection.execute("COMMIT")
