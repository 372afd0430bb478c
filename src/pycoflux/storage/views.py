"""Read models: the JSON values of topics, built from a project's store."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from pycoflux.orchestration import model

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


def _workspace_id(db: sqlite3.Connection, external_id: str) -> int | None:
    row = db.execute(
        "SELECT id FROM workspaces WHERE external_id = ? AND state != 2", (external_id,)
    ).fetchone()
    return None if row is None else int(row[0])


def encode_value(value: model.Value | None) -> dict[str, Any] | None:
    """Worker-wire value -> topic/HTTP value (``server-api.md`` §8.4)."""
    if value is None:
        return None
    if value[0] == "raw":
        return {"type": "raw", "data": value[1], "references": _references(value[2])}
    return {
        "type": "blob",
        "key": value[1],
        "size": value[2],
        "references": _references(value[3]),
    }


def _references(references: list[list[Any]]) -> list[dict[str, Any]]:
    encoded: list[dict[str, Any]] = []
    for reference in references:
        kind = reference[0]
        if kind == "execution":
            encoded.append(
                {
                    "type": "execution",
                    "executionId": reference[1],
                    "module": reference[2] if len(reference) > 2 else None,
                    "target": reference[3] if len(reference) > 3 else None,
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
            encoded.append({"type": "asset", "assetId": reference[1], "asset": None})
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


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def workspaces(db: sqlite3.Connection) -> dict[str, Any]:
    rows = db.execute(
        "SELECT w.external_id, w.name, b.external_id, w.state FROM workspaces w"
        " LEFT JOIN workspaces b ON b.id = w.base_id ORDER BY w.id"
    ).fetchall()
    return {
        row[0]: {"name": row[1], "baseId": row[2], "state": model.WorkspaceState(row[3]).label}
        for row in rows
    }


def manifests(db: sqlite3.Connection, workspace: str) -> dict[str, Any] | None:
    workspace_id = _workspace_id(db, workspace)
    if workspace_id is None:
        return None
    result: dict[str, Any] = {}
    for module, target, definition in db.execute(
        "SELECT module, target, definition FROM manifests WHERE workspace_id = ?"
        " ORDER BY module, target",
        (workspace_id,),
    ):
        data = json.loads(definition)
        result.setdefault(module, {})[target] = {
            "parameters": data.get("parameters", []),
            "waitFor": data.get("waitFor", []),
            "cache": data.get("cache"),
            "defer": data.get("defer"),
            "delay": data.get("delay", 0),
            "retries": data.get("retries"),
            "requires": data.get("requires") or {},
        }
    return result


def workflow(
    db: sqlite3.Connection, workspace: str, module: str, target: str
) -> dict[str, Any] | None:
    workspace_id = _workspace_id(db, workspace)
    if workspace_id is None:
        return None
    row = db.execute(
        "SELECT definition FROM manifests WHERE workspace_id = ? AND module = ? AND target = ?",
        (workspace_id, module, target),
    ).fetchone()
    runs = db.execute(
        "SELECT r.external_id, r.created_at, r.created_by FROM runs r"
        " JOIN steps s ON s.run_id = r.id AND s.number = 1"
        " JOIN executions e ON e.step_id = s.id AND e.attempt = 1"
        " WHERE s.module = ? AND s.target = ? AND e.workspace_id = ?"
        " ORDER BY r.created_at DESC, r.id DESC LIMIT 50",
        (module, target, workspace_id),
    ).fetchall()
    if row is None and not runs:
        return None
    value: dict[str, Any] = {
        "parameters": None,
        "instruction": None,
        "configuration": None,
        "runs": {r[0]: {"id": r[0], "createdAt": r[1], "createdBy": _loads(r[2])} for r in runs},
    }
    if row is not None:
        data = json.loads(row[0])
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
            "streams": data.get("streams"),
        }
    return value


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
            "SELECT e.attempt, r.external_id || ':' || s.number || ':' || e.attempt,"
            " s.module, s.target, e.step_id = (SELECT step_id FROM executions WHERE id = ?)"
            " FROM executions e JOIN steps s ON s.id = e.step_id JOIN runs r ON r.id = s.run_id"
            " WHERE e.id = ?",
            (execution_id, successor),
        ).fetchone()
        successor_attempt = row[0]
        successor_summary = {"executionId": row[1], "module": row[2], "target": row[3]}
    if kind is not None:
        completion = model.Completion(kind)
        if completion.is_handoff:
            nested = None
            if successor is not None and depth < 20:
                nested_row = db.execute(
                    "SELECT r.value, r.error, r.retryable, c.kind, c.successor_id"
                    " FROM executions e LEFT JOIN results r ON r.execution_id = e.id"
                    " LEFT JOIN completions c ON c.execution_id = e.id WHERE e.id = ?",
                    (successor,),
                ).fetchone()
                value_, error_, retryable_, kind_, successor_ = nested_row
                nested = _result(
                    db, successor, value_, error_, retryable_, kind_, successor_, depth=depth + 1
                )
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
            return {"type": "cancelled", "createdBy": None}
    if value is not None:
        return {"type": "value", "value": encode_value(json.loads(value)), "createdBy": None}
    if error is not None and kind is not None:
        data = json.loads(error)
        return {
            "type": "error",
            "error": {
                "type": data["type"],
                "message": data["message"],
                "frames": _frames(data.get("frames", [])),
            },
            "retry": successor_attempt,
            "retryable": None if retryable is None else bool(retryable),
            "createdBy": None,
        }
    return None


def run(db: sqlite3.Connection, workspace: str, run_id: str) -> dict[str, Any] | None:
    workspace_id = _workspace_id(db, workspace)
    row = db.execute(
        "SELECT id, parent_execution_id, requires, created_at, created_by FROM runs"
        " WHERE external_id = ?",
        (run_id,),
    ).fetchone()
    if workspace_id is None or row is None:
        return None
    internal_id, parent_execution, requires, created_at, created_by = row
    parent = None
    if parent_execution is not None:
        parent_row = db.execute(
            "SELECT r.external_id || ':' || s.number || ':' || e.attempt, s.module, s.target"
            " FROM executions e JOIN steps s ON s.id = e.step_id JOIN runs r ON r.id = s.run_id"
            " WHERE e.id = ?",
            (parent_execution,),
        ).fetchone()
        parent = {"executionId": parent_row[0], "module": parent_row[1], "target": parent_row[2]}
    origin = db.execute(
        "SELECT e.workspace_id FROM steps s JOIN executions e ON e.step_id = s.id"
        " WHERE s.run_id = ? AND s.number = 1 ORDER BY e.attempt LIMIT 1",
        (internal_id,),
    ).fetchone()
    visible = {workspace_id, origin[0] if origin else workspace_id}
    steps: dict[str, Any] = {}
    step_rows = db.execute(
        "SELECT s.id, s.number, s.module, s.target, s.options, s.arguments, s.created_at,"
        " r.external_id || ':' || ps.number || ':' || pe.attempt"
        " FROM steps s LEFT JOIN executions pe ON pe.id = s.parent_execution_id"
        " LEFT JOIN steps ps ON ps.id = pe.step_id LEFT JOIN runs r ON r.id = ps.run_id"
        " WHERE s.run_id = ? ORDER BY s.number",
        (internal_id,),
    ).fetchall()
    for (
        step_id,
        number,
        module,
        target,
        options_text,
        arguments,
        step_created,
        parent_id,
    ) in step_rows:
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
        ) in db.execute(
            "SELECT e.id, e.attempt, w.external_id, w.id, e.created_at, e.created_by,"
            " e.execute_after, a.assigned_at, r.value, r.error, r.retryable, r.created_at,"
            " c.kind, c.successor_id, c.created_at FROM executions e"
            " JOIN workspaces w ON w.id = e.workspace_id"
            " LEFT JOIN assignments a ON a.execution_id = e.id"
            " LEFT JOIN results r ON r.execution_id = e.id"
            " LEFT JOIN completions c ON c.execution_id = e.id"
            " WHERE e.step_id = ? ORDER BY e.attempt",
            (step_id,),
        ):
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
                "completedAt": completed_at if kind is not None else (result_at if value else None),
                "resultAt": result_at,
                "groups": {
                    str(g): n
                    for g, n in db.execute(
                        "SELECT group_id, name FROM groups WHERE execution_id = ?", (execution_id,)
                    )
                },
                "assets": {},
                "dependencies": _dependencies(db, execution_id),
                "children": [
                    {"stepId": f"{cr}:{cn}", "attempt": ca, "groupId": cg}
                    for cr, cn, ca, cg in db.execute(
                        "SELECT r.external_id, s.number, e.attempt, c.group_id FROM children c"
                        " JOIN executions e ON e.id = c.child_id JOIN steps s ON s.id = e.step_id"
                        " JOIN runs r ON r.id = s.run_id WHERE c.parent_id = ?"
                        " ORDER BY c.created_at, c.child_id",
                        (execution_id,),
                    )
                ],
                "inputs": {},
                "result": result,
                "metrics": {},
            }
        if not executions:
            continue
        options = json.loads(options_text)
        retries = options.get("retries")
        cache = options.get("cache")
        steps[f"{run_id}:{number}"] = {
            "stepNumber": number,
            "module": module,
            "target": target,
            "parentId": parent_id,
            "cacheConfig": cache,
            "cacheKey": None,
            "memoKey": None,
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
            "arguments": [encode_value(v) for v in json.loads(arguments)],
            "requires": options.get("requires") or {},
            "executions": executions,
        }
    return {
        "createdAt": created_at,
        "createdBy": _loads(created_by),
        "requires": json.loads(requires),
        "parent": parent,
        "steps": steps,
    }


def _dependencies(db: sqlite3.Connection, execution_id: int) -> dict[str, Any]:
    return {
        external: {
            "type": "result",
            "execution": {"executionId": external, "module": module, "target": target},
        }
        for external, module, target in db.execute(
            "SELECT r.external_id || ':' || s.number || ':' || e.attempt, s.module, s.target"
            " FROM dependencies d JOIN executions e ON e.id = d.dependency_id"
            " JOIN steps s ON s.id = e.step_id JOIN runs r ON r.id = s.run_id"
            " WHERE d.execution_id = ?",
            (execution_id,),
        )
    }


def queue(db: sqlite3.Connection, workspace: str) -> dict[str, Any] | None:
    workspace_id = _workspace_id(db, workspace)
    if workspace_id is None:
        return None
    value: dict[str, Any] = {}
    for row in db.execute(
        "SELECT r.external_id, s.number, e.attempt, s.module, s.target, e.execute_after,"
        " e.created_at, a.assigned_at, r.requires, s.options FROM executions e"
        " JOIN steps s ON s.id = e.step_id JOIN runs r ON r.id = s.run_id"
        " LEFT JOIN assignments a ON a.execution_id = e.id"
        " LEFT JOIN completions c ON c.execution_id = e.id"
        " WHERE e.workspace_id = ? AND c.execution_id IS NULL",
        (workspace_id,),
    ):
        run_id, number, attempt = row[0], row[1], row[2]
        requires = model.merge_requires(
            json.loads(row[8]), json.loads(row[9]).get("requires") or {}
        )
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
            "dependencies": [],
            "requires": requires,
        }
    return value


def modules(db: sqlite3.Connection, workspace: str) -> dict[str, Any] | None:
    workspace_id = _workspace_id(db, workspace)
    if workspace_id is None:
        return None
    value: dict[str, Any] = {}
    for module, target in db.execute(
        "SELECT module, target FROM manifests WHERE workspace_id = ?", (workspace_id,)
    ):
        value.setdefault(module, {"workflows": {}})["workflows"][target] = {"activeRuns": []}
    for run_id, module, target in db.execute(
        "SELECT DISTINCT r.external_id, s.module, s.target FROM runs r"
        " JOIN steps s ON s.run_id = r.id AND s.number = 1"
        " WHERE EXISTS (SELECT 1 FROM executions e JOIN steps s2 ON s2.id = e.step_id"
        " LEFT JOIN completions c ON c.execution_id = e.id"
        " WHERE s2.run_id = r.id AND e.workspace_id = ? AND c.execution_id IS NULL)"
        " ORDER BY r.external_id",
        (workspace_id,),
    ):
        workflows = value.get(module, {}).get("workflows", {})
        if target in workflows:
            workflows[target]["activeRuns"].append(run_id)
    return value
