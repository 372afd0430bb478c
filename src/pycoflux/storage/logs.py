"""The log store of a project: messages in epoch partitions (``logs.sqlite`` + ``logs/``).

Messages are not checked against the orchestration store (``server-api.md`` §6.1): a
message for an unknown run or execution is stored like any other and is found by
queries for that run. Templates are interned per partition (``templates``) because a
run typically logs the same few templates many times.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from dataclasses import dataclass
from datetime import date
from typing import Any

from pycoflux.storage import epochs

PAGE = 1000

SCHEMA = epochs.Schema(
    name="logs",
    migrations=(
        """
CREATE TABLE templates (
  id INTEGER PRIMARY KEY,
  hash BLOB NOT NULL UNIQUE,
  template TEXT NOT NULL
) STRICT;
CREATE TABLE messages (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id TEXT NOT NULL,
  execution_id TEXT NOT NULL,
  workspace_id TEXT NOT NULL,
  timestamp INTEGER NOT NULL,
  level INTEGER NOT NULL,
  template_id INTEGER REFERENCES templates (id),
  values_json TEXT,
  created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX messages_run ON messages (run_id, workspace_id, timestamp);
CREATE INDEX messages_execution ON messages (execution_id, timestamp);
CREATE INDEX messages_created ON messages (created_at)
""",
    ),
    filters={"runs": "SELECT DISTINCT run_id FROM messages"},
    sequence="messages",
)

LEVELS = range(0, 6)  # debug, stdout, info, stderr, warning, error
DEFAULT_LEVEL = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class LogQuery:
    """Messages of one run, optionally of one execution and some workspaces."""

    run_id: str
    execution_id: str | None = None
    workspaces: frozenset[str] = frozenset()
    after: epochs.Cursor[int] | None = None
    since: date | None = None  # archived partitions rotated before this day are skipped

    def matches(self, written: epochs.Written) -> bool:
        entry = written.entry
        return (
            written.run_id == self.run_id
            and (self.execution_id is None or entry["executionId"] == self.execution_id)
            and (not self.workspaces or entry["workspaceId"] in self.workspaces)
        )


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "" if value is None else json.dumps(value, separators=(",", ":"))


def _timestamp(value: Any, now: int) -> int:
    # Fields other than values are not validated (server-api.md §6.1); a timestamp that
    # isn't a number is replaced by the arrival time rather than rejected.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return now
    if isinstance(value, float) and not math.isfinite(value):
        return now
    number = int(value)
    return number if -(2**63) <= number < 2**63 else now


def _level(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return value
    return DEFAULT_LEVEL


class LogStore(epochs.PartitionedStore[LogQuery]):
    schema = SCHEMA

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._templates: dict[bytes, int] = {}  # template hash -> id in the active partition
        self._templates_generation = self.generation
        self._staged: list[dict[bytes, int]] = []

    def _template_id(self, db: sqlite3.Connection, template: str, staged: dict[bytes, int]) -> int:
        digest = hashlib.sha256(template.encode()).digest()
        known = self._templates.get(digest) or staged.get(digest)
        if known is not None:
            return known
        row = db.execute(
            "INSERT INTO templates (hash, template) VALUES (?, ?)"
            " ON CONFLICT (hash) DO UPDATE SET hash = excluded.hash RETURNING id",
            (digest, template),
        ).fetchone()
        staged[digest] = int(row[0])
        return int(row[0])

    def append(self, batches: list[list[Any]], now: int) -> list[list[epochs.Written] | Exception]:
        if self._templates_generation != self.generation:
            self._templates.clear()  # ids belong to the partition that was rotated away
            self._templates_generation = self.generation
        self._staged = []
        outcomes = super().append(batches, now)
        # Only ids from batches that committed are cached: a rolled-back id may be reused.
        for staged in self._staged:
            self._templates.update(staged)
        return outcomes

    def insert(self, db: sqlite3.Connection, batch: list[Any], now: int) -> list[epochs.Written]:
        written: list[epochs.Written] = []
        staged: dict[bytes, int] = {}
        for message in batch:
            template = message.get("template")
            template = template if isinstance(template, str) else None
            template_id = None if template is None else self._template_id(db, template, staged)
            values = message.get("values") or {}
            entry = {
                "executionId": _text(message.get("executionId")),
                "workspaceId": _text(message.get("workspaceId")),
                "timestamp": _timestamp(message.get("timestamp"), now),
                "level": _level(message.get("level")),
                "template": template,
                "values": values,
            }
            run_id = _text(message.get("runId"))
            db.execute(
                "INSERT INTO messages (run_id, execution_id, workspace_id, timestamp, level,"
                " template_id, values_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    entry["executionId"],
                    entry["workspaceId"],
                    entry["timestamp"],
                    entry["level"],
                    template_id,
                    json.dumps(values, separators=(",", ":"), allow_nan=False) if values else None,
                    now,
                ),
            )
            written.append(epochs.Written(run_id, entry))
        self._staged.append(staged)
        return written

    def select(
        self,
        db: sqlite3.Connection,
        query: LogQuery,
        after: epochs.Cursor[Any] | None,
        limit: int,
    ) -> list[epochs.Row]:
        sql = (
            "SELECT m.id, m.execution_id, m.workspace_id, m.timestamp, m.level, t.template,"
            " m.values_json FROM messages m LEFT JOIN templates t ON t.id = m.template_id"
            " WHERE m.run_id = ?"
        )
        args: list[Any] = [query.run_id]
        if query.execution_id is not None:
            sql += " AND m.execution_id = ?"
            args.append(query.execution_id)
        if query.workspaces:
            sql += f" AND m.workspace_id IN ({','.join('?' * len(query.workspaces))})"
            args.extend(sorted(query.workspaces))
        if after is not None:
            sql += " AND (m.timestamp, m.id) > (?, ?)"
            args.extend([int(after.position), after.row_id])
        sql += " ORDER BY m.timestamp, m.id LIMIT ?"
        args.append(limit)
        return [
            epochs.Row(
                timestamp,
                row_id,
                {
                    "executionId": execution_id,
                    "workspaceId": workspace_id,
                    "timestamp": timestamp,
                    "level": level,
                    "template": template,
                    "values": json.loads(values) if values else {},
                },
            )
            for row_id, execution_id, workspace_id, timestamp, level, template, values in (
                db.execute(sql, args)
            )
        ]
