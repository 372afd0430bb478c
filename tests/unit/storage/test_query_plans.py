"""Look-ups on the core's paths use a selective index, not a scan of a workspace or table.

``executions`` has an index on ``workspace_id`` for the listings that want every
execution of a workspace; a look-up by cache key, memo key or step must not take it
instead, or its cost grows with the workspace's whole history. SQLite picks the plan per
statement, so the statements each look-up runs are captured and their plans read back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from pycoflux.orchestration import model
from tests.unit.orchestration.conftest import Driver

CACHE = model.StepOptions(
    cache={"params": True, "maxAge": None, "namespace": None, "version": None}, memo=True
)


def plans(db: sqlite3.Connection, lookup: Callable[[], Any]) -> list[str]:
    """The query plan lines of every SELECT ``lookup`` runs."""
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    try:
        lookup()
    finally:
        db.set_trace_callback(None)
    lines = []
    for statement in statements:
        if statement.lstrip().upper().startswith("SELECT"):
            lines += [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + statement)]
    assert lines, "the look-up ran no query"
    return lines


def test_reuse_and_checkpoint_lookups_do_not_scan_the_workspace() -> None:
    driver = Driver()
    try:
        check_lookups(driver)
    finally:
        driver.close()


def check_lookups(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    for i in range(20):  # some history in the workspace
        worker.finish(worker.child(root, arguments=[i]), i)
    cached = driver.execution(worker.child(root, options=CACHE, arguments=["x"]))
    store, workspace = driver.store, cached.workspace_id
    (memo_key,) = driver.db.execute(
        "SELECT memo_key FROM steps WHERE id = ?", (cached.step_id,)
    ).fetchone()
    assert cached.cache_key is not None and memo_key is not None
    lookups = {
        "cache": lambda: store.find_reusable(
            cache_key=cached.cache_key,
            workspaces=[workspace],
            exclude_step=cached.step_id,
            succeeded_since=None,
        ),
        "memo": lambda: store.find_reusable(
            memo_key=memo_key, run_id=cached.run_id, workspaces=[workspace]
        ),
        "checkpoint": lambda: store.checkpoint_source(cached.step_id, workspace, 2),
        "stream closures": lambda: store.own_stream_closures(cached.id),
    }
    for name, lookup in lookups.items():
        lines = plans(driver.db, lookup)
        assert not [line for line in lines if "executions_workspace" in line], (name, lines)
        assert not [line for line in lines if line.startswith("SCAN")], (name, lines)
