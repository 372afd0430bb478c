"""Read models: the JSON values of topics, built from a project's store.

Manifests are inherited down the workspace tree: a workspace sees, for each module,
the definitions registered in the nearest workspace of its ancestry that registered
that module (a module registered empty or archived there hides its bases' module).
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from pycoflux.orchestration import checkpoints, inputs, lifecycle, model
from pycoflux.orchestration import pools as pool_model
from pycoflux.storage import orchestration, sqlite

_RESULT_TYPES = {
    model.Completion.ABANDONED: "abandoned",
    model.Completion.CRASHED: "crashed",
    model.Completion.TIMEOUT: "timeout",
    model.Completion.CANCELLED: "cancelled",
    model.Completion.SUSPENDED: "suspended",
    model.Completion.RECURRED: "recurred",
    model.Completion.DEFERRED: "deferred",
    model.Completion.CACHED: "cached",
    model.Completion.SPAWNED: "spawned",
}

STREAM_TAIL = 200


def _workspace_id(db: sqlite3.Connection, external_id: str) -> int | None:
    row = db.execute(
        "SELECT id FROM workspaces WHERE external_id = ? AND state != 2", (external_id,)
    ).fetchone()
    return None if row is None else int(row[0])


def encode_value(
    value: model.Value | None, db: sqlite3.Connection | None = None
) -> dict[str, Any] | None:
    """Worker-wire value -> topic/HTTP value (``server-api.md`` §8.4)."""
    if value is None:
        return None
    if value[0] == "raw":
        return {"type": "raw", "data": value[1], "references": _references(value[2], db)}
    return {
        "type": "blob",
        "key": value[1],
        "size": value[2],
        "references": _references(value[3], db),
    }


def _asset_summary(db: sqlite3.Connection | None, asset_id: str) -> dict[str, Any] | None:
    if db is None:
        return None
    row = db.execute(
        "SELECT name, entries, total_count, total_size FROM assets WHERE external_id = ?",
        (asset_id,),
    ).fetchone()
    if row is None:
        return None
    entries = json.loads(row[1])
    entry = None
    if len(entries) == 1:
        path, (blob_key, size, metadata) = next(iter(entries.items()))
        entry = {"path": path, "blobKey": blob_key, "size": size, "metadata": metadata}
    return {"name": row[0], "totalCount": row[2], "totalSize": row[3], "entry": entry}


def _references(
    references: list[list[Any]], db: sqlite3.Connection | None = None
) -> list[dict[str, Any]]:
    encoded: list[dict[str, Any]] = []
    for reference in references:
        kind = reference[0]
        if kind == "execution":
            module = reference[2] if len(reference) > 2 else None
            target = reference[3] if len(reference) > 3 else None
            if module is None and db is not None:
                summary = _summary_by_external_id(db, str(reference[1]))
                if summary is not None:
                    module, target = summary["module"], summary["target"]
            encoded.append(
                {
                    "type": "execution",
                    "executionId": reference[1],
                    "module": module,
                    "target": target,
                }
            )
        elif kind == "fragment":
            encoded.append(
                {
                    "type": "fragment",
                    "format": reference[1],
                    "blobKey": reference[2],
                    "size": reference[3],
                    "metadata": reference[4] if len(reference) > 4 else {},
                }
            )
        elif kind == "input":
            encoded.append({"type": "input", "inputId": reference[1]})
        elif kind == "asset":
            encoded.append(
                {
                    "type": "asset",
                    "assetId": reference[1],
                    "asset": _asset_summary(db, reference[1]),
                }
            )
    return encoded


def _frames(frames: list[list[Any]]) -> list[dict[str, Any]]:
    return [
        {
            "file": f[0],
            "line": f[1],
            "name": f[2] if len(f) > 2 else None,
            "code": f[3] if len(f) > 3 else None,
        }
        for f in frames
    ]


def _error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {
        "type": error["type"],
        "message": error["message"],
        "frames": _frames(error.get("frames") or []),
    }


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


_SUMMARY = (
    "SELECT r.external_id || ':' || s.number || ':' || e.attempt, s.module, s.target"
    " FROM executions e JOIN steps s ON s.id = e.step_id JOIN runs r ON r.id = s.run_id"
)


def _summary(db: sqlite3.Connection, execution_id: int) -> dict[str, Any] | None:
    row = db.execute(_SUMMARY + " WHERE e.id = ?", (execution_id,)).fetchone()
    return None if row is None else {"executionId": row[0], "module": row[1], "target": row[2]}


def _summary_by_external_id(db: sqlite3.Connection, external_id: str) -> dict[str, Any] | None:
    parsed = model.parse_execution_id(external_id)
    if parsed is None:
        return None
    row = db.execute(
        _SUMMARY + " WHERE r.external_id = ? AND s.number = ? AND e.attempt = ?", parsed
    ).fetchone()
    return None if row is None else {"executionId": row[0], "module": row[1], "target": row[2]}


# --- Workspaces and manifests ------------------------------------------------------------


def workspaces(db: sqlite3.Connection) -> dict[str, Any]:
    rows = db.execute(
        "SELECT w.external_id, w.name, b.external_id, w.state FROM workspaces w"
        " LEFT JOIN workspaces b ON b.id = w.base_id ORDER BY w.id"
    ).fetchall()
    return {
        row[0]: {"name": row[1], "baseId": row[2], "state": model.WorkspaceState(row[3]).label}
        for row in rows
    }


def _effective_manifests(
    db: sqlite3.Connection, workspace_id: int
) -> dict[str, dict[str, dict[str, Any]]]:
    """module -> target -> definition, inherited from the nearest workspace that has it."""
    store = orchestration.SqliteOrchestrationStore(db)
    result: dict[str, dict[str, dict[str, Any]]] = {}
    hidden: set[str] = set()
    for current in store.workspace_chain(workspace_id):
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for module, target, definition in db.execute(
            "SELECT module, target, definition FROM manifests WHERE workspace_id = ?"
            " ORDER BY module, target",
            (current,),
        ):
            found.setdefault(module, {})[target] = json.loads(definition)
        for module, targets in found.items():
            if module not in result and module not in hidden:
                result[module] = targets
        hidden |= {
            row[0]
            for row in db.execute(
                "SELECT module FROM module_tombstones WHERE workspace_id = ?", (current,)
            )
        }
    return dict(sorted(result.items()))


def manifests(db: sqlite3.Connection, workspace: str) -> dict[str, Any] | None:
    workspace_id = _workspace_id(db, workspace)
    if workspace_id is None:
        return None
    result: dict[str, Any] = {}
    for module, targets in _effective_manifests(db, workspace_id).items():
        for target, data in sorted(targets.items()):
            result.setdefault(module, {})[target] = {
                "parameters": data.get("parameters", []),
                "waitFor": data.get("waitFor", []),
                "cache": data.get("cache"),
                "defer": data.get("defer"),
                "delay": data.get("delay", 0),
                "retries": data.get("retries"),
                "requires": data.get("requires") or {},
                "streams": _streams_config(data.get("streams")),
            }
    return result


def _streams_config(streams_config: Any) -> dict[str, Any] | None:
    if not isinstance(streams_config, dict):
        return None
    return {"buffer": streams_config.get("buffer"), "timeoutMs": streams_config.get("timeout_ms")}


def workflow(
    db: sqlite3.Connection, workspace: str, module: str, target: str
) -> dict[str, Any] | None:
    workspace_id = _workspace_id(db, workspace)
    if workspace_id is None:
        return None
    data = _effective_manifests(db, workspace_id).get(module, {}).get(target)
    # Newest first by the root step (``steps_roots``), created with its run at the same
    # time: the walk stops at the 50th run of the workspace instead of sorting them all.
    runs = db.execute(
        "SELECT r.external_id, r.created_at, r.created_by FROM steps s"
        " JOIN executions e ON e.step_id = s.id AND e.attempt = 1"
        " JOIN runs r ON r.id = s.run_id"
        " WHERE s.number = 1 AND s.module = ? AND s.target = ? AND e.workspace_id = ?"
        " ORDER BY s.created_at DESC, s.run_id DESC LIMIT 50",
        (module, target, workspace_id),
    ).fetchall()
    if data is None and not runs:
        return None
    value: dict[str, Any] = {
        "parameters": None,
        "instruction": None,
        "configuration": None,
        "runs": {r[0]: {"id": r[0], "createdAt": r[1], "createdBy": _loads(r[2])} for r in runs},
    }
    if data is not None:
        value["parameters"] = data.get("parameters", [])
        value["instruction"] = data.get("instruction")
        value["configuration"] = {
            "waitFor": data.get("waitFor", []),
            "cache": data.get("cache"),
            "defer": data.get("defer"),
            "delay": data.get("delay", 0),
            "retries": data.get("retries"),
            "recurrent": bool(data.get("recurrent")),
            "timeout": data.get("timeout") or 0,
            "requires": data.get("requires") or {},
            "memo": data.get("memo") or False,
            "streams": _streams_config(data.get("streams")),
        }
    return value


def modules(db: sqlite3.Connection, workspace: str) -> dict[str, Any] | None:
    workspace_id = _workspace_id(db, workspace)
    if workspace_id is None:
        return None
    value: dict[str, Any] = {}
    for module, targets in _effective_manifests(db, workspace_id).items():
        value[module] = {"workflows": {target: {"activeRuns": []} for target in sorted(targets)}}
    # From the workspace's live executions to their runs (``executions_live``).
    for run_id, module, target in db.execute(
        "SELECT DISTINCT r.external_id, s.module, s.target FROM executions e"
        " JOIN steps s2 ON s2.id = e.step_id JOIN runs r ON r.id = s2.run_id"
        " JOIN steps s ON s.run_id = r.id AND s.number = 1"
        " WHERE e.workspace_id = ? AND e.live IS NOT NULL"
        " ORDER BY r.external_id",
        (workspace_id,),
    ):
        workflows = value.get(module, {}).get("workflows", {})
        if target in workflows:
            workflows[target]["activeRuns"].append(run_id)
    return value


# --- Search --------------------------------------------------------------------------------

SEARCH_LIMIT = 20


def _search_score(words: list[str], parts: list[str]) -> float:
    """Product over words of the best ``len(word)/len(part)`` among parts it prefixes."""
    score = 1.0
    for word in words:
        score *= max((len(word) / len(part) for part in parts if part.startswith(word)), default=0)
    return score


def _pieces(name: str, separators: str) -> list[str]:
    pieces = [name]
    for separator in separators:
        pieces = [piece for chunk in pieces for piece in chunk.split(separator)]
    return [name, *(piece for piece in pieces if piece and piece != name)]


def search(db: sqlite3.Connection, workspace: str, query: str) -> list[dict[str, Any]] | None:
    """Modules and targets of a workspace matching ``query`` (server-api.md §4.8), best first."""
    workspace_id = _workspace_id(db, workspace)
    if workspace_id is None:
        return None
    words = query.split()
    if not words:
        return []
    targets: dict[tuple[str, str], dict[str, Any]] = {}
    for module, names in _effective_manifests(db, workspace_id).items():
        for name in names:
            targets[(module, name)] = {"type": "workflow", "run": None}
    # The latest step run of each target in this workspace (kept by a trigger, migration 7).
    for module, name, kind, run_id, number, attempt in db.execute(
        "SELECT s.module, s.target, s.type, r.external_id, s.number, e.attempt"
        " FROM latest_executions l JOIN executions e ON e.id = l.execution_id"
        " JOIN steps s ON s.id = e.step_id JOIN runs r ON r.id = s.run_id"
        " WHERE l.workspace_id = ?",
        (workspace_id,),
    ):
        targets[(module, name)] = {
            "type": "workflow" if kind == model.TargetType.WORKFLOW else "task",
            "run": {
                "runId": run_id,
                "stepId": f"{run_id}:{number}",
                "stepNumber": number,
                "attempt": attempt,
            },
        }
    matches: list[dict[str, Any]] = []
    for module in sorted({module for module, _ in targets}):
        score = _search_score(words, _pieces(module, "_."))
        if score > 0:
            matches.append({"type": "module", "name": module, "score": score})
    for (module, name), found in sorted(targets.items()):
        score = _search_score(words, [*_pieces(module, "_."), *_pieces(name, "_")])
        if score > 0:
            matches.append({**found, "module": module, "name": name, "score": score})
    matches.sort(key=lambda match: -match["score"])
    return matches[:SEARCH_LIMIT]


# --- Runs ----------------------------------------------------------------------------------


def _nested_result(db: sqlite3.Connection, execution_id: int, depth: int) -> dict[str, Any] | None:
    row = db.execute(
        "SELECT r.value, r.error, r.retryable, c.kind, c.successor_id"
        " FROM executions e LEFT JOIN results r ON r.execution_id = e.id"
        " LEFT JOIN completions c ON c.execution_id = e.id WHERE e.id = ?",
        (execution_id,),
    ).fetchone()
    value, error, retryable, kind, successor = row
    return _result(db, execution_id, value, error, retryable, kind, successor, depth)


def _result(
    db: sqlite3.Connection,
    execution_id: int,
    value: str | None,
    error: str | None,
    retryable: int | None,
    kind: int | None,
    successor: int | None,
    depth: int = 0,
) -> dict[str, Any] | None:
    """The run topic's result object for an execution (``server-api.md`` §8.5.6)."""
    successor_attempt = None
    successor_summary = None
    if successor is not None:
        row = db.execute(
            "SELECT e.attempt, e.step_id = (SELECT step_id FROM executions WHERE id = ?)"
            " FROM executions e WHERE e.id = ?",
            (execution_id, successor),
        ).fetchone()
        successor_attempt = row[0]
        successor_summary = _summary(db, successor)
    if kind is not None:
        completion = model.Completion(kind)
        if completion.is_handoff:
            nested = None
            if successor is not None and depth < 20:
                nested = _nested_result(db, successor, depth + 1)
            return {
                "type": _RESULT_TYPES[completion],
                "execution": successor_summary,
                "result": nested,
                "createdBy": None,
            }
        if completion in (model.Completion.SUSPENDED, model.Completion.RECURRED):
            return {
                "type": _RESULT_TYPES[completion],
                "successor": successor_attempt,
                "createdBy": None,
            }
        if (
            completion
            in (
                model.Completion.ABANDONED,
                model.Completion.CRASHED,
                model.Completion.TIMEOUT,
            )
            and value is None
        ):
            return {
                "type": _RESULT_TYPES[completion],
                "retry": successor_attempt,
                "createdBy": None,
            }
        if completion is model.Completion.CANCELLED and value is None:
            return {"type": "cancelled", "createdBy": _cancelled_by(db, execution_id)}
    if value is not None:
        return {"type": "value", "value": encode_value(json.loads(value), db), "createdBy": None}
    if error is not None and kind is not None:
        return {
            "type": "error",
            "error": _error(json.loads(error)),
            "retry": successor_attempt,
            "retryable": None if retryable is None else bool(retryable),
            "createdBy": None,
        }
    return None


