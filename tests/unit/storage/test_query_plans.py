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

from pycoflux.orchestration import commands, model
from pycoflux.storage import archives, sqlite, views
from tests.unit.orchestration.conftest import Driver, Session

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


# --- Live executions ------------------------------------------------------------------


def live_history(driver: Driver) -> tuple[str, Session, str, str]:
    """A workspace with finished runs in its history and one run with live work.

    Returns the workspace, its worker, and the live run's root and child executions.
    """
    ws = driver.workspace()
    workflow = {"parameters": [], "waitFor": [], "delay": 0}
    driver.reply(
        commands.RegisterManifests(
            workspace_id=ws, manifests={"app": {"main": workflow, "other": workflow}}
        )
    )
    worker = driver.session(ws, workflows=("main", "other"), tasks=("step",))
    for i in range(5):
        done = driver.submit(ws, arguments=[i])
        worker.finish(done, i)
    root = driver.submit(ws, "other")
    child = worker.child(root, target="step")
    return ws, worker, root, child


def test_the_queue_and_modules_views_read_only_live_executions() -> None:
    driver = Driver()
    try:
        ws, worker, root, child = live_history(driver)
        run_id = root.split(":")[0]
        queue = views.queue(driver.db, ws)
        assert queue is not None
        assert {entry["runId"] for entry in queue.values()} == {run_id}
        assert {entry["target"] for entry in queue.values()} == {"other", "step"}
        modules = views.modules(driver.db, ws)
        assert modules is not None
        workflows = modules["app"]["workflows"]
        assert workflows == {"main": {"activeRuns": []}, "other": {"activeRuns": [run_id]}}
        worker.finish(child, 1)
        worker.finish(root, 2)
        assert views.queue(driver.db, ws) == {}
        for name, lookup in {
            "queue": lambda: views.queue(driver.db, ws),
            "modules": lambda: views.modules(driver.db, ws),
            "live": lambda: driver.store.live_executions_in_workspace(
                driver.execution(root).workspace_id
            ),
        }.items():
            lines = plans(driver.db, lookup)
            assert [line for line in lines if "executions_live" in line], (name, lines)
            assert not [line for line in lines if line.startswith("SCAN e")], (name, lines)
    finally:
        driver.close()


def test_the_live_flag_is_backfilled_from_completions_by_its_migration() -> None:
    driver = Driver()
    try:
        live_history(driver)
        db = driver.db
        expected = db.execute(
            "SELECT e.id, c.execution_id IS NULL FROM executions e"
            " LEFT JOIN completions c ON c.execution_id = e.id ORDER BY e.id"
        ).fetchall()
        assert {live for _, live in expected} == {0, 1}  # finished and live ones
        flags = "SELECT id, live IS NOT NULL FROM executions ORDER BY id"
        assert db.execute(flags).fetchall() == expected  # kept by the store as it runs
        # The database as it was before the migration that added the flag.
        db.execute("DROP INDEX executions_live")
        db.execute("ALTER TABLE executions DROP COLUMN live")
        db.execute("PRAGMA user_version = 4")
        sqlite.apply_migrations(db, archives.SCHEMA.migrations[:5])
        assert db.execute(flags).fetchall() == expected
    finally:
        driver.close()


def test_the_workflow_topic_walks_the_newest_runs_of_its_target() -> None:
    driver = Driver()
    try:
        ws, worker, root, _ = live_history(driver)
        other = driver.workspace("other")
        elsewhere = driver.session(other)
        for i in range(3):  # runs of the same target in another workspace
            elsewhere.finish(driver.submit(other, arguments=[i]), i)
        value = views.workflow(driver.db, ws, "app", "main")
        assert value is not None
        # The five finished runs of ``main`` in this workspace, newest first.
        expected = [
            row[0]
            for row in driver.db.execute(
                "SELECT r.external_id FROM runs r JOIN steps s ON s.run_id = r.id"
                " AND s.number = 1 JOIN executions e ON e.step_id = s.id AND e.attempt = 1"
                " JOIN workspaces w ON w.id = e.workspace_id"
                " WHERE s.target = 'main' AND w.external_id = ? ORDER BY r.id DESC",
                (ws,),
            )
        ]
        assert len(expected) == 5
        assert list(value["runs"]) == expected
        lines = plans(driver.db, lambda: views.workflow(driver.db, ws, "app", "main"))
        assert [line for line in lines if "steps_roots" in line], lines
        assert not [line for line in lines if "executions_workspace" in line], lines
        assert not [line for line in lines if "TEMP B-TREE" in line], lines
        del worker, root
    finally:
        driver.close()


# --- Search ---------------------------------------------------------------------------

# What search reported as each target's latest run before the table kept it: the newest
# execution (highest id) of each module and target in the workspace, over the history.
LATEST_BY_HISTORY = (
    "SELECT e.workspace_id, s.module, s.target, MAX(e.id) FROM executions e"
    " JOIN steps s ON s.id = e.step_id GROUP BY e.workspace_id, s.module, s.target"
)
LATEST_BY_TABLE = "SELECT workspace_id, module, target, execution_id FROM latest_executions"


def search_history(driver: Driver) -> tuple[str, str]:
    """Two workspaces running the same targets, with retries; returns both workspaces."""
    ws, worker, root, child = live_history(driver)
    other = driver.workspace("other")
    elsewhere = driver.session(other, tasks=("step",))
    for i in range(3):
        elsewhere.finish(driver.submit(other, arguments=[i]), i)
    retried = driver.submit(ws, options=model.StepOptions(retries=model.Retries(limit=1)))
    worker.error(retried, retryable=True)
    worker.terminated(retried)
    worker.finish(child, 1)
    worker.finish(root, 2)
    return ws, other


def test_search_reads_each_targets_latest_run_without_the_history() -> None:
    driver = Driver()
    try:
        ws, other = search_history(driver)
        db = driver.db
        latest = sorted(db.execute(LATEST_BY_HISTORY).fetchall())
        assert sorted(db.execute(LATEST_BY_TABLE).fetchall()) == latest
        assert len({row[0] for row in latest}) == 2  # both workspaces
        matches = views.search(db, ws, "ma")
        assert matches is not None
        (main,) = [m for m in matches if m.get("name") == "main"]
        # The retried run's second attempt is main's newest execution in this workspace.
        here = driver.store.workspace_by_external_id(ws)
        assert here is not None
        newest = max(row[3] for row in latest if row[2] == "main" and row[0] == here.id)
        assert main["run"]["attempt"] == driver.store.execution(newest).attempt == 2
        step = next(m for m in views.search(db, ws, "st") or [] if m.get("name") == "step")
        assert step["type"] == "task" and step["run"]["stepNumber"] == 2
        lines = plans(db, lambda: views.search(db, other, "ma"))
        assert not [line for line in lines if "executions_workspace" in line], lines
        assert not [line for line in lines if line.startswith("SCAN e")], lines
    finally:
        driver.close()


def test_the_latest_executions_are_backfilled_by_their_migration() -> None:
    driver = Driver()
    try:
        search_history(driver)
        db = driver.db
        expected = sorted(db.execute(LATEST_BY_HISTORY).fetchall())
        # The database as it was before the migration that added the table.
        db.execute("DROP TRIGGER executions_latest")
        db.execute("DROP TABLE latest_executions")
        db.execute("PRAGMA user_version = 6")
        sqlite.apply_migrations(db, archives.SCHEMA.migrations[:7])
        assert sorted(db.execute(LATEST_BY_TABLE).fetchall()) == expected
    finally:
        driver.close()
