"""Topic snapshots over REST (``GET /topics/...``): the current value of a named document."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from starlette.responses import JSONResponse, Response

from pycoflux.orchestration import core
from pycoflux.server.context import ApiError, Context
from pycoflux.storage import views

Builder = Callable[[sqlite3.Connection, core.Orchestrator], Any]


def route(segments: list[str]) -> Builder | None:
    """The function computing the topic at these path segments, if there is one."""
    match segments:
        case ["workspaces"]:
            return lambda db, _: views.workspaces(db)
        case ["workspaces", ws, "manifests"]:
            return lambda db, _: views.manifests(db, ws)
        case ["workspaces", ws, "modules"]:
            return lambda db, _: views.modules(db, ws)
        case ["workspaces", ws, "queue"]:
            return lambda db, _: views.queue(db, ws)
        case ["workspaces", ws, "workflows", module, target]:
            return lambda db, _: views.workflow(db, ws, module, target)
        case ["workspaces", ws, "runs", run]:
            return lambda db, _: views.run(db, ws, run)
        case ["workspaces", ws, "sessions"]:
            return lambda db, orchestrator: _sessions(db, orchestrator, ws)
        case ["workspaces", ws, "inputs"]:
            return lambda db, _: views.workspace_inputs(db, ws)
        case ["inputs", *parts] if parts:
            # An input id contains a "/" ("<run>/i<n>"), percent-encoded or not.
            return lambda db, _: views.input_view(db, "/".join(parts))
        case ["asset", asset_id]:
            return lambda db, _: views.asset(db, asset_id)
        case ["streams", stream_id]:
            return lambda db, _: views.stream(db, stream_id)
    return None


def builder_for(host: Any, segments: list[str]) -> Builder | None:
    """``route``, plus the topics kept outside the orchestration store (``tokens``)."""
    if segments == ["tokens"]:
        admin = host.admin
        return lambda _db, _core: admin.tokens_view(int(time.time()))
    return route(segments)


def _sessions(db: sqlite3.Connection, orchestrator: core.Orchestrator, ws: str) -> Any:
    row = db.execute("SELECT id FROM workspaces WHERE external_id = ?", (ws,)).fetchone()
    return None if row is None else orchestrator.session_view(row[0])


async def snapshot(context: Context) -> Response:
    if context.request.method != "GET":
        return Response(status_code=405)
    path = context.request.path_params.get("path", "")
    segments = [unquote(segment) for segment in path.split("/") if segment]
    builder = builder_for(context.host, segments)
    value = None if builder is None else await context.host.read(builder)
    if value is None:
        raise ApiError(404, "not_found")
    return JSONResponse(value)