def _cancelled_by(db: sqlite3.Connection, execution_id: int) -> Any:
    row = db.execute(
        "SELECT created_by FROM completions WHERE execution_id = ?", (execution_id,)
    ).fetchone()
    return None if row is None else _loads(row[0])


def _completion(
    db: sqlite3.Connection, kind: int | None, successor: int | None
) -> dict[str, Any] | None:
    if kind is None:
        return None
    summary = None if successor is None else _summary(db, successor)
    return {
        "kind": model.Completion(kind).name.lower(),
        "successor": None
        if summary is None
        else {"type": "execution", "id": summary["executionId"]},
    }


def _input_status(db: sqlite3.Connection, input_id: int) -> str | None:
    row = db.execute("SELECT type FROM input_responses WHERE input_id = ?", (input_id,)).fetchone()
    return None if row is None else inputs.Response(row[0]).label


# The tables holding the per-execution parts of the run topic, by the column naming the
# execution. Most runs have rows in few of them: ``_parts_present`` asks about all of them
# in one query, and the run topic skips the per-execution queries of the empty ones.
_PART_TABLES = {
    "execution_assets": "execution_id",
    "execution_inputs": "execution_id",
    "dependencies": "execution_id",
    "input_dependencies": "execution_id",
    "asset_dependencies": "execution_id",
    "stream_dependencies": "execution_id",
    "stream_registrations": "execution_id",
    "groups": "execution_id",
    "children": "parent_id",
    "metric_definitions": "execution_id",
    # Checkpoints are read across attempts of one step, so all within the run.
    "checkpoints": "execution_id",
}
_PARTS_QUERY = "SELECT " + ", ".join(
    f"EXISTS (SELECT 1 FROM steps s JOIN executions e ON e.step_id = s.id"
    f" JOIN {table} t ON t.{column} = e.id WHERE s.run_id = ?1)"
    for table, column in _PART_TABLES.items()
)


