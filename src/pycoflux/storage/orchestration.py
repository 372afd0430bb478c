"""The SQLite implementation of the orchestration store, plus the reads topics need."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from typing import Any, Protocol

from pycoflux.orchestration import assets, commands, inputs, model, pools, ports
from pycoflux.orchestration.queue import QueueIndex

_EXECUTION = """
SELECT e.id, r.external_id || ':' || s.number || ':' || e.attempt, s.run_id, r.external_id,
       e.step_id, s.number, e.attempt, e.workspace_id, s.module, s.target, s.type,
       s.parent_execution_id, e.execute_after, e.created_at, s.cache_key, s.defer_key
FROM executions e JOIN steps s ON s.id = e.step_id JOIN runs r ON r.id = s.run_id
"""

_INPUT = """
SELECT i.id, r.external_id || '/i' || i.number, i.run_id, i.workspace_id, i.template,
       i.placeholders, i.schema, i.requires, i.title
FROM inputs i JOIN runs r ON r.id = i.run_id
"""

_STREAM = """
SELECT st.id, r.external_id || ':' || s.number || '_' || st.number, st.step_id,
       st.workspace_id, st.number
FROM streams st JOIN steps s ON s.id = st.step_id JOIN runs r ON r.id = s.run_id
"""

# A live execution without an outcome (or draining with a value), or a success.
_REUSABLE = """
SELECT e.id FROM steps s JOIN executions e ON e.step_id = s.id
LEFT JOIN completions c ON c.execution_id = e.id
LEFT JOIN results res ON res.execution_id = e.id
WHERE {key} AND +e.workspace_id IN ({workspaces})
  AND ((c.execution_id IS NULL AND (res.execution_id IS NULL OR res.value IS NOT NULL))
       OR (c.kind = 0 AND (? IS NULL OR res.created_at >= ?)))
ORDER BY e.created_at DESC, e.id DESC LIMIT 1
"""


_CACHE_LIMIT = 10_000
_CACHED_VALUE_LIMIT = 1024  # results with larger values are read from the database


def _bounded(cache: dict[Any, Any]) -> dict[Any, Any]:
    """``cache``, emptied first if it is full: the writer's caches never grow unbounded."""
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    return cache


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def options_to_json(options: model.StepOptions) -> str:
    # Field by field rather than ``dataclasses.asdict``, which deep-copies: this runs for
    # every step.
    retries = options.retries
    return _dumps(
        {
            "wait_for": options.wait_for,
            "cache": options.cache,
            "defer": options.defer,
            "memo": options.memo,
            "delay": options.delay,
            "retries": None
            if retries is None
            else {
                "limit": retries.limit,
                "backoff_min": retries.backoff_min,
                "backoff_max": retries.backoff_max,
            },
            "recurrent": options.recurrent,
            "requires": options.requires,
            "timeout": options.timeout,
            "streams": options.streams,
        }
    )


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
        cache_key=row[14],
        defer_key=row[15],
    )


def _input(row: tuple[Any, ...]) -> ports.InputRow:
    return ports.InputRow(
        id=row[0],
        external_id=row[1],
        run_id=row[2],
        workspace_id=row[3],
        prompt=inputs.Prompt(
            template=row[4],
            placeholders=json.loads(row[5]),
            schema=row[6],
            requires=json.loads(row[7]),
        ),
        title=row[8],
    )


def _stream(row: tuple[Any, ...]) -> ports.StreamRow:
    return ports.StreamRow(
        id=row[0], external_id=row[1], step_id=row[2], workspace_id=row[3], index=row[4]
    )


def _asset(row: tuple[Any, ...] | None) -> assets.Asset | None:
    if row is None:
        return None
    return assets.Asset(id=row[0], external_id=row[1], name=row[2], entries=json.loads(row[3]))


def _error_json(error: model.ErrorInfo | None) -> str | None:
    return None if error is None else _dumps(dataclasses.asdict(error))


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


class ArchiveFallback(Protocol):
    """Where look-ups that miss the active epoch go (``archives.OrchestrationEpochs``)."""

    def copy_run(self, target: sqlite3.Connection, run_external_id: str) -> bool: ...
    def idempotent_run(self, key: str, since: int) -> str | None: ...
    def copy_cached(
        self,
        target: sqlite3.Connection,
        cache_key: str,
        workspaces: list[str],
        succeeded_since: int | None,
    ) -> bool: ...
    def copy_asset(self, target: sqlite3.Connection, external_id: str) -> bool: ...


