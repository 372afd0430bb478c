"""Topic snapshots over REST (``GET /topics/...``): the current value of a named document."""

from __future__ import annotations

import sqlite3
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
    return None


def _sessions(db: sqlite3.Connection, orchestrator: core.Orchestrator, ws: str) -> Any:
    row = db.execute("SELECT id FROM workspaces WHERE external_id = ?", (ws,)).fetchone()
    return None if row is None else orchestrator.session_view(row[0])


async def snapshot(context: Context) -> Response:
    if context.request.method != "GET":
        return Response(status_code=405)
    path = context.request.path_params.get("path", "")
    builder = route([unquote(segment) for segment in path.split("/") if segment])
    value = None if builder is None else await context.host.read(builder)
    if value is None:
        raise ApiError(404, "not_found")
    return JSONResponse(value)