def _parts_present(db: sqlite3.Connection, run_id: int) -> frozenset[str]:
    """The tables of ``_PART_TABLES`` with a row for some execution of the run."""
    flags = db.execute(_PARTS_QUERY, (run_id,)).fetchone()
    return frozenset(table for table, flag in zip(_PART_TABLES, flags, strict=True) if flag)


def _rows(db: sqlite3.Connection, present: bool, sql: str, execution_id: int) -> Any:
    """The rows of a per-execution query, or none without asking when its table has none."""
    return db.execute(sql, (execution_id,)) if present else ()


class _Parts:
    """Which executions of a slice of steps have rows in each per-execution table.

    ``present`` says which tables hold rows for some execution of the run; for those,
    one query per table and slice finds the executions concerned, so an execution with
    none costs no query (a fan-out's root has thousands of children and dependencies,
    its children none). Checkpoints stay run-wide: an attempt reads an earlier one's.
    """

    def __init__(
        self, db: sqlite3.Connection, present: frozenset[str], execution_ids: list[int]
    ) -> None:
        self.present = present
        self._owners: dict[str, set[int]] = {}
        for table in present - {"checkpoints"}:
            column = _PART_TABLES[table]
            owners: set[int] = set()
            for chunk in sqlite.chunks(execution_ids):
                owners.update(
                    row[0]
                    for row in db.execute(
                        f"SELECT DISTINCT {column} FROM {table}"
                        f" WHERE {column} IN ({sqlite.marks(chunk)})",
                        chunk,
                    )
                )
            self._owners[table] = owners

    def has(self, table: str, execution_id: int) -> bool:
        return execution_id in self._owners.get(table, ())


