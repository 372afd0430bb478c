"""Per-project log and metric storage (``logs.sqlite``, ``metrics.sqlite``)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

PAGE = 1000

LOGS_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
  id INTEGER PRIMARY KEY,
  run_id TEXT NOT NULL,
  execution_id TEXT NOT NULL,
  workspace_id TEXT NOT NULL,
  timestamp INTEGER NOT NULL,
  level INTEGER NOT NULL,
  template TEXT,
  `values` TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_run ON messages (run_id, timestamp, id);
CREATE TABLE IF NOT EXISTS metrics (
  id INTEGER PRIMARY KEY,
  run_id TEXT NOT NULL,
  execution_id TEXT NOT NULL,
  workspace_id TEXT NOT NULL,
  key TEXT NOT NULL,
  value REAL NOT NULL,
  at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics (run_id, at, id);
"""


def open_schema(db: sqlite3.Connection) -> None:
    db.executescript(LOGS_SCHEMA)


def append_logs(db: sqlite3.Connection, messages: list[dict[str, Any]]) -> None:
    with db:
        db.executemany(
            "INSERT INTO messages (run_id, execution_id, workspace_id, timestamp, level,"
            " template, `values`) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    str(m.get("runId", "")),
                    str(m.get("executionId", "")),
                    str(m.get("workspaceId", "")),
                    int(m.get("timestamp", 0)),
                    int(m.get("level", 2)),
                    m.get("template"),
                    json.dumps(m.get("values") or {}),
                )
                for m in messages
            ],
        )


def query_logs(
    db: sqlite3.Connection,
    run_id: str,
    execution_id: str | None,
    workspaces: list[str],
    after: tuple[int, int] | None,
) -> tuple[list[dict[str, Any]], str | None]:
    sql = (
        "SELECT id, execution_id, workspace_id, timestamp, level, template, `values`"
        " FROM messages WHERE run_id = ?"
    )
    args: list[Any] = [run_id]
    if execution_id:
        sql += " AND execution_id = ?"
        args.append(execution_id)
    if workspaces:
        sql += f" AND workspace_id IN ({','.join('?' * len(workspaces))})"
        args.extend(workspaces)
    if after is not None:
        sql += " AND (timestamp > ? OR (timestamp = ? AND id > ?))"
        args.extend([after[0], after[0], after[1]])
    sql += f" ORDER BY timestamp, id LIMIT {PAGE}"
    rows = db.execute(sql, args).fetchall()
    entries = [
        {
            "executionId": r[1],
            "workspaceId": r[2],
            "timestamp": r[3],
            "level": r[4],
            "template": r[5],
            "values": json.loads(r[6]),
        }
        for r in rows
    ]
    cursor = f":{rows[-1][3]}:{rows[-1][0]}" if rows else None
    return entries, cursor


def append_metrics(db: sqlite3.Connection, entries: list[dict[str, Any]]) -> None:
    with db:
        db.executemany(
            "INSERT INTO metrics (run_id, execution_id, workspace_id, key, value, at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (e["runId"], e["executionId"], e["workspaceId"], e["key"], e["value"], e["at"])
                for e in entries
            ],
        )


def query_metrics(
    db: sqlite3.Connection, run_id: str | None, execution_id: str | None, keys: list[str]
) -> list[dict[str, Any]]:
    sql = "SELECT execution_id, workspace_id, key, value, at FROM metrics WHERE 1=1"
    args: list[Any] = []
    if run_id:
        sql += " AND run_id = ?"
        args.append(run_id)
    if execution_id:
        sql += " AND execution_id = ?"
        args.append(execution_id)
    if keys:
        sql += f" AND key IN ({','.join('?' * len(keys))})"
        args.extend(keys)
    sql += f" ORDER BY at, id LIMIT {PAGE}"
    return [
        {"executionId": r[0], "workspaceId": r[1], "key": r[2], "value": r[3], "at": r[4]}
        for r in db.execute(sql, args)
    ]
