"""The SQLite implementation of the orchestration store, plus the reads topics need."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any

from pycoflux.orchestration import commands, model, ports

_EXECUTION = """
SELECT e.id, r.external_id || ':' || s.number || ':' || e.attempt, s.run_id, r.external_id,
       e.step_id, s.number, e.attempt, e.workspace_id, s.module, s.target, s.type,
       s.parent_execution_id, e.execute_after, e.created_at
FROM executions e JOIN steps s ON s.id = e.step_id JOIN runs r ON r.id = s.run_id
"""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def options_to_json(options: model.StepOptions) -> str:
    data = dataclasses.asdict(options)
    return _dumps(data)


def options_from_json(text: str) -> model.StepOptions:
    data = json.loads(text)
    retries = data.pop("retries", None)
    return model.StepOptions(
        **data, retries=model.Retries(**retries) if retries is not None else None
    )


def _execution(row: tuple[Any, ...]) -> model.Execution:
    return model.Execution(
        id=row[0],
        external_id=model.ExecutionId(row[1]),
        run_id=row[2],
        run_external_id=model.RunId(row[3]),
        step_id=row[4],
        step_number=row[5],
        attempt=row[6],
        workspace_id=row[7],
        module=row[8],
        target=row[9],
        type=model.TargetType(row[10]),
        parent_id=row[11],
        execute_after=row[12],
        created_at=row[13],
    )


def _workspace(row: tuple[Any, ...] | None) -> ports.WorkspaceRow | None:
    if row is None:
        return None
    return ports.WorkspaceRow(
        id=row[0],
        external_id=row[1],
        name=row[2],
        base_id=row[3],
        state=model.WorkspaceState(row[4]),
    )


class SqliteOrchestrationStore:
    """Implements ``ports.OrchestrationStore`` on one connection owned by the writer thread."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._options: dict[int, model.StepOptions] = {}
        self._workspace_ids: dict[int, str] = {}

    def _one(self, sql: str, *args: Any) -> Any:
        return self._db.execute(sql, args).fetchone()

    def _all(self, sql: str, *args: Any) -> list[Any]:
        return self._db.execute(sql, args).fetchall()

    # --- Workspaces and manifests ----------------------------------------------------

    def workspace_by_external_id(self, external_id: str) -> ports.WorkspaceRow | None:
        return _workspace(
            self._one(
                "SELECT id, external_id, name, base_id, state FROM workspaces WHERE external_id = ?",
                external_id,
            )
        )

    def workspace_by_name(self, name: str) -> ports.WorkspaceRow | None:
        return _workspace(
            self._one(
                "SELECT id, external_id, name, base_id, state FROM workspaces"
                " WHERE lower(name) = lower(?) AND state != 2",
                name,
            )
        )

    def insert_workspace(self, external_id: str, name: str, base_id: int | None, now: int) -> int:
        cursor = self._db.execute(
            "INSERT INTO workspaces (external_id, name, base_id, state, created_at)"
            " VALUES (?, ?, ?, 0, ?)",
            (external_id, name, base_id, now),
        )
        return int(cursor.lastrowid or 0)

    def workspace_external_id(self, workspace_id: int) -> str:
        cached = self._workspace_ids.get(workspace_id)
        if cached is None:
            (cached,) = self._one("SELECT external_id FROM workspaces WHERE id = ?", workspace_id)
            self._workspace_ids[workspace_id] = cached
        return cached

    def workspace_state(self, workspace_id: int) -> model.WorkspaceState:
        (state,) = self._one("SELECT state FROM workspaces WHERE id = ?", workspace_id)
        return model.WorkspaceState(state)

    def workspace_lineage(self, workspace_id: int) -> set[int]:
        lineage: set[int] = set()
        current: int | None = workspace_id
        while current is not None and current not in lineage:
            lineage.add(current)
            row = self._one("SELECT base_id FROM workspaces WHERE id = ?", current)
            current = row[0] if row else None
        return lineage

    def manifest_targets(self, workspace_id: int, module: str) -> list[str]:
        return [
            row[0]
            for row in self._all(
                "SELECT target FROM manifests WHERE workspace_id = ? AND module = ?",
                workspace_id,
                module,
            )
        ]

    def replace_manifest(
        self, workspace_id: int, module: str, workflows: dict[str, dict[str, object]], now: int
    ) -> None:
        self._db.execute(
            "DELETE FROM manifests WHERE workspace_id = ? AND module = ?", (workspace_id, module)
        )
        self._db.executemany(
            "INSERT INTO manifests (workspace_id, module, target, definition, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                (workspace_id, module, target, _dumps(definition), now)
                for target, definition in workflows.items()
            ],
        )

    # --- Runs, steps, executions ---------------------------------------------------------

    def run_by_external_id(self, external_id: str) -> int | None:
        row = self._one("SELECT id FROM runs WHERE external_id = ?", external_id)
        return None if row is None else int(row[0])

    def run_by_idempotency_key(self, key: str, since: int) -> str | None:
        row = self._one(
            "SELECT external_id FROM runs WHERE idempotency_key = ? AND created_at >= ?"
            " ORDER BY created_at DESC LIMIT 1",
            key,
            since,
        )
        return None if row is None else str(row[0])

    def insert_run(
        self,
        *,
        external_id: str,
        parent_execution_id: int | None,
        idempotency_key: str | None,
        requires: model.TagSet,
        memo: bool,
        created_at: int,
        created_by: commands.Principal,
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO runs (external_id, parent_execution_id, idempotency_key, requires, memo,"
            " created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                external_id,
                parent_execution_id,
                idempotency_key,
                _dumps(requires),
                int(memo),
                created_at,
                _dumps(created_by),
            ),
        )
        return int(cursor.lastrowid or 0)

    def run_requires(self, run_id: int) -> model.TagSet:
        (requires,) = self._one("SELECT requires FROM runs WHERE id = ?", run_id)
        result: model.TagSet = json.loads(requires)
        return result

    def insert_step(
        self,
        *,
        run_id: int,
        number: int,
        parent_execution_id: int | None,
        module: str,
        target: str,
        type: model.TargetType,
        options: model.StepOptions,
        arguments: list[model.Value],
        created_at: int,
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO steps (run_id, number, parent_execution_id, module, target, type,"
            " options, arguments, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                number,
                parent_execution_id,
                module,
                target,
                int(type),
                options_to_json(options),
                _dumps(arguments),
                created_at,
            ),
        )
        step_id = int(cursor.lastrowid or 0)
        self._options[step_id] = options
        return step_id

    def next_step_number(self, run_id: int) -> int:
        (number,) = self._one(
            "SELECT coalesce(max(number), 0) + 1 FROM steps WHERE run_id = ?", run_id
        )
        return int(number)

    def step_by_number(self, run_external_id: str, number: int) -> int | None:
        row = self._one(
            "SELECT s.id FROM steps s JOIN runs r ON r.id = s.run_id"
            " WHERE r.external_id = ? AND s.number = ?",
            run_external_id,
            number,
        )
        return None if row is None else int(row[0])

    def step_options(self, step_id: int) -> model.StepOptions:
        options = self._options.get(step_id)
        if options is None:
            (text,) = self._one("SELECT options FROM steps WHERE id = ?", step_id)
            options = self._options[step_id] = options_from_json(text)
        return options

    def step_arguments(self, step_id: int) -> list[model.Value]:
        (text,) = self._one("SELECT arguments FROM steps WHERE id = ?", step_id)
        arguments: list[model.Value] = json.loads(text)
        return arguments

    def insert_execution(
        self,
        *,
        step_id: int,
        attempt: int,
        workspace_id: int,
        execute_after: int | None,
        created_at: int,
        created_by: commands.Principal,
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO executions (step_id, attempt, workspace_id, execute_after, created_at,"
            " created_by) VALUES (?, ?, ?, ?, ?, ?)",
            (step_id, attempt, workspace_id, execute_after, created_at, _dumps(created_by)),
        )
        execution_id = int(cursor.lastrowid or 0)
        self._db.execute("INSERT INTO queue (execution_id) VALUES (?)", (execution_id,))
        return execution_id

    def next_attempt(self, step_id: int) -> int:
        (attempt,) = self._one(
            "SELECT coalesce(max(attempt), 0) + 1 FROM executions WHERE step_id = ?", step_id
        )
        return int(attempt)

    def execution(self, execution_id: int) -> model.Execution:
        return _execution(self._one(_EXECUTION + " WHERE e.id = ?", execution_id))

    def execution_by_external_id(self, external_id: str) -> model.Execution | None:
        parsed = model.parse_execution_id(external_id)
        if parsed is None:
            return None
        row = self._one(
            _EXECUTION + " WHERE r.external_id = ? AND s.number = ? AND e.attempt = ?", *parsed
        )
        return None if row is None else _execution(row)

    def base_execution(self, step_id: int) -> model.Execution | None:
        row = self._one("SELECT parent_execution_id FROM steps WHERE id = ?", step_id)
        if row is None:
            return None
        if row[0] is not None:
            return self.execution(row[0])
        first = self._one(_EXECUTION + " WHERE e.step_id = ? ORDER BY e.attempt LIMIT 1", step_id)
        return None if first is None else _execution(first)

    def live_executions_of_step(self, step_id: int) -> list[int]:
        return [
            row[0]
            for row in self._all(
                "SELECT e.id FROM executions e LEFT JOIN completions c ON c.execution_id = e.id"
                " WHERE e.step_id = ? AND c.execution_id IS NULL",
                step_id,
            )
        ]

    def previous_outcomes(self, step_id: int, exclude: int) -> list[model.Completion | None]:
        return [
            None if row[0] is None else model.Completion(row[0])
            for row in self._all(
                "SELECT c.kind FROM executions e JOIN completions c ON c.execution_id = e.id"
                " WHERE e.step_id = ? AND e.id != ? ORDER BY e.created_at DESC, e.id DESC",
                step_id,
                exclude,
            )
        ]

    def queued_executions(self) -> list[model.Execution]:
        return [
            _execution(row)
            for row in self._all(
                _EXECUTION + " JOIN queue q ON q.execution_id = e.id"
                " ORDER BY e.execute_after IS NOT NULL, e.execute_after, e.created_at, e.id"
            )
        ]

    def insert_child(self, parent_id: int, child_id: int, group_id: int | None, now: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO children (parent_id, child_id, group_id, created_at)"
            " VALUES (?, ?, ?, ?)",
            (parent_id, child_id, group_id, now),
        )

    def descendant_candidates(self, execution_id: int) -> list[int]:
        rows = self._all(
            "SELECT e.id FROM steps s JOIN executions e ON e.step_id = s.id"
            " WHERE s.parent_execution_id = ? ORDER BY e.id",
            execution_id,
        )
        spawned = self._one(
            "SELECT successor_id FROM completions WHERE execution_id = ? AND kind = ?",
            execution_id,
            int(model.Completion.SPAWNED),
        )
        result = [row[0] for row in rows]
        if spawned is not None and spawned[0] is not None:
            result.append(spawned[0])
        return result

    def insert_group(self, execution_id: int, group_id: int, name: str | None) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO groups (execution_id, group_id, name) VALUES (?, ?, ?)",
            (execution_id, group_id, name),
        )

    def insert_dependency(self, execution_id: int, dependency_id: int, now: int) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO dependencies (execution_id, dependency_id, created_at)"
            " VALUES (?, ?, ?)",
            (execution_id, dependency_id, now),
        )
        return cursor.rowcount > 0

    def dependencies(self, execution_id: int) -> list[int]:
        return [
            row[0]
            for row in self._all(
                "SELECT dependency_id FROM dependencies WHERE execution_id = ?", execution_id
            )
        ]

    # --- Outcomes -----------------------------------------------------------------------

    def insert_assignment(self, execution_id: int, session_id: int, now: int) -> None:
        self._db.execute(
            "INSERT INTO assignments (execution_id, session_id, assigned_at) VALUES (?, ?, ?)",
            (execution_id, session_id, now),
        )
        self._db.execute("DELETE FROM queue WHERE execution_id = ?", (execution_id,))

    def assigned_session(self, execution_id: int) -> int | None:
        row = self._one("SELECT session_id FROM assignments WHERE execution_id = ?", execution_id)
        return None if row is None else int(row[0])

    def insert_result(
        self,
        execution_id: int,
        *,
        value: model.Value | None = None,
        error: model.ErrorInfo | None = None,
        retryable: bool | None = None,
        created_at: int,
    ) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO results (execution_id, value, error, retryable, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                execution_id,
                None if value is None else _dumps(value),
                None if error is None else _dumps(dataclasses.asdict(error)),
                None if retryable is None else int(retryable),
                created_at,
            ),
        )

    def result(self, execution_id: int) -> ports.ResultRow | None:
        row = self._one(
            "SELECT value, error, retryable FROM results WHERE execution_id = ?", execution_id
        )
        if row is None:
            return None
        return ports.ResultRow(
            value=None if row[0] is None else json.loads(row[0]),
            error=None if row[1] is None else model.ErrorInfo(**json.loads(row[1])),
            retryable=None if row[2] is None else bool(row[2]),
        )

    def insert_completion(
        self, execution_id: int, kind: model.Completion, successor_id: int | None, now: int
    ) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO completions (execution_id, kind, successor_id, created_at)"
            " VALUES (?, ?, ?, ?)",
            (execution_id, int(kind), successor_id, now),
        )
        self._db.execute("DELETE FROM queue WHERE execution_id = ?", (execution_id,))

    def completion(self, execution_id: int) -> tuple[model.Completion, int | None] | None:
        row = self._one(
            "SELECT kind, successor_id FROM completions WHERE execution_id = ?", execution_id
        )
        return None if row is None else (model.Completion(row[0]), row[1])

    # --- Sessions --------------------------------------------------------------------------

    def session_by_external_id(self, external_id: str) -> int | None:
        row = self._one("SELECT id FROM sessions WHERE external_id = ?", external_id)
        return None if row is None else int(row[0])

    def insert_session(
        self,
        *,
        external_id: str,
        secret_hash: str,
        workspace_id: int,
        provides: model.TagSet,
        accepts: model.TagSet,
        created_at: int,
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO sessions (external_id, secret_hash, workspace_id, provides, accepts,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (external_id, secret_hash, workspace_id, _dumps(provides), _dumps(accepts), created_at),
        )
        return int(cursor.lastrowid or 0)

    def activate_session(self, session_id: int, now: int) -> None:
        self._db.execute("UPDATE sessions SET activated_at = ? WHERE id = ?", (now, session_id))

    def expire_session(self, session_id: int, now: int) -> None:
        self._db.execute("UPDATE sessions SET expired_at = ? WHERE id = ?", (now, session_id))

    def live_sessions(self) -> list[ports.SessionRow]:
        return [
            ports.SessionRow(
                id=row[0],
                external_id=row[1],
                secret_hash=row[2],
                workspace_id=row[3],
                provides=json.loads(row[4]),
                accepts=json.loads(row[5]),
                activated_at=row[6],
            )
            for row in self._all(
                "SELECT s.id, s.external_id, s.secret_hash, s.workspace_id, s.provides, s.accepts,"
                " s.activated_at FROM sessions s JOIN workspaces w ON w.id = s.workspace_id"
                " WHERE s.expired_at IS NULL AND w.state != 2"
            )
        ]

    def held_executions(self, session_id: int) -> list[int]:
        return [
            row[0]
            for row in self._all(
                "SELECT a.execution_id FROM assignments a"
                " LEFT JOIN completions c ON c.execution_id = a.execution_id"
                " WHERE a.session_id = ? AND c.execution_id IS NULL",
                session_id,
            )
        ]

    def orphaned_assignments(self) -> list[int]:
        return [
            row[0]
            for row in self._all(
                "SELECT a.execution_id FROM assignments a"
                " JOIN sessions s ON s.id = a.session_id"
                " LEFT JOIN completions c ON c.execution_id = a.execution_id"
                " WHERE c.execution_id IS NULL AND s.expired_at IS NOT NULL"
            )
        ]