def _execution_view(
    db: sqlite3.Connection,
    store: orchestration.SqliteOrchestrationStore,
    execution_id: int,
    run_id: str,
    step_number: int,
    parts: _Parts,
) -> dict[str, Any]:
    """The per-execution parts of the run topic beyond its scalar fields."""
    view: dict[str, Any] = {}
    view["assets"] = {
        asset_id: _asset_summary(db, asset_id)
        for (asset_id,) in _rows(
            db,
            parts.has("execution_assets", execution_id),
            "SELECT a.external_id FROM execution_assets x JOIN assets a ON a.id = x.asset_id"
            " WHERE x.execution_id = ? ORDER BY x.created_at, a.id",
            execution_id,
        )
    }
    view["inputs"] = {
        f"{run}/i{number}": {"title": title, "status": _input_status(db, input_id)}
        for input_id, run, number, title in _rows(
            db,
            parts.has("execution_inputs", execution_id),
            "SELECT i.id, r.external_id, i.number, i.title FROM execution_inputs x"
            " JOIN inputs i ON i.id = x.input_id JOIN runs r ON r.id = i.run_id"
            " WHERE x.execution_id = ? ORDER BY i.id",
            execution_id,
        )
    }
    dependencies: dict[str, Any] = {}
    for (dependency,) in _rows(
        db,
        parts.has("dependencies", execution_id),
        "SELECT dependency_id FROM dependencies WHERE execution_id = ? ORDER BY created_at",
        execution_id,
    ):
        summary = _summary(db, dependency)
        if summary is not None:
            dependencies[summary["executionId"]] = {"type": "result", "execution": summary}
    for input_id, run, number, title in _rows(
        db,
        parts.has("input_dependencies", execution_id),
        "SELECT i.id, r.external_id, i.number, i.title FROM input_dependencies d"
        " JOIN inputs i ON i.id = d.input_id JOIN runs r ON r.id = i.run_id"
        " WHERE d.execution_id = ? ORDER BY d.created_at, i.id",
        execution_id,
    ):
        external_id = f"{run}/i{number}"
        dependencies[external_id] = {
            "type": "input",
            "inputId": external_id,
            "title": title,
            "status": _input_status(db, input_id),
        }
    for (asset_id,) in _rows(
        db,
        parts.has("asset_dependencies", execution_id),
        "SELECT a.external_id FROM asset_dependencies d JOIN assets a ON a.id = d.asset_id"
        " WHERE d.execution_id = ? ORDER BY d.created_at, a.id",
        execution_id,
    ):
        dependencies[asset_id] = {
            "type": "asset",
            "assetId": asset_id,
            "asset": _asset_summary(db, asset_id),
        }
    for (stream_id,) in _rows(
        db,
        parts.has("stream_dependencies", execution_id),
        "SELECT stream_id FROM stream_dependencies WHERE execution_id = ? ORDER BY created_at",
        execution_id,
    ):
        stream = store.stream(stream_id)
        producer = _stream_producer(db, stream_id)
        step = db.execute(
            "SELECT module, target FROM steps WHERE id = ?", (stream.step_id,)
        ).fetchone()
        dependencies[stream.external_id] = {
            "type": "stream",
            "streamId": stream.external_id,
            "execution": None if producer is None else _summary(db, producer),
            "index": stream.index,
            "module": step[0],
            "target": step[1],
            "pending": store.stream_closure(stream_id) is None,
        }
    view["dependencies"] = dependencies
    view["checkpoints"] = {"before": {}, "after": {}}
    if "checkpoints" in parts.present:
        execution = store.execution(execution_id)
        view["checkpoints"] = {
            "before": {
                name: encode_value(value, db)
                for name, value in checkpoints.before(store, execution).items()
            },
            "after": {
                name: encode_value(value, db)
                for name, value in checkpoints.after(store, execution).items()
            },
        }
    view["streams"] = {
        str(number): {
            "id": model.stream_external_id(run_id, step_number, number),
            "buffer": buffer,
            "timeoutMs": timeout_ms,
            "openedAt": opened_at,
            "closedAt": closed_at,
            "reason": label,
            "error": _error(_loads(error)),
        }
        for number, buffer, timeout_ms, opened_at, closed_at, label, error in _rows(
            db,
            parts.has("stream_registrations", execution_id),
            "SELECT st.number, g.buffer, g.timeout_ms, g.created_at, x.created_at, x.label,"
            " x.error FROM stream_registrations g JOIN streams st ON st.id = g.stream_id"
            " LEFT JOIN stream_closures x ON x.stream_id = st.id"
            " WHERE g.execution_id = ? ORDER BY st.number",
            execution_id,
        )
    }
    return view


