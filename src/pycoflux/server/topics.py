"""Topic snapshots over REST (``GET /topics/...``): the current value of a named document."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from starlette.responses import JSONResponse, Response

from pycoflux.orchestration import core, model
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
        case ["workspaces", ws, "pools"]:
            return lambda db, _: views.pools_topic(db, ws)
        case ["workspaces", ws, "pools", name]:
            return lambda db, _: views.pool_topic(db, ws, name)
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
    builder = route(segments)
    # A run, an input of one or an asset missing from the active epoch is read from the
    # newest archive holding it, read-only (it is copied forward only when acted upon).
    match segments:
        case ["workspaces", ws, "runs", run] if builder is not None:
            return RunTopic(host, ws, run)
        case ["inputs", *parts] if builder is not None and parts:
            input_id = "/".join(parts)
            parsed = model.parse_input_id(input_id)
            if parsed is not None:
                return _or_archived(
                    builder, host, parsed[0], lambda db: views.input_view(db, input_id)
                )
        case ["asset", asset_id] if builder is not None:
            return _or_archived(
                builder, host, asset_id, lambda db: views.asset(db, asset_id), field="assets"
            )
        case ["workspaces", ws, "workflows", module, target] if builder is not None:
            return _with_archived_runs(
                builder, host, lambda db: views.workflow(db, ws, module, target)
            )
    return builder


ARCHIVED_RUN_EPOCHS = 5  # a workflow's run list reaches back this many archived epochs
RUN_LIST_LIMIT = 50


def _with_archived_runs(
    builder: Builder, host: Any, read: Callable[[sqlite3.Connection], Any]
) -> Builder:
    """A workflow topic whose run list includes runs from the newest archived epochs."""

    def build(db: sqlite3.Connection, orchestrator: core.Orchestrator) -> Any:
        value = builder(db, orchestrator)
        for epoch_id in host.epochs.newest(ARCHIVED_RUN_EPOCHS):
            found = host.epochs.search(None, None, read, epochs_=[epoch_id])
            if found is None:
                continue
            if value is None:
                value = found[1]
                continue
            for run_id, run in found[1]["runs"].items():
                value["runs"].setdefault(run_id, run)
        if value is not None and len(value["runs"]) > RUN_LIST_LIMIT:
            newest = sorted(value["runs"].values(), key=lambda r: r["createdAt"], reverse=True)
            value["runs"] = {r["id"]: r for r in newest[:RUN_LIST_LIMIT]}
        return value

    return build


def _or_archived(
    builder: Builder,
    host: Any,
    key: str,
    read: Callable[[sqlite3.Connection], Any],
    *,
    field: str = "runs",
) -> Builder:
    """``builder``, falling back to the archives whose ``field`` filter may hold ``key``."""

    def build(db: sqlite3.Connection, orchestrator: core.Orchestrator) -> Any:
        value = builder(db, orchestrator)
        if value is None:
            found = host.epochs.search(field, key, read)
            value = None if found is None else found[1]
        return value

    return build


SLICE_SECONDS = 0.002  # the longest a slice of a run topic's build holds the store


class RunTopic:
    """A run topic: read in slices of steps (``views.RunBuild``), so that building a run of
    thousands of steps lets the commands queued meanwhile through between slices; from the
    newest archive holding it if it left the active epoch. Called as a ``Builder`` it
    reads the whole run at once.
    """

    def __init__(self, host: Any, workspace: str, run_id: str) -> None:
        self.host = host
        self.workspace = workspace
        self.run_id = run_id

    def __call__(self, db: sqlite3.Connection, orchestrator: core.Orchestrator) -> Any:
        value = views.run(db, self.workspace, self.run_id)
        return self._archived() if value is None else value

    def _archived(self) -> Any:
        found = self.host.epochs.search(
            "runs", self.run_id, lambda db: views.run(db, self.workspace, self.run_id)
        )
        return None if found is None else found[1]

    async def read(self) -> tuple[Any, float]:
        """The run, and the seconds its slices held the store."""
        build = views.RunBuild(self.workspace, self.run_id, budget=SLICE_SECONDS)
        _, spent = await read(self.host, lambda db, _: build.start(db))
        while not build.done:
            spent += (await read(self.host, lambda db, _: build.resume(db)))[1]
        if build.value is None:  # not in the active epoch (or no longer)
            return await self.host.read(self), spent
        return build.value, spent


async def read(host: Any, builder: Builder) -> tuple[Any, float]:
    """A topic's value, and the seconds its build held the store."""
    if isinstance(builder, RunTopic):
        return await builder.read()
    spent = 0.0

    def timed(db: sqlite3.Connection, orchestrator: core.Orchestrator) -> Any:
        nonlocal spent
        started = time.perf_counter()
        try:
            return builder(db, orchestrator)
        finally:
            spent = time.perf_counter() - started

    return await host.read(timed), spent


def _sessions(db: sqlite3.Connection, orchestrator: core.Orchestrator, ws: str) -> Any:
    row = db.execute("SELECT id FROM workspaces WHERE external_id = ?", (ws,)).fetchone()
    return None if row is None else orchestrator.session_view(row[0])


async def snapshot(context: Context) -> Response:
    if context.request.method != "GET":
        return Response(status_code=405)
    path = context.request.path_params.get("path", "")
    segments = [unquote(segment) for segment in path.split("/") if segment]
    builder = builder_for(context.host, segments)
    value = None if builder is None else (await read(context.host, builder))[0]
    if value is None:
        raise ApiError(404, "not_found")
    return JSONResponse(value)
