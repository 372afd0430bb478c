"""Orchestration epochs on real SQLite files: rotation, copy-forward, reads across epochs
(``semantics.md`` §11.3-11.5; checklist I 115-124). The core runs on the store as in the
server, with the archive fallback wired in.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pycoflux.orchestration import commands, core, effects, model, pools
from pycoflux.storage import archives, epochs, orchestration, views
from tests.unit.orchestration.conftest import START, Driver, Session
from tests.unit.orchestration.test_assets import put
from tests.unit.orchestration.test_inputs import new_input

C = model.Completion


class EpochDriver(Driver):
    """The core driver on ``orchestration.sqlite`` in a directory, with its archives."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.epochs = archives.OrchestrationEpochs(directory)
        self.unindexed = self.epochs.open()
        self.db = self.epochs.active
        self.store = orchestration.SqliteOrchestrationStore(self.db, self.epochs)
        self.core = core.Orchestrator(self.store, rng=random.Random(0))
        self.now = START
        self.timers: dict[tuple[Any, ...], int] = {}
        self.frames: dict[str, list[list[Any]]] = {}
        self.closed: list[tuple[str, str]] = []
        self.launches: list[effects.Launch] = []
        self.handle(commands.Start())

    def handle(self, command: commands.Command) -> list[effects.Effect]:
        produced = super().handle(command)
        self.launches += [e for e in produced if isinstance(e, effects.Launch)]
        return produced

    def close(self) -> None:
        self.epochs.close()

    def rotate(self, *, index: bool = False) -> str:
        epoch_id = self.epochs.rotate(self.now)
        self.db = self.epochs.active
        self.store.reconnect(self.db)
        if index:
            filters = self.epochs.compute_filters(epoch_id)
            assert filters is not None
            self.epochs.set_filters(epoch_id, filters)
        return epoch_id

    def active_runs(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT external_id FROM runs")}

    def archive(self, epoch_id: str) -> sqlite3.Connection:
        return epochs.open_read_only(self.epochs.partitions.archive_path(epoch_id))


@pytest.fixture
def driver(tmp_path: Path) -> Any:
    d = EpochDriver(tmp_path)
    yield d
    d.close()


def run_id(execution_id: str) -> str:
    return execution_id.split(":")[0]


def cache() -> model.StepOptions:
    return model.StepOptions(cache={"params": True, "maxAge": None, "namespace": None})


def test_124_epoch_ids_and_the_index_list_every_archive(driver: EpochDriver) -> None:
    driver.workspace()
    first = driver.rotate()
    second = driver.rotate()
    # The UTC day of the rotation (START is 2023-11-14T22:13:20Z), then a per-day counter.
    assert (first, second) == ("20231114_0001", "20231114_0002")
    archive_dir = driver.directory / "orchestration"
    assert {p.name for p in archive_dir.glob("*.sqlite")} == {
        f"{first}.sqlite",
        f"{second}.sqlite",
    }
    index = json.loads((archive_dir / "index.json").read_text())
    assert list(index) == [second, first]  # newest first
    assert index[first] == [None, START]  # listed before its filters exist
    # Unindexed archives are queued again at the next open.
    driver.close()
    again = EpochDriver(driver.directory)
    assert again.unindexed == [first, second]
    again.close()


def test_115_125_configuration_and_live_runs_keep_their_ids(driver: EpochDriver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    done = driver.submit(ws)
    worker.finish(done, "old")
    live = driver.submit(ws)
    child = worker.child(live, arguments=[1])
    workspace_row = driver.store.workspace_by_external_id(ws)
    live_ids = driver.execution(live).id, driver.execution(child).id
    driver.rotate()
    assert driver.active_runs() == {run_id(live)}
    assert driver.store.workspace_by_external_id(ws) == workspace_row
    assert (driver.execution(live).id, driver.execution(child).id) == live_ids
    # The connected session carries on: the queued child is dispatched and completes.
    worker.finish(child, 2)
    worker.finish(live, "new")
    assert driver.completion(live) == (C.SUCCEEDED, None)
    assert driver.resolve(child).value == ["raw", 2, []]


def test_a_completed_run_is_read_from_its_archive_without_copying(driver: EpochDriver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    done = driver.submit(ws)
    worker.finish(done, "old")
    driver.rotate()

    def read(db: sqlite3.Connection) -> Any:
        return db.execute("SELECT count(*) FROM runs WHERE external_id = ?", (run_id(done),))

    assert driver.epochs.read_run(run_id(done), lambda db: read(db).fetchone()[0] or None) == 1
    assert run_id(done) not in driver.active_runs()


def test_116_119_a_reference_copies_the_run_forward_with_new_ids(driver: EpochDriver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    child = worker.child(root, arguments=[1])
    worker.finish(child, "child value")
    worker.finish(root, "root value")
    driver.rotate()
    driver.workspace("other")  # new rows take ids the archived run had
    assert run_id(root) not in driver.active_runs()
    copied = driver.execution(child)  # resolving an old execution id
    assert run_id(root) in driver.active_runs()
    assert driver.resolve(child).value == ["raw", "child value", []]
    assert driver.resolve(root).value == ["raw", "root value", []]
    assert copied.parent_id == driver.execution(root).id
    # Re-running the step of the copied run starts attempt 2.
    reply = driver.reply(
        commands.RerunStep(workspace_id=ws, step_id=f"{run_id(root)}:2", principal=None)
    )
    assert reply["attempt"] == 2


def test_a_run_copied_from_an_archive_older_than_the_live_flag_is_not_live(
    driver: EpochDriver,
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    worker.finish(worker.child(root, arguments=[1]), 1)
    worker.finish(root, 2)
    epoch_id = driver.rotate()
    # The archive as a server before the flag (migration 5) wrote it.
    old = sqlite3.connect(driver.epochs.partitions.archive_path(epoch_id))
    old.execute("DROP INDEX executions_live")
    old.execute("ALTER TABLE executions DROP COLUMN live")
    old.commit()
    old.close()
    driver.execution(root)  # copies the run forward
    assert run_id(root) in driver.active_runs()
    assert driver.store.live_executions_in_workspace(driver.execution(root).workspace_id) == []
    assert views.queue(driver.db, ws) == {}


def test_118_a_child_run_brings_its_parent_run_along(driver: EpochDriver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws, workflows=("main", "sub"))
    root = driver.submit(ws)
    step = worker.child(root, "sub", type=model.TargetType.WORKFLOW)
    completion = driver.completion(step)
    assert completion is not None and completion[0] == C.SPAWNED and completion[1] is not None
    spawned = completion[1]  # the root of the run the workflow call became
    assert run_id(spawned) != run_id(root)
    worker.finish(spawned, "sub value")
    worker.finish(root, "root value")
    driver.rotate()
    assert driver.active_runs() == set()
    reply = driver.reply(
        commands.RerunStep(workspace_id=ws, step_id=f"{run_id(spawned)}:1", principal=None)
    )
    assert reply["attempt"] == 2
    assert driver.active_runs() == {run_id(root), run_id(spawned)}
    parent = driver.db.execute(
        "SELECT r.external_id FROM runs c JOIN executions e ON e.id = c.parent_execution_id"
        " JOIN steps s ON s.id = e.step_id JOIN runs r ON r.id = s.run_id"
        " WHERE c.external_id = ?",
        (run_id(spawned),),
    ).fetchone()
    assert parent == (run_id(root),)


def test_117_120_a_cache_hit_is_found_in_the_oldest_of_three_epochs(
    driver: EpochDriver,
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first_root = driver.submit(ws)
    first = worker.child(first_root, arguments=[7], options=cache())
    worker.finish(first, 49)
    worker.finish(first_root, None)
    oldest = driver.rotate(index=True)
    driver.rotate(index=True)
    driver.rotate(index=True)
    key = driver.db.execute("SELECT 1").fetchone()  # the active file is fresh
    assert key == (1,)
    filters = driver.epochs.partitions.index.archives[oldest].filters
    assert filters is not None
    cache_key = driver.archive(oldest).execute("SELECT cache_key FROM steps WHERE number = 2")
    assert bytes.fromhex(cache_key.fetchone()[0]) in filters["cache_keys"]
    second_root = driver.submit(ws)
    second = worker.child(second_root, arguments=[7], options=cache())
    assert driver.completion(second) == (C.CACHED, first)
    assert driver.resolve(second).value == ["raw", 49, []]
    assert second not in worker.executes()


def test_122_an_idempotency_key_is_found_in_an_archive_read_only(driver: EpochDriver) -> None:
    ws = driver.workspace()

    def submit() -> str:
        reply = driver.reply(
            commands.SubmitWorkflow(
                workspace_id=ws,
                module="app",
                target="main",
                arguments=[],
                options=model.StepOptions(),
                idempotency_key="order-1",
            )
        )
        return str(reply["runId"])

    first = submit()
    driver.reply(commands.CancelExecution(workspace_id=ws, execution_id=f"{first}:1:1"))
    driver.rotate(index=True)
    driver.rotate()  # and once more, unindexed
    assert submit() == first
    assert first not in driver.active_runs()


def test_121_assets_are_copied_with_the_run(driver: EpochDriver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    entries = {"a.txt": ["ab" * 32, 3, {}]}
    asset_id = put(worker, root, entries, name="bundle")[2][0]
    worker.finish(root, None)
    before = driver.store.asset_by_external_id(asset_id)
    driver.rotate()
    assert driver.db.execute("SELECT count(*) FROM assets").fetchone() == (0,)
    driver.execution(root)  # the run comes forward with the asset it persisted
    after = driver.store.asset_by_external_id(asset_id)
    assert before is not None and after is not None
    assert (after.external_id, after.name, after.entries) == (
        before.external_id,
        before.name,
        before.entries,
    )
    # An asset known only from a value is found in the archives by its id.
    driver.rotate()
    assert driver.store.asset_by_external_id(asset_id) == after


def test_a_crash_between_rename_and_copy_is_finished_at_open(tmp_path: Path) -> None:
    driver = EpochDriver(tmp_path)
    ws = driver.workspace()
    worker = driver.session(ws)
    live = driver.submit(ws)
    # The file work alone, as if the process died before the copy committed.
    epoch_id = driver.epochs.partitions.rotate(driver.now)
    driver.close()
    assert worker.id
    again = EpochDriver(tmp_path)
    try:
        assert again.store.workspace_by_external_id(ws) is not None
        assert run_id(live) in again.active_runs()
        assert archives.seeded_from(again.db) == epoch_id
    finally:
        again.close()


def test_125_pools_keep_their_current_definition_and_state(driver: EpochDriver) -> None:
    ws = driver.workspace()
    process = {"type": "process", "directory": "/srv/app"}

    def pool(*modules: str) -> pools.Pool:
        return pools.Pool(modules=modules, provides={}, accepts={}, launcher=process)

    driver.reply(commands.CreatePool(workspace_id=ws, name="cpu", pool=pool("app")))
    driver.reply(commands.CreatePool(workspace_id=ws, name="gpu", pool=pool("app")))
    driver.reply(commands.CreatePool(workspace_id=ws, name="old", pool=pool("app")))
    driver.reply(commands.UpdatePool(workspace_id=ws, name="cpu", patch={"modules": ["b"]}))
    driver.reply(commands.UpdatePool(workspace_id=ws, name="old", patch=None))
    driver.reply(commands.DisablePool(workspace_id=ws, name="gpu"))

    def current(db: sqlite3.Connection) -> list[Any]:
        return db.execute(
            "SELECT p.name, p.external_id, d.modules, l.config, s.state FROM pools p"
            " LEFT JOIN pool_definitions d ON d.id = p.definition_id"
            " LEFT JOIN launchers l ON l.id = d.launcher_id"
            " LEFT JOIN pool_states s ON s.id = (SELECT max(id) FROM pool_states"
            "   WHERE workspace_id = p.workspace_id AND name = p.name)"
            " WHERE p.id IN (SELECT max(id) FROM pools GROUP BY workspace_id, name)"
            " ORDER BY p.name"
        ).fetchall()

    before = current(driver.db)
    assert [row[0] for row in before] == ["cpu", "gpu", "old"]
    assert before[2][2] is None  # deleted
    assert before[1][4] == 1  # disabled
    driver.rotate()
    assert current(driver.db) == before
    # Only the current row per pool was carried: the superseded "cpu" row stayed behind.
    assert driver.db.execute("SELECT count(*) FROM pools").fetchone() == (3,)


def test_125_live_pool_workers_and_their_sessions_carry_on(driver: EpochDriver) -> None:
    ws = driver.workspace()
    process = {"type": "process", "directory": "/srv/app"}
    driver.reply(
        commands.CreatePool(
            workspace_id=ws,
            name="cpu",
            pool=pools.Pool(modules=("app",), provides={}, accepts={}, launcher=process),
        )
    )
    root = driver.submit(ws)
    [launch] = driver.launches
    driver.handle(commands.LaunchSucceeded(worker_id=launch.worker_id, data={"pid": 1}))
    session = Session(driver, launch.session, ws)
    session.connect()
    driver.handle(
        commands.DeclareTargets(
            session_id=session.id, targets={"app": {"workflow": ["main"]}}, concurrency=0
        )
    )
    assert root in session.executes()
    rows = driver.db.execute("SELECT * FROM workers").fetchall()
    driver.rotate()
    assert driver.db.execute("SELECT * FROM workers").fetchall() == rows
    assert driver.db.execute("SELECT data FROM worker_launch_results").fetchall() == [
        ('{"pid":1}',)
    ]
    session.finish(root, "done")  # the launched worker's session carries on
    assert driver.completion(root) == (C.SUCCEEDED, None)


def test_an_input_of_an_archived_run_brings_its_run_forward(driver: EpochDriver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    input_id = new_input(worker, root)
    worker.finish(root, None)  # never waited for it
    driver.rotate()
    assert run_id(root) not in driver.active_runs()
    driver.handle(commands.RespondInput(input_id=input_id, value=True))
    assert run_id(root) in driver.active_runs()
    row = driver.store.input_by_external_id(input_id)
    assert row is not None and row.prompt.template == "Approve {thing}?"


def test_search_sees_runs_carried_into_the_active_epoch(driver: EpochDriver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws, workflows=("main", "other"))
    live = driver.submit(ws)
    done = driver.submit(ws, "other")
    worker.finish(done, "old")
    driver.rotate()  # the live run is carried over with its ids; the finished one is not
    latest = "SELECT module, target, execution_id FROM latest_executions"
    assert driver.db.execute(latest).fetchall() == [("app", "main", driver.execution(live).id)]
    (main,) = [m for m in views.search(driver.db, ws, "main") or [] if m.get("name") == "main"]
    assert main["run"]["runId"] == run_id(live)
    driver.execution(done)  # a reference copies the finished run forward, with new ids
    assert sorted(driver.db.execute(latest).fetchall()) == [
        ("app", "main", driver.execution(live).id),
        ("app", "other", driver.execution(done).id),
    ]
    worker.finish(live, "new")