def _metrics(db: sqlite3.Connection, execution_id: int) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for key, text in db.execute(
        "SELECT key, definition FROM metric_definitions WHERE execution_id = ? ORDER BY key",
        (execution_id,),
    ):
        definition = json.loads(text)
        metrics[key] = {
            "group": definition.get("group"),
            "groupUnits": definition.get("group_units"),
            "groupLower": definition.get("group_lower"),
            "groupUpper": definition.get("group_upper"),
            "scale": definition.get("scale"),
            "units": definition.get("units"),
            "progress": bool(definition.get("progress") or False),
            "lower": definition.get("lower"),
            "upper": definition.get("upper"),
        }
    return metrics


def _stream_producer(db: sqlite3.Connection, stream_id: int) -> int | None:
    row = db.execute(
        "SELECT g.execution_id FROM stream_registrations g JOIN executions e"
        " ON e.id = g.execution_id WHERE g.stream_id = ? ORDER BY e.attempt DESC LIMIT 1",
        (stream_id,),
    ).fetchone()
    return None if row is None else int(row[0])


class RunBuild:
    """The run topic, built in slices of steps.

    ``views.run`` reads a run in one go; a subscription to a run of thousands of steps
    would then hold the store (and every command waiting on it) for the whole build. A
    build started with ``start`` is continued with ``resume`` calls, each on its own read,
    each returning once ``budget`` seconds are spent; the value is complete once ``done``.
    Slices read at different moments: a change between two of them shows in the next
    build, which the change's publication triggers.
    """

    def __init__(self, workspace: str, run_id: str, budget: float | None = None) -> None:
        self.workspace = workspace
        self.run_id = run_id
        self.budget = budget
        self.value: dict[str, Any] | None = None
        self.done = False
        self._internal_id = 0
        self._visible: set[int] = set()
        self._present: frozenset[str] = frozenset()
        self._after = 0  # the last step number built

    def start(self, db: sqlite3.Connection) -> dict[str, Any] | None:
        """The run without its steps (None if it is not in this store), and the first slice."""
        self.value, self.done, self._after = None, False, 0
        workspace_id = _workspace_id(db, self.workspace)
        row = db.execute(
            "SELECT id, parent_execution_id, requires, created_at, created_by FROM runs"
            " WHERE external_id = ?",
            (self.run_id,),
        ).fetchone()
        if workspace_id is None or row is None:
            self.done = True
            return None
        internal_id, parent_execution, requires, created_at, created_by = row
        origin = db.execute(
            "SELECT e.workspace_id FROM steps s JOIN executions e ON e.step_id = s.id"
            " WHERE s.run_id = ? AND s.number = 1 ORDER BY e.attempt LIMIT 1",
            (internal_id,),
        ).fetchone()
        self._internal_id = internal_id
        self._visible = {workspace_id, origin[0] if origin else workspace_id}
        self._present = _parts_present(db, internal_id)
        self.value = {
            "createdAt": created_at,
            "createdBy": _loads(created_by),
            "requires": json.loads(requires),
            "parent": None if parent_execution is None else _summary(db, parent_execution),
            "steps": {},
        }
        self.resume(db)
        return self.value

    def resume(self, db: sqlite3.Connection) -> None:
        """Build the next slice of steps (all of them without a budget).

        If the run left the store meanwhile (an epoch rotated), the build starts over.
        """
        assert self.value is not None and not self.done
        row = db.execute("SELECT id FROM runs WHERE external_id = ?", (self.run_id,)).fetchone()
        if row is None or row[0] != self._internal_id:
            self.start(db)
            return
        deadline = None if self.budget is None else time.perf_counter() + self.budget
        store = orchestration.SqliteOrchestrationStore(db)
        while True:
            rows = db.execute(_STEP_ROWS, (self._internal_id, self._after, _STEP_SLICE)).fetchall()
            executions = _slice_executions(db, [step_row[0] for step_row in rows])
            parts = _Parts(
                db, self._present, [e[0] for found in executions.values() for e in found]
            )
            for step_row in rows:
                self._after = step_row[1]
                step = _step_view(
                    db,
                    store,
                    self.run_id,
                    step_row,
                    executions.get(step_row[0], []),
                    self._visible,
                    parts,
                )
                if step is not None:
                    self.value["steps"][f"{self.run_id}:{step_row[1]}"] = step
                if deadline is not None and time.perf_counter() >= deadline:
                    self.done = len(rows) < _STEP_SLICE and step_row is rows[-1]
                    return
            if len(rows) < _STEP_SLICE:
                self.done = True
                return


_STEP_SLICE = 64  # step rows fetched per query
_STEP_ROWS = (
    "SELECT s.id, s.number, s.module, s.target, s.options, s.arguments, s.created_at,"
    " r.external_id || ':' || ps.number || ':' || pe.attempt, s.cache_key, s.memo_key"
    " FROM steps s LEFT JOIN executions pe ON pe.id = s.parent_execution_id"
    " LEFT JOIN steps ps ON ps.id = pe.step_id LEFT JOIN runs r ON r.id = ps.run_id"
    " WHERE s.run_id = ? AND s.number > ? ORDER BY s.number LIMIT ?"
)


