"""The metric store of a project: points in epoch partitions (``metrics.sqlite`` + ``metrics/``).

Entries arrive validated by the HTTP layer (six fields, finite numbers); like log
messages they are not checked against the orchestration store.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date
from typing import Any

from pycoflux.storage import epochs

PAGE = 1000
SNAPSHOT_LIMIT = 1_000_000  # points in the initial event of a subscription

SCHEMA = epochs.Schema(
    name="metrics",
    migrations=(
        """
CREATE TABLE metrics (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id TEXT NOT NULL,
  execution_id TEXT NOT NULL,
  workspace_id TEXT NOT NULL,
  key TEXT NOT NULL,
  value REAL NOT NULL,
  at REAL NOT NULL,
  created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX metrics_run ON metrics (run_id, workspace_id, key, at);
CREATE INDEX metrics_execution ON metrics (execution_id, key, at);
CREATE INDEX metrics_created ON metrics (created_at)
""",
    ),
    filters={"runs": "SELECT DISTINCT run_id FROM metrics"},
    sequence="metrics",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricQuery:
    """Points of a run and/or an execution, optionally of some workspaces and keys."""

    run_id: str | None = None
    execution_id: str | None = None
    workspaces: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()
    after: epochs.Cursor[float] | None = None
    since: date | None = None

    def matches(self, written: epochs.Written) -> bool:
        entry = written.entry
        return (
            (self.run_id is None or written.run_id == self.run_id)
            and (self.execution_id is None or entry["executionId"] == self.execution_id)
            and (not self.workspaces or entry["workspaceId"] in self.workspaces)
            and (not self.keys or entry["key"] in self.keys)
        )


class MetricStore(epochs.PartitionedStore[MetricQuery]):
    schema = SCHEMA

    def insert(self, db: sqlite3.Connection, batch: list[Any], now: int) -> list[epochs.Written]:
        written = [
            epochs.Written(
                point["runId"],
                {
                    "executionId": point["executionId"],
                    "workspaceId": point["workspaceId"],
                    "key": point["key"],
                    "value": float(point["value"]),
                    "at": float(point["at"]),
                },
            )
            for point in batch
        ]
        db.executemany(
            "INSERT INTO metrics (run_id, execution_id, workspace_id, key, value, at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    w.run_id,
                    w.entry["executionId"],
                    w.entry["workspaceId"],
                    w.entry["key"],
                    w.entry["value"],
                    w.entry["at"],
                    now,
                )
                for w in written
            ],
        )
        return written

    def select(
        self,
        db: sqlite3.Connection,
        query: MetricQuery,
        after: epochs.Cursor[Any] | None,
        limit: int,
    ) -> list[epochs.Row]:
        sql = "SELECT id, execution_id, workspace_id, key, value, at FROM metrics WHERE 1 = 1"
        args: list[Any] = []
        if query.run_id is not None:
            sql += " AND run_id = ?"
            args.append(query.run_id)
        if query.execution_id is not None:
            sql += " AND execution_id = ?"
            args.append(query.execution_id)
        if query.workspaces:
            sql += f" AND workspace_id IN ({','.join('?' * len(query.workspaces))})"
            args.extend(sorted(query.workspaces))
        if query.keys:
            sql += f" AND key IN ({','.join('?' * len(query.keys))})"
            args.extend(sorted(query.keys))
        if after is not None:
            sql += " AND (at, id) > (?, ?)"
            args.extend([float(after.position), after.row_id])
        sql += " ORDER BY at, id LIMIT ?"
        args.append(limit)
        return [
            epochs.Row(
                at,
                row_id,
                {
                    "executionId": execution_id,
                    "workspaceId": workspace_id,
                    "key": key,
                    "value": value,
                    "at": at,
                },
            )
            for row_id, execution_id, workspace_id, key, value, at in db.execute(sql, args)
        ]
