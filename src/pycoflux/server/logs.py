"""Log and metric ingestion and queries: ``/logs``, ``/metrics`` and ``rotate_logs``.

Both resources answer JSON pages, or a server-sent event stream when the client
accepts ``text/event-stream``: one ``data:`` event with the snapshot, then one per
flush with the new matching entries, and a comment line when idle so that proxies
keep the connection open.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from pycoflux import errors
from pycoflux.server import feeds
from pycoflux.server.context import ApiError, Context
from pycoflux.storage import epochs
from pycoflux.storage import logs as log_store
from pycoflux.storage import metrics as metric_store

log = logging.getLogger("pycoflux.server")

KEEPALIVE = 15.0  # seconds between comment lines on an idle stream (the spec asks <= 30)
LOG_BACKLOG = 10 * log_store.PAGE  # entries a log stream replays before going live
REFERENCE_TYPES = frozenset({"execution", "asset", "fragment", "input"})


# --- Request parsing -------------------------------------------------------------------


def _invalid(field: str, reason: str) -> ApiError:
    return ApiError(400, "invalid_request", {"field": field, "reason": reason})


def _query_failed(reason: str) -> ApiError:
    return ApiError(400, "query_failed", {"reason": reason})


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def _json(context: Context) -> Any:
    try:
        # NaN and Infinity are not JSON: storing them would make later responses invalid.
        return json.loads(await context.request.body(), parse_constant=_no_constants)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json") from None


def _entries(body: Any, field: str) -> list[Any]:
    if not isinstance(body, dict) or field not in body:
        raise _invalid(field, "required")
    entries = body[field]
    if not isinstance(entries, list):
        raise _invalid(field, "must be an array")
    return entries


def _valid_reference(reference: Any) -> bool:
    return isinstance(reference, dict) and reference.get("type") in REFERENCE_TYPES


def _valid_log_value(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    references = value.get("references", [])
    if not isinstance(references, list) or not all(map(_valid_reference, references)):
        return False
    if value.get("type") == "raw":
        return True
    return (
        value.get("type") == "blob"
        and isinstance(value.get("key"), str)
        and isinstance(value.get("size"), int)
        and not isinstance(value.get("size"), bool)
    )


def _number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


_METRIC_TEXT_FIELDS = ("runId", "executionId", "workspaceId", "key")


def _valid_metric(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and all(isinstance(entry.get(name), str) for name in _METRIC_TEXT_FIELDS)
        and _number(entry.get("value"))
        and _number(entry.get("at"))
    )


def _list_param(context: Context, name: str) -> frozenset[str]:
    return frozenset(item for item in context.request.query_params.get(name, "").split(",") if item)


def _since(context: Context) -> date | None:
    raw = context.request.query_params.get("from")
    if not raw:
        return None
    try:
        return datetime.fromtimestamp(int(raw) / 1000, UTC).date()
    except (ValueError, OverflowError, OSError):
        raise _query_failed(f"invalid from: {raw!r}") from None


def _after(context: Context, number: type[epochs.N]) -> epochs.Cursor[epochs.N] | None:
    raw = context.request.query_params.get("after")
    if not raw:
        return None
    try:
        return epochs.Cursor.parse(raw, number)
    except (ValueError, OverflowError):
        raise _query_failed(f"invalid cursor: {raw!r}") from None


def _wants_events(context: Context) -> bool:
    return "text/event-stream" in context.request.headers.get("accept", "")


async def _append(feed: feeds.Feed[Any], batch: list[Any], field: str, reason: str) -> Response:
    try:
        await feed.append(batch)
    except errors.StoreError as e:
        log.error("%s", e)
        raise ApiError(500, "write_failed") from None
    except (ValueError, TypeError, OverflowError):
        # Validation should have caught it; the batch was rolled back either way.
        raise _invalid(field, reason) from None
    return JSONResponse({"ok": True})


async def _query(feed: feeds.Feed[Any], query: Any, limit: int) -> epochs.Page:
    try:
        return await feed.query(query, limit)
    except (errors.StoreError, sqlite3.Error) as e:
        log.exception("%s query failed", feed.name)
        raise _query_failed(str(e)) from None


# --- Event streams ---------------------------------------------------------------------


def _event(entries: list[dict[str, Any]]) -> bytes:
    return b"data: " + json.dumps(entries, separators=(",", ":")).encode() + b"\n\n"


async def _stream(
    feed: feeds.Feed[Any],
    query: Any,
    *,
    snapshot_limit: int,
    event_size: int | None,
) -> Response:
    try:
        page, subscription = await feed.subscribe(query, query.matches, snapshot_limit)
    except (errors.StoreError, sqlite3.Error):
        log.exception("%s subscription failed", feed.name)
        raise ApiError(500, "subscription_failed") from None

    async def events() -> AsyncIterator[bytes]:
        try:
            snapshot = page.entries
            size = event_size or max(len(snapshot), 1)
            # The first event is sent even when empty: it tells the client it is live.
            yield _event(snapshot[:size])
            for start in range(size, len(snapshot), size):
                yield _event(snapshot[start : start + size])
            async for batch in feed.follow(subscription, KEEPALIVE):
                yield _event(batch) if batch else b": keepalive\n\n"
        finally:
            feed.unsubscribe(subscription)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "connection": "keep-alive"},
    )


# --- /logs -----------------------------------------------------------------------------


async def handle(context: Context) -> Response:
    try:
        if context.request.method == "POST":
            return await _post_logs(context)
        if context.request.method == "GET":
            return await _get_logs(context)
        raise ApiError(405, "method_not_allowed")
    except ApiError as e:
        return e.response()


async def _post_logs(context: Context) -> Response:
    messages = _entries(await _json(context), "messages")
    for message in messages:
        values = message.get("values", {}) if isinstance(message, dict) else None
        if values is None and isinstance(message, dict):
            values = {}
        if not isinstance(values, dict) or not all(map(_valid_log_value, values.values())):
            raise _invalid("values", "invalid structure")
        try:
            # Values are returned verbatim later, so they must be valid JSON (1e999 is inf).
            json.dumps(values, allow_nan=False)
        except ValueError:
            raise _invalid("values", "invalid structure") from None
    return await _append(context.host.logs, messages, "values", "invalid structure")


async def _get_logs(context: Context) -> Response:
    params = context.request.query_params
    run_id = params.get("run")
    if not run_id:
        raise ApiError(400, "run_required")
    events = _wants_events(context)
    query = log_store.LogQuery(
        run_id=run_id,
        execution_id=params.get("execution") or None,
        workspaces=_list_param(context, "workspaces"),
        since=_since(context),
        after=None if events else _after(context, int),
    )
    if events:
        return await _stream(
            context.host.logs, query, snapshot_limit=LOG_BACKLOG, event_size=log_store.PAGE
        )
    page = await _query(context.host.logs, query, log_store.PAGE)
    return JSONResponse({"logs": page.entries, "cursor": page.cursor})


# --- /metrics --------------------------------------------------------------------------


async def handle_metrics(context: Context) -> Response:
    try:
        if context.request.method == "POST":
            entries = _entries(await _json(context), "entries")
            if not all(map(_valid_metric, entries)):
                raise _invalid("entries", "invalid entry structure")
            return await _append(
                context.host.metrics, entries, "entries", "invalid entry structure"
            )
        if context.request.method == "GET":
            return await _get_metrics(context)
        raise ApiError(405, "method_not_allowed")
    except ApiError as e:
        return e.response()


async def _get_metrics(context: Context) -> Response:
    params = context.request.query_params
    run_id, execution_id = params.get("run") or None, params.get("execution") or None
    if run_id is None and execution_id is None:
        raise ApiError(400, "run_or_execution_required")
    # Streams are for a run; an execution-only query is answered as JSON even then.
    events = _wants_events(context) and run_id is not None
    query = metric_store.MetricQuery(
        run_id=run_id,
        execution_id=execution_id,
        workspaces=_list_param(context, "workspaces"),
        keys=_list_param(context, "keys"),
        since=_since(context),
        after=None if events else _after(context, float),
    )
    if events:
        return await _stream(
            context.host.metrics,
            query,
            snapshot_limit=metric_store.SNAPSHOT_LIMIT,
            event_size=None,
        )
    page = await _query(context.host.metrics, query, metric_store.PAGE)
    return JSONResponse({"metrics": page.entries, "cursor": page.cursor})


# --- POST /api/rotate_logs -------------------------------------------------------------


async def rotate_logs(context: Context) -> Response:
    """Archive the project's active log partition now (super token only)."""
    if context.access.kind != "super":
        raise ApiError(403, "forbidden")
    await context.host.logs.rotate()
    return Response(status_code=204)


HANDLERS = {"rotate_logs": rotate_logs}