_SLICE_EXECUTIONS = (
    "SELECT e.id, e.attempt, w.external_id, w.id, e.created_at, e.created_by,"
    " e.execute_after, a.assigned_at, r.value, r.error, r.retryable, r.created_at,"
    " c.kind, c.successor_id, c.created_at, e.step_id FROM executions e"
    " JOIN workspaces w ON w.id = e.workspace_id"
    " LEFT JOIN assignments a ON a.execution_id = e.id"
    " LEFT JOIN results r ON r.execution_id = e.id"
    " LEFT JOIN completions c ON c.execution_id = e.id"
    " WHERE e.step_id IN ({marks}) ORDER BY e.step_id, e.attempt"
)


def _slice_executions(
    db: sqlite3.Connection, step_ids: list[int]
) -> dict[int, list[tuple[Any, ...]]]:
    """The executions of these steps with their assignment, result and completion, by
    step, in attempt order (the step id dropped from each row)."""
    found: dict[int, list[tuple[Any, ...]]] = {}
    for chunk in sqlite.chunks(step_ids):
        sql = _SLICE_EXECUTIONS.format(marks=sqlite.marks(chunk))
        for row in db.execute(sql, chunk):
            found.setdefault(row[-1], []).append(row[:-1])
    return found


def run(db: sqlite3.Connection, workspace: str, run_id: str) -> dict[str, Any] | None:
    """The run topic, read in one go."""
    build = RunBuild(workspace, run_id)
    return build.start(db)


def _step_view(
    db: sqlite3.Connection,
    store: orchestration.SqliteOrchestrationStore,
    run_id: str,
    step_row: tuple[Any, ...],
    execution_rows: list[tuple[Any, ...]],
    visible: set[int],
    parts: _Parts,
) -> dict[str, Any] | None:
    """A step of the run topic, with its executions in the visible workspaces (None if
    it has none there)."""
    (
        _step_id,
        number,
        module,
        target,
        options_text,
        arguments,
        step_created,
        parent_id,
        cache_key,
        memo_key,
    ) = step_row
    executions: dict[str, Any] = {}
    for (
        execution_id,
        attempt,
        ws_external,
        ws_id,
        e_created,
        e_created_by,
        execute_after,
        assigned_at,
        value,
        error,
        retryable,
        result_at,
        kind,
        successor,
        completed_at,
    ) in execution_rows:
        if ws_id not in visible:
            continue
        result = _result(db, execution_id, value, error, retryable, kind, successor)
        executions[str(attempt)] = {
            "executionId": f"{run_id}:{number}:{attempt}",
            "workspaceId": ws_external,
            "createdAt": e_created,
            "createdBy": _loads(e_created_by),
            "executeAfter": execute_after,
            "assignedAt": assigned_at,
            "completedAt": completed_at,
            "resultAt": result_at,
            "completion": _completion(db, kind, successor),
            "groups": {
                str(g): n
                for g, n in _rows(
                    db,
                    parts.has("groups", execution_id),
                    "SELECT group_id, name FROM groups WHERE execution_id = ?",
                    execution_id,
                )
            },
            "children": [
                {"stepId": f"{cr}:{cn}", "attempt": ca, "groupId": cg}
                for cr, cn, ca, cg in _rows(
                    db,
                    parts.has("children", execution_id),
                    "SELECT r.external_id, s.number, e.attempt, c.group_id FROM children c"
                    " JOIN executions e ON e.id = c.child_id JOIN steps s ON s.id = e.step_id"
                    " JOIN runs r ON r.id = s.run_id WHERE c.parent_id = ?"
                    " ORDER BY c.created_at, c.child_id",
                    execution_id,
                )
            ],
            "result": result,
            "metrics": _metrics(db, execution_id)
            if parts.has("metric_definitions", execution_id)
            else {},
            **_execution_view(db, store, execution_id, run_id, number, parts),
        }
    if not executions:
        return None
    options = json.loads(options_text)
    retries = options.get("retries")
    cache = options.get("cache")
    return {
        "stepNumber": number,
        "module": module,
        "target": target,
        "parentId": parent_id,
        "cacheConfig": cache,
        "cacheKey": None if cache_key is None else cache_key[:10],
        "memoKey": None if memo_key is None else memo_key[:10],
        "retries": None
        if retries is None
        else {
            "limit": retries["limit"],
            "backoffMin": retries["backoff_min"],
            "backoffMax": retries["backoff_max"],
        },
        "recurrent": bool(options.get("recurrent")),
        "timeout": options.get("timeout", 0),
        "createdAt": step_created,
        "arguments": [encode_value(v, db) for v in json.loads(arguments)],
        "requires": options.get("requires") or {},
        "executions": executions,
    }


def queue(db: sqlite3.Connection, workspace: str) -> dict[str, Any] | None:
    workspace_id = _workspace_id(db, workspace)
    if workspace_id is None:
        return None
    store = orchestration.SqliteOrchestrationStore(db)
    value: dict[str, Any] = {}
    for row in db.execute(
        "SELECT r.external_id, s.number, e.attempt, s.module, s.target, e.execute_after,"
        " e.created_at, a.assigned_at, r.requires, s.options, e.id FROM executions e"
        " JOIN steps s ON s.id = e.step_id JOIN runs r ON r.id = s.run_id"
        " LEFT JOIN assignments a ON a.execution_id = e.id"
        " WHERE e.workspace_id = ? AND e.live IS NOT NULL",
        (workspace_id,),
    ):
        run_id, number, attempt = row[0], row[1], row[2]
        options = json.loads(row[9])
        requires = model.merge_requires(json.loads(row[8]), options.get("requires") or {})
        value[f"{run_id}:{number}:{attempt}"] = {
            "module": row[3],
            "target": row[4],
            "runId": run_id,
            "stepId": f"{run_id}:{number}",
            "stepNumber": number,
            "attempt": attempt,
            "executeAfter": row[5],
            "createdAt": row[6],
            "assignedAt": row[7],
            "dependencies": [] if row[7] is not None else _waiting_on(store, row[10]),
            "requires": requires,
        }
    return value


