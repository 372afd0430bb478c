"""Log and metric ingestion and queries (``/logs``, ``/metrics``)."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse, Response

from pycoflux.server.context import Context
from pycoflux.storage import logs as log_store


def _invalid(field: str, reason: str) -> JSONResponse:
    return JSONResponse(
        {"error": "invalid_request", "details": {"field": field, "reason": reason}},
        status_code=400,
    )


def _valid_log_value(value: Any) -> bool:
    if not isinstance(value, dict) or not isinstance(value.get("references", []), list):
        return False
    if value.get("type") == "raw":
        return True
    return (
        value.get("type") == "blob"
        and isinstance(value.get("key"), str)
        and isinstance(value.get("size"), int)
    )


async def _body(context: Context) -> Any:
    try:
        return json.loads(await context.request.body())
    except ValueError:
        return ValueError


async def handle(context: Context) -> Response:
    request = context.request
    if request.method == "POST":
        body = await _body(context)
        if body is ValueError:
            return JSONResponse({"error": "invalid_json"}, status_code=400)
        if not isinstance(body, dict) or "messages" not in body:
            return _invalid("messages", "required")
        messages = body["messages"]
        if not isinstance(messages, list):
            return _invalid("messages", "must be an array")
        for message in messages:
            values = message.get("values", {}) if isinstance(message, dict) else None
            if not isinstance(values, dict) or not all(
                _valid_log_value(v) for v in values.values()
            ):
                return _invalid("values", "invalid structure")
        await context.host.write_logs(lambda db: log_store.append_logs(db, messages))
        return JSONResponse({"ok": True})
    if request.method == "GET":
        run = request.query_params.get("run")
        if not run:
            return JSONResponse({"error": "run_required"}, status_code=400)
        workspaces = [w for w in request.query_params.get("workspaces", "").split(",") if w]
        after = None
        if request.query_params.get("after"):
            try:
                parts = request.query_params["after"].split(":")
                after = (int(parts[-2]), int(parts[-1]))
            except (ValueError, IndexError):
                return JSONResponse(
                    {"error": "query_failed", "details": {"reason": "invalid cursor"}},
                    status_code=400,
                )
        entries, cursor = await context.host.write_logs(
            lambda db: log_store.query_logs(
                db, run, request.query_params.get("execution"), workspaces, after
            )
        )
        return JSONResponse({"logs": entries, "cursor": cursor})
    return JSONResponse({"error": "method_not_allowed"}, status_code=405)


_METRIC_FIELDS = {"runId": str, "executionId": str, "workspaceId": str, "key": str}


async def handle_metrics(context: Context) -> Response:
    request = context.request
    if request.method == "POST":
        body = await _body(context)
        if body is ValueError:
            return JSONResponse({"error": "invalid_json"}, status_code=400)
        if not isinstance(body, dict) or "entries" not in body:
            return _invalid("entries", "required")
        entries = body["entries"]
        if not isinstance(entries, list):
            return _invalid("entries", "must be an array")
        for entry in entries:
            if not (
                isinstance(entry, dict)
                and all(isinstance(entry.get(k), t) for k, t in _METRIC_FIELDS.items())
                and all(
                    isinstance(entry.get(k), int | float) and not isinstance(entry.get(k), bool)
                    for k in ("value", "at")
                )
            ):
                return _invalid("entries", "invalid entry structure")
        await context.host.write_logs(lambda db: log_store.append_metrics(db, entries))
        return JSONResponse({"ok": True})
    if request.method == "GET":
        run, execution = request.query_params.get("run"), request.query_params.get("execution")
        if not run and not execution:
            return JSONResponse({"error": "run_or_execution_required"}, status_code=400)
        keys = [k for k in request.query_params.get("keys", "").split(",") if k]
        metrics = await context.host.write_logs(
            lambda db: log_store.query_metrics(db, run, execution, keys)
        )
        return JSONResponse({"metrics": metrics, "cursor": None})
    return JSONResponse({"error": "method_not_allowed"}, status_code=405)