class SqliteOrchestrationStore:
    """Implements ``ports.OrchestrationStore`` on one connection owned by the writer thread."""

    def __init__(
        self, connection: sqlite3.Connection, archives: ArchiveFallback | None = None
    ) -> None:
        self._db = connection
        self._archives = archives
        self._options: dict[int, model.StepOptions] = {}
        self._workspace_ids: dict[int, str] = {}
        # Rows that never change once written, cached for the writer's hot path. A rolled
        # back savepoint can hand the same row id to another row: ``discard_caches``.
        self._executions: dict[int, model.Execution] = {}
        self._by_external_id: dict[str, model.Execution] = {}
        self._steps: dict[int, model.Execution] = {}  # a template: the step's fields
        self._run_ids: dict[int, str] = {}
        self._runs: dict[int, tuple[model.TagSet, bool]] = {}  # requires, memo
        self._arguments: dict[int, list[model.Value]] = {}
        self._next_numbers: dict[int, int] = {}  # run -> its next step number
        # Outcomes by execution, present or known absent: every insert goes through here.
        self._completions: dict[int, tuple[model.Completion, int | None] | None] = {}
        self._results: dict[int, ports.ResultRow | None] = {}
        # Executions created here that nothing has made wait yet (no dependency, input
        # dependency or stream wait row): most of them, and the pass asks for all three.
        self._unwaited: set[int] = set()
        self._queue: QueueIndex | None = None

    def discard_caches(self) -> None:
        """Forget what is cached: called after a rollback, so nothing rolled back survives."""
        self._options.clear()
        self._workspace_ids.clear()
        self._executions.clear()
        self._by_external_id.clear()
        self._steps.clear()
        self._run_ids.clear()
        self._runs.clear()
        self._arguments.clear()
        self._next_numbers.clear()
        self._completions.clear()
        self._results.clear()
        self._unwaited.clear()
        self._queue = None

    def reconnect(self, connection: sqlite3.Connection) -> None:
        """Continue on a new active epoch (after a rotation): same ids, fresh caches."""
        self._db = connection
        self.discard_caches()

    def _copied_forward(self, run_external_id: str) -> bool:
        """Copy-on-reference: bring an archived run into the active epoch, if there is one."""
        # A run missing from the active epoch had no live execution at the last rotation
        # (those runs were carried forward), so the copy never adds to the queue index.
        if self._archives is None or not self._archives.copy_run(self._db, run_external_id):
            return False
        self._resync_queue()
        return True

    def _resync_queue(self) -> None:
        """Add to the queue index what a copy from an archive put in the queue table.

        In place rather than rebuilt: a scheduling pass may be holding the index."""
        if self._queue is None:
            return
        for row in self._all(_EXECUTION + " JOIN queue q ON q.execution_id = e.id"):
            if row[0] not in self._queue:
                self._queue.add(self._remember(_execution(row)))

    def _run_archived(self, run_external_id: str) -> bool:
        """A row of this run is missing: if the run itself is, copy it forward."""
        if self._archives is None:
            return False
        if self._one("SELECT 1 FROM runs WHERE external_id = ?", run_external_id) is not None:
            return False
        return self._copied_forward(run_external_id)

    def _remember(self, execution: model.Execution) -> model.Execution:
        if len(self._executions) >= _CACHE_LIMIT:
            self._executions.clear()
            self._by_external_id.clear()
        self._executions[execution.id] = execution
        self._by_external_id[execution.external_id] = execution
        return execution

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

    def workspace_chain(self, workspace_id: int) -> list[int]:
        chain: list[int] = []
        current: int | None = workspace_id
        while current is not None and current not in chain:
            chain.append(current)
            row = self._one("SELECT base_id FROM workspaces WHERE id = ?", current)
            current = row[0] if row else None
        return chain

    def workspace(self, workspace_id: int) -> ports.WorkspaceRow:
        row = _workspace(
            self._one(
                "SELECT id, external_id, name, base_id, state FROM workspaces WHERE id = ?",
                workspace_id,
            )
        )
        assert row is not None
        return row

    def update_workspace(self, workspace_id: int, name: str, base_id: int | None) -> None:
        self._db.execute(
            "UPDATE workspaces SET name = ?, base_id = ? WHERE id = ?",
            (name, base_id, workspace_id),
        )

    def set_workspace_state(self, workspace_id: int, state: model.WorkspaceState) -> None:
        self._db.execute("UPDATE workspaces SET state = ? WHERE id = ?", (int(state), workspace_id))

    def workspace_dependants(self, workspace_id: int) -> list[int]:
        return [
            row[0]
            for row in self._all(
                "SELECT id FROM workspaces WHERE base_id = ? AND state != 2 ORDER BY id",
                workspace_id,
            )
        ]

    def live_executions_in_workspace(self, workspace_id: int) -> list[int]:
        return [
            row[0]
            for row in self._all(
                "SELECT e.id FROM executions e WHERE e.workspace_id = ? AND e.live IS NOT NULL"
                " ORDER BY e.id",
                workspace_id,
            )
        ]

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
        """Make ``workflows`` the module's manifest; an identical one writes nothing, so
        its registration time stays that of the first registration (item 77)."""
        rows = {target: _dumps(definition) for target, definition in sorted(workflows.items())}
        current = dict(
            self._all(
                "SELECT target, definition FROM manifests WHERE workspace_id = ? AND module = ?"
                " ORDER BY target",
                workspace_id,
                module,
            )
        )
        tombstoned = (
            self._one(
                "SELECT 1 FROM module_tombstones WHERE workspace_id = ? AND module = ?",
                workspace_id,
                module,
            )
            is not None
        )
        if current == rows and (bool(rows) or tombstoned):
            return
        self._db.execute(
            "DELETE FROM manifests WHERE workspace_id = ? AND module = ?", (workspace_id, module)
        )
        self._db.executemany(
            "INSERT INTO manifests (workspace_id, module, target, definition, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [(workspace_id, module, target, text, now) for target, text in rows.items()],
        )
        if workflows:
            self._db.execute(
                "DELETE FROM module_tombstones WHERE workspace_id = ? AND module = ?",
                (workspace_id, module),
            )
        else:
            self._db.execute(
                "INSERT OR REPLACE INTO module_tombstones (workspace_id, module, created_at)"
                " VALUES (?, ?, ?)",
                (workspace_id, module, now),
            )

    # --- Runs, steps, executions ---------------------------------------------------------

    def run_by_external_id(self, external_id: str) -> int | None:
        row = self._one("SELECT id FROM runs WHERE external_id = ?", external_id)
        if row is None and self._copied_forward(external_id):
            row = self._one("SELECT id FROM runs WHERE external_id = ?", external_id)
        return None if row is None else int(row[0])

    def run_by_idempotency_key(self, key: str, since: int) -> str | None:
        row = self._one(
            "SELECT external_id FROM runs WHERE idempotency_key = ? AND created_at >= ?"
            " ORDER BY created_at DESC LIMIT 1",
            key,
            since,
        )
        if row is None and self._archives is not None:
            return self._archives.idempotent_run(key, since)  # read-only, no copy
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
        run_id = int(cursor.lastrowid or 0)
        if len(self._run_ids) >= _CACHE_LIMIT:
            self._run_ids.clear()
        self._run_ids[run_id] = external_id
        return run_id

    def _run(self, run_id: int) -> tuple[model.TagSet, bool]:
        cached = self._runs.get(run_id)
        if cached is None:
            requires, memo = self._one("SELECT requires, memo FROM runs WHERE id = ?", run_id)
            cached = _bounded(self._runs)[run_id] = (json.loads(requires), bool(memo))
        return cached

    def run_memo(self, run_id: int) -> bool:
        return self._run(run_id)[1]

    def run_requires(self, run_id: int) -> model.TagSet:
        return dict(self._run(run_id)[0])

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
        cache_key: str | None = None,
        memo_key: str | None = None,
        defer_key: str | None = None,
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO steps (run_id, number, parent_execution_id, module, target, type,"
            " options, arguments, created_at, cache_key, memo_key, defer_key)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                cache_key,
                memo_key,
                defer_key,
            ),
        )
        step_id = int(cursor.lastrowid or 0)
        _bounded(self._options)[step_id] = options
        _bounded(self._arguments)[step_id] = arguments
        _bounded(self._next_numbers)[run_id] = max(self._next_numbers.get(run_id, 1), number + 1)
        run_external_id = self._run_ids.get(run_id)
        if run_external_id is not None:
            if len(self._steps) >= _CACHE_LIMIT:
                self._steps.clear()
            self._steps[step_id] = model.Execution(
                id=0,
                external_id=model.ExecutionId(""),
                run_id=run_id,
                run_external_id=model.RunId(run_external_id),
                step_id=step_id,
                step_number=number,
                attempt=0,
                workspace_id=0,
                module=module,
                target=target,
                type=type,
                parent_id=parent_execution_id,
                execute_after=None,
                created_at=created_at,
                cache_key=cache_key,
                defer_key=defer_key,
            )
        return step_id

    def next_step_number(self, run_id: int) -> int:
        cached = self._next_numbers.get(run_id)
        if cached is not None:
            return cached
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
        if row is None and self._run_archived(run_external_id):
            return self.step_by_number(run_external_id, number)
        return None if row is None else int(row[0])

    def step_options(self, step_id: int) -> model.StepOptions:
        options = self._options.get(step_id)
        if options is None:
            (text,) = self._one("SELECT options FROM steps WHERE id = ?", step_id)
            options = _bounded(self._options)[step_id] = options_from_json(text)
        return options

    def step_arguments(self, step_id: int) -> list[model.Value]:
        cached = self._arguments.get(step_id)
        if cached is not None:
            return list(cached)
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
        if len(self._unwaited) >= _CACHE_LIMIT:
            self._unwaited.clear()
        self._unwaited.add(execution_id)
        step = self._steps.get(step_id)
        if step is not None:
            execution = self._remember(
                dataclasses.replace(
                    step,
                    id=execution_id,
                    external_id=model.ExecutionId(
                        f"{step.run_external_id}:{step.step_number}:{attempt}"
                    ),
                    attempt=attempt,
                    workspace_id=workspace_id,
                    execute_after=execute_after,
                    created_at=created_at,
                )
            )
        else:
            execution = self.execution(execution_id)
        if self._queue is not None:
            self._queue.add(execution)
        return execution_id

    def next_attempt(self, step_id: int) -> int:
        (attempt,) = self._one(
            "SELECT coalesce(max(attempt), 0) + 1 FROM executions WHERE step_id = ?", step_id
        )
        return int(attempt)

    def execution(self, execution_id: int) -> model.Execution:
        cached = self._executions.get(execution_id)
        if cached is not None:
            return cached
        return self._remember(_execution(self._one(_EXECUTION + " WHERE e.id = ?", execution_id)))

    def execution_by_external_id(self, external_id: str) -> model.Execution | None:
        cached = self._by_external_id.get(external_id)
        if cached is not None:
            return cached
        parsed = model.parse_execution_id(external_id)
        if parsed is None:
            return None
        row = self._one(
            _EXECUTION + " WHERE r.external_id = ? AND s.number = ? AND e.attempt = ?", *parsed
        )
        if row is None and self._run_archived(parsed[0]):
            return self.execution_by_external_id(external_id)
        return None if row is None else self._remember(_execution(row))

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

    def queue(self) -> QueueIndex:
        if self._queue is None:
            self._queue = QueueIndex(
                (
                    self._remember(_execution(row))
                    for row in self._all(_EXECUTION + " JOIN queue q ON q.execution_id = e.id")
                ),
                requires=self._requires,
            )
        return self._queue

    def _requires(self, execution: model.Execution) -> model.TagSet:
        return model.merge_requires(
            self.run_requires(execution.run_id), self.step_options(execution.step_id).requires
        )

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

    def insert_metric_definition(
        self, execution_id: int, key: str, definition: dict[str, Any], now: int
    ) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO metric_definitions (execution_id, key, definition, created_at)"
            " VALUES (?, ?, ?, ?)",
            (execution_id, key, _dumps(definition), now),
        )
        return cursor.rowcount > 0

    def insert_dependency(self, execution_id: int, dependency_id: int, now: int) -> bool:
        self._unwaited.discard(execution_id)
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO dependencies (execution_id, dependency_id, created_at)"
            " VALUES (?, ?, ?)",
            (execution_id, dependency_id, now),
        )
        return cursor.rowcount > 0

    def dependencies(self, execution_id: int) -> list[int]:
        if execution_id in self._unwaited:
            return []
        return [
            row[0]
            for row in self._all(
                "SELECT dependency_id FROM dependencies WHERE execution_id = ?", execution_id
            )
        ]

    def find_reusable(
        self,
        *,
        workspaces: list[int],
        cache_key: str | None = None,
        memo_key: str | None = None,
        run_id: int | None = None,
        exclude_step: int | None = None,
        succeeded_since: int | None = None,
    ) -> int | None:
        if not workspaces:
            return None
        if cache_key is not None:
            key, args = "s.cache_key = ? AND s.id != ?", [cache_key, exclude_step or 0]
        else:
            key, args = "s.memo_key = ? AND s.run_id = ?", [memo_key, run_id]
        sql = _REUSABLE.format(key=key, workspaces=",".join("?" * len(workspaces)))
        row = self._one(sql, *args, *workspaces, succeeded_since, succeeded_since)
        if row is None and cache_key is not None and self._archives is not None:
            # A hit in an archived epoch: its run is copied forward so the hit can link to it.
            names = [self.workspace_external_id(w) for w in workspaces]
            if self._archives.copy_cached(self._db, cache_key, names, succeeded_since):
                self._resync_queue()
                row = self._one(sql, *args, *workspaces, succeeded_since, succeeded_since)
        return None if row is None else int(row[0])

    # --- Outcomes -----------------------------------------------------------------------

    def insert_assignment(self, execution_id: int, session_id: int, now: int) -> None:
        self._db.execute(
            "INSERT INTO assignments (execution_id, session_id, assigned_at) VALUES (?, ?, ?)",
            (execution_id, session_id, now),
        )
        self._db.execute("DELETE FROM queue WHERE execution_id = ?", (execution_id,))
        if self._queue is not None:
            self._queue.discard(execution_id)

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
        value_json = None if value is None else _dumps(value)
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO results (execution_id, value, error, retryable, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                execution_id,
                value_json,
                _error_json(error),
                None if retryable is None else int(retryable),
                created_at,
            ),
        )
        if cursor.rowcount == 1:
            if value_json is not None and len(value_json) > _CACHED_VALUE_LIMIT:
                self._results.pop(execution_id, None)
            else:
                row = ports.ResultRow(value=value, error=error, retryable=retryable)
                _bounded(self._results)[execution_id] = row

    def result(self, execution_id: int) -> ports.ResultRow | None:
        if execution_id in self._results:
            return self._results[execution_id]
        row = self._one(
            "SELECT value, error, retryable FROM results WHERE execution_id = ?", execution_id
        )
        if row is None:
            _bounded(self._results)[execution_id] = None
            return None
        result = ports.ResultRow(
            value=None if row[0] is None else json.loads(row[0]),
            error=None if row[1] is None else model.ErrorInfo(**json.loads(row[1])),
            retryable=None if row[2] is None else bool(row[2]),
        )
        if row[0] is None or len(row[0]) <= _CACHED_VALUE_LIMIT:
            _bounded(self._results)[execution_id] = result
        return result

    def insert_completion(
        self,
        execution_id: int,
        kind: model.Completion,
        successor_id: int | None,
        now: int,
        created_by: commands.Principal = None,
    ) -> None:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO completions (execution_id, kind, successor_id, created_at,"
            " created_by) VALUES (?, ?, ?, ?, ?)",
            (execution_id, int(kind), successor_id, now, _dumps(created_by)),
        )
        if cursor.rowcount == 1:
            _bounded(self._completions)[execution_id] = (kind, successor_id)
            self._db.execute("UPDATE executions SET live = NULL WHERE id = ?", (execution_id,))
        self._db.execute("DELETE FROM queue WHERE execution_id = ?", (execution_id,))
        if self._queue is not None:
            self._queue.discard(execution_id)

    def completion(self, execution_id: int) -> tuple[model.Completion, int | None] | None:
        if execution_id in self._completions:
            return self._completions[execution_id]
        row = self._one(
            "SELECT kind, successor_id FROM completions WHERE execution_id = ?", execution_id
        )
        completion = None if row is None else (model.Completion(row[0]), row[1])
        _bounded(self._completions)[execution_id] = completion
        return completion

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

    # --- Inputs ------------------------------------------------------------------------------

    def insert_input(
        self,
        *,
        run_id: int,
        workspace_id: int,
        key: str | None,
        prompt: inputs.Prompt,
        title: str | None,
        actions: Any,
        initial: Any,
        has_initial: bool,
        created_at: int,
    ) -> ports.InputRow:
        (number,) = self._one(
            "SELECT coalesce(max(number), 0) + 1 FROM inputs WHERE run_id = ?", run_id
        )
        cursor = self._db.execute(
            "INSERT INTO inputs (run_id, number, workspace_id, key, template, placeholders,"
            " schema, title, actions, initial, requires, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                number,
                workspace_id,
                key,
                prompt.template,
                _dumps(prompt.placeholders),
                prompt.schema,
                title,
                None if actions is None else _dumps(actions),
                _dumps(initial) if has_initial else None,
                _dumps(prompt.requires),
                created_at,
            ),
        )
        return self.input(int(cursor.lastrowid or 0))

    def input(self, input_id: int) -> ports.InputRow:
        return _input(self._one(_INPUT + " WHERE i.id = ?", input_id))

    def input_by_external_id(self, external_id: str) -> ports.InputRow | None:
        parsed = model.parse_input_id(external_id)
        if parsed is None:
            return None
        row = self._one(_INPUT + " WHERE r.external_id = ? AND i.number = ?", *parsed)
        if row is None and self._run_archived(parsed[0]):
            return self.input_by_external_id(external_id)
        return None if row is None else _input(row)

    def input_by_key(self, run_id: int, key: str, workspaces: list[int]) -> ports.InputRow | None:
        if not workspaces:
            return None
        row = self._one(
            _INPUT + " WHERE i.run_id = ? AND i.key = ?"
            f" AND i.workspace_id IN ({','.join('?' * len(workspaces))})"
            " ORDER BY i.number DESC LIMIT 1",
            run_id,
            key,
            *workspaces,
        )
        return None if row is None else _input(row)

    def insert_execution_input(self, execution_id: int, input_id: int, now: int) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO execution_inputs (execution_id, input_id, created_at)"
            " VALUES (?, ?, ?)",
            (execution_id, input_id, now),
        )
        return cursor.rowcount > 0

    def insert_input_response(
        self,
        input_id: int,
        kind: inputs.Response,
        value: Any,
        now: int,
        principal: commands.Principal,
    ) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO input_responses (input_id, type, value, created_at, created_by)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                input_id,
                int(kind),
                _dumps(value) if kind is inputs.Response.VALUE else None,
                now,
                _dumps(principal),
            ),
        )

    def input_response(self, input_id: int) -> tuple[inputs.Response, Any] | None:
        row = self._one("SELECT type, value FROM input_responses WHERE input_id = ?", input_id)
        if row is None:
            return None
        return inputs.Response(row[0]), None if row[1] is None else json.loads(row[1])

    def insert_input_dependency(self, execution_id: int, input_id: int, now: int) -> bool:
        self._unwaited.discard(execution_id)
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO input_dependencies (execution_id, input_id, created_at)"
            " VALUES (?, ?, ?)",
            (execution_id, input_id, now),
        )
        return cursor.rowcount > 0

    def input_dependencies(self, execution_id: int) -> list[int]:
        if execution_id in self._unwaited:
            return []
        return [
            row[0]
            for row in self._all(
                "SELECT input_id FROM input_dependencies WHERE execution_id = ?", execution_id
            )
        ]

    def input_dependants(self, input_id: int) -> list[int]:
        return [
            row[0]
            for row in self._all(
                "SELECT execution_id FROM input_dependencies WHERE input_id = ?"
                " UNION SELECT execution_id FROM execution_inputs WHERE input_id = ?",
                input_id,
                input_id,
            )
        ]

    # --- Assets ------------------------------------------------------------------------------

    def asset_by_hash(self, content_hash: str) -> assets.Asset | None:
        return _asset(
            self._one(
                "SELECT id, external_id, name, entries FROM assets WHERE hash = ?", content_hash
            )
        )

    def asset_by_external_id(self, external_id: str) -> assets.Asset | None:
        sql = "SELECT id, external_id, name, entries FROM assets WHERE external_id = ?"
        row = self._one(sql, external_id)
        archives = self._archives
        if row is None and archives is not None and archives.copy_asset(self._db, external_id):
            row = self._one(sql, external_id)
        return _asset(row)

    def insert_asset(
        self,
        external_id: str,
        content_hash: str,
        name: str | None,
        entries: assets.Entries,
        now: int,
    ) -> assets.Asset:
        asset = assets.Asset(id=0, external_id=external_id, name=name, entries=entries)
        cursor = self._db.execute(
            "INSERT INTO assets (external_id, hash, name, entries, total_count, total_size,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                external_id,
                content_hash,
                name,
                _dumps(entries),
                asset.total_count,
                asset.total_size,
                now,
            ),
        )
        return dataclasses.replace(asset, id=int(cursor.lastrowid or 0))

    def insert_execution_asset(self, execution_id: int, asset_id: int, now: int) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO execution_assets (execution_id, asset_id, created_at)"
            " VALUES (?, ?, ?)",
            (execution_id, asset_id, now),
        )
        return cursor.rowcount > 0

    def insert_asset_dependency(self, execution_id: int, asset_id: int, now: int) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO asset_dependencies (execution_id, asset_id, created_at)"
            " VALUES (?, ?, ?)",
            (execution_id, asset_id, now),
        )
        return cursor.rowcount > 0

    # --- Checkpoints ---------------------------------------------------------------------------

    def checkpoint_rows(self, execution_id: int) -> dict[str, model.Value | None]:
        return {
            name: None if value is None else json.loads(value)
            for name, value in self._all(
                "SELECT name, value FROM checkpoints WHERE execution_id = ? ORDER BY name",
                execution_id,
            )
        }

    def checkpoint_source(self, step_id: int, workspace_id: int, below: int) -> int | None:
        row = self._one(
            "SELECT e.id FROM executions e WHERE e.step_id = ? AND +e.workspace_id = ?"
            " AND e.attempt < ? AND EXISTS (SELECT 1 FROM checkpoints c WHERE c.execution_id = e.id)"
            " ORDER BY e.attempt DESC LIMIT 1",
            step_id,
            workspace_id,
            below,
        )
        return None if row is None else int(row[0])

    def put_checkpoints(
        self, execution_id: int, rows: dict[str, model.Value | None], now: int
    ) -> None:
        self._db.executemany(
            "INSERT INTO checkpoints (execution_id, name, value, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (execution_id, name) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at",
            [
                (execution_id, name, None if value is None else _dumps(value), now)
                for name, value in rows.items()
            ],
        )

    # --- Streams ----------------------------------------------------------------------------------

    def stream(self, stream_id: int) -> ports.StreamRow:
        return _stream(self._one(_STREAM + " WHERE st.id = ?", stream_id))

    def stream_by_external_id(self, external_id: str) -> ports.StreamRow | None:
        parsed = model.parse_stream_id(external_id)
        if parsed is None:
            return None
        row = self._one(
            _STREAM + " WHERE r.external_id = ? AND s.number = ? AND st.number = ?", *parsed
        )
        if row is None and self._run_archived(parsed[0]):
            return self.stream_by_external_id(external_id)
        return None if row is None else _stream(row)

    def stream_by_step(self, step_id: int, index: int) -> ports.StreamRow | None:
        row = self._one(_STREAM + " WHERE st.step_id = ? AND st.number = ?", step_id, index)
        return None if row is None else _stream(row)

    def stream_registered_at(self, execution_id: int, position: int) -> ports.StreamRow | None:
        row = self._one(
            _STREAM + " JOIN stream_registrations g ON g.stream_id = st.id"
            " WHERE g.execution_id = ? AND g.position = ?",
            execution_id,
            position,
        )
        return None if row is None else _stream(row)

    def paused_stream(self, step_id: int, workspace_id: int, position: int) -> int | None:
        # Open, and its latest registrant (highest attempt) registered it at this
        # position and then suspended.
        row = self._one(
            "SELECT st.id FROM streams st"
            " JOIN stream_registrations g ON g.stream_id = st.id"
            " JOIN executions e ON e.id = g.execution_id"
            " JOIN completions c ON c.execution_id = e.id AND c.kind = ?"
            " WHERE st.step_id = ? AND st.workspace_id = ? AND g.position = ?"
            " AND NOT EXISTS (SELECT 1 FROM stream_closures x WHERE x.stream_id = st.id)"
            " AND e.attempt = (SELECT max(e2.attempt) FROM stream_registrations g2"
            "   JOIN executions e2 ON e2.id = g2.execution_id WHERE g2.stream_id = st.id)"
            " ORDER BY st.number DESC LIMIT 1",
            int(model.Completion.SUSPENDED),
            step_id,
            workspace_id,
            position,
        )
        return None if row is None else int(row[0])

    def next_stream_number(self, step_id: int) -> int:
        (number,) = self._one(
            "SELECT coalesce(max(number), -1) + 1 FROM streams WHERE step_id = ?", step_id
        )
        return int(number)

    def insert_stream(self, step_id: int, workspace_id: int, number: int, now: int) -> int:
        cursor = self._db.execute(
            "INSERT INTO streams (step_id, workspace_id, number, created_at) VALUES (?, ?, ?, ?)",
            (step_id, workspace_id, number, now),
        )
        return int(cursor.lastrowid or 0)

    def insert_stream_registration(
        self,
        stream_id: int,
        execution_id: int,
        position: int,
        buffer: int | None,
        timeout_ms: int | None,
        now: int,
    ) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO stream_registrations (stream_id, execution_id, position,"
            " buffer, timeout_ms, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (stream_id, execution_id, position, buffer, timeout_ms, now),
        )

    def stream_registered_by(self, stream_id: int, execution_id: int) -> bool:
        return (
            self._one(
                "SELECT 1 FROM stream_registrations WHERE stream_id = ? AND execution_id = ?",
                stream_id,
                execution_id,
            )
            is not None
        )

    def stream_head(self, stream_id: int) -> int:
        (head,) = self._one(
            "SELECT coalesce(max(sequence), -1) FROM stream_items WHERE stream_id = ?", stream_id
        )
        return int(head)

    def insert_stream_item(
        self, stream_id: int, sequence: int, value: model.Value, execution_id: int, now: int
    ) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO stream_items (stream_id, sequence, value, execution_id,"
            " created_at) VALUES (?, ?, ?, ?, ?)",
            (stream_id, sequence, _dumps(value), execution_id, now),
        )
        return cursor.rowcount > 0

    def stream_items(
        self, stream_id: int, from_sequence: int, limit: int
    ) -> list[tuple[int, model.Value]]:
        return [
            (row[0], json.loads(row[1]))
            for row in self._all(
                "SELECT sequence, value FROM stream_items WHERE stream_id = ? AND sequence >= ?"
                " ORDER BY sequence LIMIT ?",
                stream_id,
                from_sequence,
                limit,
            )
        ]

    def stream_closure(self, stream_id: int) -> ports.StreamClosure | None:
        row = self._one(
            "SELECT reason, label, error, execution_id FROM stream_closures WHERE stream_id = ?",
            stream_id,
        )
        if row is None:
            return None
        return ports.StreamClosure(
            reason=row[0],
            label=row[1],
            error=None if row[2] is None else json.loads(row[2]),
            execution_id=row[3],
        )

    def insert_stream_closure(
        self,
        stream_id: int,
        reason: int,
        label: str,
        error: model.ErrorInfo | None,
        execution_id: int | None,
        now: int,
    ) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO stream_closures (stream_id, reason, label, error,"
            " execution_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (stream_id, int(reason), label, _error_json(error), execution_id, now),
        )
        return cursor.rowcount > 0

    def open_streams(self, step_id: int, workspace_id: int) -> list[int]:
        return [
            row[0]
            for row in self._all(
                "SELECT st.id FROM streams st WHERE st.step_id = ? AND st.workspace_id = ?"
                " AND NOT EXISTS (SELECT 1 FROM stream_closures x WHERE x.stream_id = st.id)"
                " ORDER BY st.number",
                step_id,
                workspace_id,
            )
        ]

    def open_streams_registered_by(self, execution_id: int) -> list[int]:
        return [
            row[0]
            for row in self._all(
                "SELECT g.stream_id FROM stream_registrations g WHERE g.execution_id = ?"
                " AND NOT EXISTS (SELECT 1 FROM stream_closures x WHERE x.stream_id = g.stream_id)"
                " ORDER BY g.position",
                execution_id,
            )
        ]

    def own_stream_closures(self, execution_id: int) -> list[int]:
        return [
            row[0]
            for row in self._all(
                "SELECT reason FROM stream_closures WHERE execution_id = ? AND reason != ?",
                execution_id,
                2,  # lifecycle closes are the server's, not the execution's
            )
        ]

    def insert_stream_dependency(self, execution_id: int, stream_id: int, now: int) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO stream_dependencies (execution_id, stream_id, created_at)"
            " VALUES (?, ?, ?)",
            (execution_id, stream_id, now),
        )
        return cursor.rowcount > 0

    def insert_stream_wait(
        self, execution_id: int, stream_id: int, sequence: int, now: int
    ) -> None:
        self._unwaited.discard(execution_id)
        self._db.execute(
            "INSERT OR REPLACE INTO stream_waits (execution_id, stream_id, sequence, created_at)"
            " VALUES (?, ?, ?, ?)",
            (execution_id, stream_id, sequence, now),
        )

    def stream_waits(self, execution_id: int) -> list[tuple[int, int]]:
        if execution_id in self._unwaited:
            return []
        return [
            (row[0], row[1])
            for row in self._all(
                "SELECT stream_id, sequence FROM stream_waits WHERE execution_id = ?",
                execution_id,
            )
        ]

    def live_stream_waits(self, stream_id: int) -> list[int]:
        return [
            row[0]
            for row in self._all(
                "SELECT w.sequence FROM stream_waits w"
                " LEFT JOIN completions c ON c.execution_id = w.execution_id"
                " WHERE w.stream_id = ? AND c.execution_id IS NULL",
                stream_id,
            )
        ]

    def live_producers(self) -> list[tuple[int, int, int]]:
        """(stream, producer, buffer) of open streams whose latest registrant is live and
        registered with a bounded buffer."""
        return [
            (row[0], row[1], row[2])
            for row in self._all(
                "SELECT g.stream_id, g.execution_id, g.buffer FROM stream_registrations g"
                " JOIN executions e ON e.id = g.execution_id"
                " WHERE g.buffer IS NOT NULL"
                " AND NOT EXISTS (SELECT 1 FROM stream_closures x WHERE x.stream_id = g.stream_id)"
                " AND NOT EXISTS (SELECT 1 FROM completions c WHERE c.execution_id = e.id)"
                " AND e.attempt = (SELECT max(e2.attempt) FROM stream_registrations g2"
                "   JOIN executions e2 ON e2.id = g2.execution_id WHERE g2.stream_id = g.stream_id)"
                " ORDER BY g.stream_id"
            )
        ]

    # --- Pools and workers -------------------------------------------------------------------
    # Pools are an append-only history per (workspace, name); definitions and launchers are
    # content-addressed. A worker is live until it has a deactivation row.

    _POOL = (
        "SELECT p.id, p.workspace_id, p.name, d.hash, d.modules, d.provides, d.accepts,"
        " l.type, l.config FROM pools p"
        " LEFT JOIN pool_definitions d ON d.id = p.definition_id"
        " LEFT JOIN launchers l ON l.id = d.launcher_id"
    )

    @staticmethod
    def _pool_row(row: tuple[Any, ...]) -> ports.PoolRow:
        pool = None
        if row[3] is not None:
            launcher = None if row[7] is None else {"type": row[7], **json.loads(row[8])}
            pool = pools.Pool(
                modules=tuple(json.loads(row[4])),
                provides=json.loads(row[5]),
                accepts=json.loads(row[6]),
                launcher=launcher,
            )
        return ports.PoolRow(
            id=row[0], workspace_id=row[1], name=row[2], pool=pool, definition_hash=row[3]
        )

    def current_pools(self, workspace_id: int | None = None) -> list[ports.PoolRow]:
        """The newest row of every pool that is not deleted (of one workspace, or all)."""
        where = "" if workspace_id is None else " AND p.workspace_id = ?"
        args = () if workspace_id is None else (workspace_id,)
        return [
            self._pool_row(row)
            for row in self._all(
                self._POOL + " WHERE p.definition_id IS NOT NULL AND p.id = (SELECT max(q.id)"
                " FROM pools q WHERE q.workspace_id = p.workspace_id AND q.name = p.name)"
                + where
                + " ORDER BY p.workspace_id, p.name",
                *args,
            )
        ]

    def pool_row(self, pool_id: int) -> ports.PoolRow:
        return self._pool_row(self._one(self._POOL + " WHERE p.id = ?", pool_id))

    def pool_external_id_used(self, external_id: str) -> int | None:
        row = self._one("SELECT id FROM pools WHERE external_id = ?", external_id)
        return None if row is None else int(row[0])

    def _launcher_id(self, launcher: dict[str, Any]) -> int:
        digest = pools.launcher_hash(launcher)
        row = self._one("SELECT id FROM launchers WHERE hash = ?", digest)
        if row is not None:
            return int(row[0])
        config = {key: value for key, value in launcher.items() if key != "type"}
        cursor = self._db.execute(
            "INSERT INTO launchers (hash, type, config) VALUES (?, ?, ?)",
            (digest, launcher["type"], _dumps(config)),
        )
        return int(cursor.lastrowid or 0)

    def _definition_id(self, pool: pools.Pool) -> int:
        digest = pools.definition_hash(pool)
        row = self._one("SELECT id FROM pool_definitions WHERE hash = ?", digest)
        if row is not None:
            return int(row[0])
        launcher_id = None if pool.launcher is None else self._launcher_id(pool.launcher)
        cursor = self._db.execute(
            "INSERT INTO pool_definitions (hash, launcher_id, provides, accepts, modules)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                digest,
                launcher_id,
                _dumps(pool.provides),
                _dumps(pool.accepts),
                _dumps(list(pool.modules)),
            ),
        )
        return int(cursor.lastrowid or 0)

    def insert_pool(
        self,
        *,
        external_id: str,
        workspace_id: int,
        name: str,
        pool: pools.Pool | None,
        created_at: int,
        created_by: commands.Principal,
    ) -> int:
        definition_id = None if pool is None else self._definition_id(pool)
        cursor = self._db.execute(
            "INSERT INTO pools (external_id, workspace_id, name, definition_id, created_at,"
            " created_by) VALUES (?, ?, ?, ?, ?, ?)",
            (external_id, workspace_id, name, definition_id, created_at, _dumps(created_by)),
        )
        return int(cursor.lastrowid or 0)

    def disabled_pools(self) -> set[tuple[int, str]]:
        return {
            (row[0], row[1])
            for row in self._all(
                "SELECT s.workspace_id, s.name FROM pool_states s WHERE s.state = 1"
                " AND s.id = (SELECT max(t.id) FROM pool_states t"
                " WHERE t.workspace_id = s.workspace_id AND t.name = s.name)"
            )
        }

    def insert_pool_state(
        self,
        workspace_id: int,
        name: str,
        disabled: bool,
        now: int,
        principal: commands.Principal,
    ) -> None:
        self._db.execute(
            "INSERT INTO pool_states (workspace_id, name, state, created_at, created_by)"
            " VALUES (?, ?, ?, ?, ?)",
            (workspace_id, name, int(disabled), now, _dumps(principal)),
        )

    def worker_external_id_used(self, external_id: str) -> int | None:
        row = self._one("SELECT id FROM workers WHERE external_id = ?", external_id)
        return None if row is None else int(row[0])

    def insert_worker(
        self, *, external_id: str, pool_id: int, session_id: int, created_at: int
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO workers (external_id, pool_id, session_id, created_at)"
            " VALUES (?, ?, ?, ?)",
            (external_id, pool_id, session_id, created_at),
        )
        return int(cursor.lastrowid or 0)

    def insert_launch_result(
        self, worker_id: int, data: dict[str, Any] | None, error: str | None, now: int
    ) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO worker_launch_results (worker_id, data, error, created_at)"
            " VALUES (?, ?, ?, ?)",
            (worker_id, None if data is None else _dumps(data), error, now),
        )

    def insert_worker_state(
        self, worker_id: int, state: pools.WorkerState, now: int, principal: commands.Principal
    ) -> None:
        self._db.execute(
            "INSERT INTO worker_states (worker_id, state, created_at, created_by)"
            " VALUES (?, ?, ?, ?)",
            (worker_id, int(state), now, _dumps(principal)),
        )

    def insert_worker_stop(self, worker_id: int, now: int) -> int:
        cursor = self._db.execute(
            "INSERT INTO worker_stops (worker_id, created_at) VALUES (?, ?)", (worker_id, now)
        )
        return int(cursor.lastrowid or 0)

    def insert_worker_stop_result(self, worker_id: int, error: str | None, now: int) -> None:
        """The result of the worker's latest stop (once)."""
        self._db.execute(
            "INSERT OR IGNORE INTO worker_stop_results (stop_id, error, created_at)"
            " SELECT max(id), ?, ? FROM worker_stops WHERE worker_id = ? HAVING max(id) IS NOT NULL",
            (error, now, worker_id),
        )

    def insert_worker_deactivation(
        self, worker_id: int, error: str | None, logs: str | None, now: int
    ) -> None:
        log_id = None
        if logs:
            digest = hashlib.sha256(logs.encode()).hexdigest()
            self._db.execute(
                "INSERT OR IGNORE INTO worker_logs (hash, content) VALUES (?, ?)", (digest, logs)
            )
            (log_id,) = self._one("SELECT id FROM worker_logs WHERE hash = ?", digest)
        self._db.execute(
            "INSERT OR IGNORE INTO worker_deactivations (worker_id, error, log_id, created_at)"
            " VALUES (?, ?, ?, ?)",
            (worker_id, error, log_id, now),
        )

    def live_workers(self) -> list[ports.WorkerRow]:
        rows = self._all(
            "SELECT w.id, w.external_id, w.pool_id,"
            " CASE WHEN s.expired_at IS NULL THEN w.session_id END, w.created_at,"
            " r.worker_id IS NOT NULL, r.data,"
            " (SELECT st.state FROM worker_states st WHERE st.worker_id = w.id"
            "  ORDER BY st.id DESC LIMIT 1),"
            " (SELECT x.id FROM worker_stops x WHERE x.worker_id = w.id"
            "  ORDER BY x.id DESC LIMIT 1)"
            " FROM workers w"
            " LEFT JOIN sessions s ON s.id = w.session_id"
            " LEFT JOIN worker_launch_results r ON r.worker_id = w.id"
            " WHERE NOT EXISTS (SELECT 1 FROM worker_deactivations d WHERE d.worker_id = w.id)"
            " ORDER BY w.id"
        )
        workers = []
        for row in rows:
            stop_id = row[8]
            stopped = stop_id is not None and (
                self._one("SELECT 1 FROM worker_stop_results WHERE stop_id = ?", stop_id)
                is not None
            )
            workers.append(
                ports.WorkerRow(
                    id=row[0],
                    external_id=row[1],
                    pool_id=row[2],
                    session_id=row[3],
                    created_at=row[4],
                    launched=bool(row[5]),
                    data=None if row[6] is None else json.loads(row[6]),
                    state=pools.WorkerState(row[7] or 0),
                    stopping=stop_id is not None and not stopped,
                    stopped=stopped,
                )
            )
        return workers