def _waiting_on(store: orchestration.SqliteOrchestrationStore, execution_id: int) -> list[str]:
    """Executions a queued execution still waits for (select successors and wait_for)."""
    pending: list[int] = []
    for dependency in store.dependencies(execution_id):
        waiting = lifecycle.resolve(store, dependency).pending
        if waiting is not None:
            pending.append(waiting)
    execution = store.execution(execution_id)
    options = store.step_options(execution.step_id)
    arguments = store.step_arguments(execution.step_id)
    for index in options.wait_for:
        if index >= len(arguments):
            continue
        for reference in model.value_references(arguments[index]):
            if reference[0] != "execution":
                continue
            referenced = store.execution_by_external_id(str(reference[1]))
            if referenced is not None:
                waiting = lifecycle.resolve(store, referenced.id).pending
                if waiting is not None:
                    pending.append(waiting)
    return [str(store.execution(e).external_id) for e in dict.fromkeys(pending)]


# --- Inputs, assets, streams ---------------------------------------------------------------------

_INPUT_COLUMNS = (
    "SELECT i.id, r.external_id, i.number, i.workspace_id, i.key, i.template, i.placeholders,"
    " i.schema, i.initial, i.title, i.actions, i.requires, i.created_at"
    " FROM inputs i JOIN runs r ON r.id = i.run_id"
)


def _input_active(db: sqlite3.Connection, input_id: int) -> bool:
    """Something still waits on it: a live dependant, or a suspended one's live chain."""
    for kind, successor in db.execute(
        "SELECT c.kind, c.successor_id FROM input_dependencies d"
        " LEFT JOIN completions c ON c.execution_id = d.execution_id WHERE d.input_id = ?",
        (input_id,),
    ):
        if kind is None or successor is not None:
            return True
    return False


def input_view(db: sqlite3.Connection, input_id: str) -> dict[str, Any] | None:
    """The ``get_input`` object plus ``active`` (the ``inputs/{id}`` topic)."""
    parsed = model.parse_input_id(input_id)
    if parsed is None:
        return None
    row = db.execute(
        _INPUT_COLUMNS + " WHERE r.external_id = ? AND i.number = ?", parsed
    ).fetchone()
    if row is None:
        return None
    (internal, _, _, _, key, template, placeholders, schema, initial, title, actions) = row[:11]
    response = None
    response_row = db.execute(
        "SELECT type, value, created_at, created_by FROM input_responses WHERE input_id = ?",
        (internal,),
    ).fetchone()
    if response_row is not None:
        kind = inputs.Response(response_row[0])
        response = {"type": kind.label, "createdAt": response_row[2]}
        if kind is inputs.Response.VALUE:
            response["value"] = _loads(response_row[1])
        created_by = _loads(response_row[3])
        if created_by is not None:
            response["createdBy"] = created_by
    return {
        "key": key,
        "template": template,
        "placeholders": {
            name: encode_value(value, db) for name, value in json.loads(placeholders).items()
        },
        "schema": schema,
        "initial": _loads(initial),
        "title": title,
        "actions": _loads(actions),
        "requires": json.loads(row[11]),
        "createdAt": row[12],
        "response": response,
        "active": response is None and _input_active(db, internal),
    }


def workspace_inputs(db: sqlite3.Connection, workspace: str) -> dict[str, Any] | None:
    """Unanswered inputs of a workspace that something is waiting on."""
    workspace_id = _workspace_id(db, workspace)
    if workspace_id is None:
        return None
    value: dict[str, Any] = {}
    for row in db.execute(
        _INPUT_COLUMNS + " WHERE i.workspace_id = ?"
        " AND NOT EXISTS (SELECT 1 FROM input_responses x WHERE x.input_id = i.id)"
        " ORDER BY i.id",
        (workspace_id,),
    ):
        if not _input_active(db, row[0]):
            continue
        creator = db.execute(
            "SELECT execution_id FROM execution_inputs WHERE input_id = ?"
            " ORDER BY created_at LIMIT 1",
            (row[0],),
        ).fetchone()
        summary = None if creator is None else _summary(db, creator[0])
        value[f"{row[1]}/i{row[2]}"] = {
            "runId": row[1],
            "executionId": None if summary is None else summary["executionId"],
            "key": row[4],
            "createdAt": row[12],
            "title": row[9],
            "requires": json.loads(row[11]),
        }
    return value


def asset(db: sqlite3.Connection, asset_id: str) -> dict[str, Any] | None:
    row = db.execute(
        "SELECT name, entries FROM assets WHERE external_id = ?", (asset_id,)
    ).fetchone()
    if row is None:
        return None
    return {
        "name": row[0],
        "entries": {
            path: {"blobKey": blob_key, "size": size, "metadata": metadata}
            for path, (blob_key, size, metadata) in json.loads(row[1]).items()
        },
    }


def stream(db: sqlite3.Connection, stream_id: str) -> dict[str, Any] | None:
    store = orchestration.SqliteOrchestrationStore(db)
    found = store.stream_by_external_id(stream_id)
    if found is None:
        return None
    step = db.execute(
        "SELECT r.external_id || ':' || s.number, s.module, s.target FROM steps s"
        " JOIN runs r ON r.id = s.run_id WHERE s.id = ?",
        (found.step_id,),
    ).fetchone()
    registrations = db.execute(
        "SELECT e.attempt, g.buffer, g.timeout_ms, g.created_at, g.execution_id"
        " FROM stream_registrations g JOIN executions e ON e.id = g.execution_id"
        " WHERE g.stream_id = ? ORDER BY e.attempt",
        (found.id,),
    ).fetchall()
    latest = registrations[-1] if registrations else None
    closure = None
    closure_row = db.execute(
        "SELECT x.label, x.error, e.attempt, x.created_at FROM stream_closures x"
        " LEFT JOIN executions e ON e.id = x.execution_id WHERE x.stream_id = ?",
        (found.id,),
    ).fetchone()
    if closure_row is not None:
        closure = {
            "reason": closure_row[0],
            "error": _error(_loads(closure_row[1])),
            "attempt": closure_row[2],
            "closedAt": closure_row[3],
        }
    (total,) = db.execute(
        "SELECT count(*) FROM stream_items WHERE stream_id = ?", (found.id,)
    ).fetchone()
    items = db.execute(
        "SELECT sequence, value, created_at FROM (SELECT * FROM stream_items WHERE stream_id = ?"
        " ORDER BY sequence DESC LIMIT ?) ORDER BY sequence",
        (found.id, STREAM_TAIL),
    ).fetchall()
    return {
        "id": found.external_id,
        "step": {"stepId": step[0], "module": step[1], "target": step[2]},
        "workspaceId": db.execute(
            "SELECT external_id FROM workspaces WHERE id = ?", (found.workspace_id,)
        ).fetchone()[0],
        "index": found.index,
        "attempts": [r[0] for r in registrations],
        "producer": None if latest is None else _summary(db, latest[4]),
        "buffer": None if latest is None else latest[1],
        "timeoutMs": None if latest is None else latest[2],
        "openedAt": None if not registrations else registrations[0][3],
        "closure": closure,
        "items": [
            {"sequence": sequence, "value": encode_value(json.loads(value), db), "createdAt": at}
            for sequence, value, at in items
        ],
        "totalCount": total,
        "tailSize": STREAM_TAIL,
    }


# --- Pools and launched workers ---------------------------------------------------------------


def _current_pools(db: sqlite3.Connection, workspace_id: int) -> dict[str, Any]:
    store = orchestration.SqliteOrchestrationStore(db)
    return {row.name: row for row in store.current_pools(workspace_id)}


def _pool_disabled(db: sqlite3.Connection, workspace_id: int, name: str) -> bool:
    row = db.execute(
        "SELECT state FROM pool_states WHERE workspace_id = ? AND name = ? ORDER BY id DESC"
        " LIMIT 1",
        (workspace_id, name),
    ).fetchone()
    return row is not None and row[0] == 1


def pools_topic(db: sqlite3.Connection, workspace: str) -> dict[str, Any] | None:
    """``workspaces/{ws}/pools``: every current pool, without sensitive launcher fields."""
    workspace_id = _workspace_id(db, workspace)
    if workspace_id is None:
        return None
    return {
        name: pool_model.topic(row.pool, _pool_disabled(db, workspace_id, name))
        for name, row in _current_pools(db, workspace_id).items()
    }


def pools_export(db: sqlite3.Connection, workspace: str) -> tuple[dict[str, Any], str] | None:
    """``get_pools``: the full pool objects of a workspace and the version of that set."""
    workspace_id = _workspace_id(db, workspace)
    if workspace_id is None:
        return None
    current = _current_pools(db, workspace_id)
    etag = pool_model.pools_etag({name: row.definition_hash for name, row in current.items()})
    return {name: pool_model.export(row.pool) for name, row in current.items()}, etag


_WORKERS = """
SELECT w.external_id, w.created_at, r.data IS NOT NULL, r.created_at, r.error,
       x.created_at, xr.created_at, xr.error, d.created_at, d.error, lg.content,
       (SELECT st.state FROM worker_states st WHERE st.worker_id = w.id ORDER BY st.id DESC
        LIMIT 1),
       CASE WHEN s.expired_at IS NULL THEN s.external_id END,
       (SELECT count(*) FROM assignments a WHERE a.session_id = w.session_id)
FROM workers w
JOIN pools p ON p.id = w.pool_id
LEFT JOIN worker_launch_results r ON r.worker_id = w.id
LEFT JOIN worker_stops x ON x.id = (SELECT max(id) FROM worker_stops WHERE worker_id = w.id)
LEFT JOIN worker_stop_results xr ON xr.stop_id = x.id
LEFT JOIN worker_deactivations d ON d.worker_id = w.id
LEFT JOIN worker_logs lg ON lg.id = d.log_id
LEFT JOIN sessions s ON s.id = w.session_id
WHERE p.workspace_id = ? AND p.name = ?
ORDER BY w.id
"""


def pool_topic(db: sqlite3.Connection, workspace: str, name: str) -> dict[str, Any] | None:
    """``workspaces/{ws}/pools/{name}``: the pool and every worker it launched."""
    workspace_id = _workspace_id(db, workspace)
    if workspace_id is None:
        return None
    row = _current_pools(db, workspace_id).get(name)
    pool = None
    if row is not None:
        pool = pool_model.topic(row.pool, _pool_disabled(db, workspace_id, name))
    workers: dict[str, Any] = {}
    for w in db.execute(_WORKERS, (workspace_id, name)).fetchall():
        deactivated = w[8] is not None
        state = pool_model.WorkerState(w[11] or 0).label
        workers[w[0]] = {
            "startingAt": w[1],
            "startedAt": w[3] if w[2] else None,
            "startError": w[4],
            "stoppingAt": w[5],
            "stoppedAt": w[6],
            "stopError": w[7],
            "deactivatedAt": w[8],
            "error": w[9],
            "logs": w[10],
            "state": None if deactivated else state,
            "sessionId": None if deactivated else w[12],
            "executions": w[13],
        }
    if pool is None and not workers:
        return None
    return {"pool": pool, "workers": workers}
