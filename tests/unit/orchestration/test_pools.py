"""Pools and launched workers in the core, on the real store (semantics.md §2.16, §4.7, §4.8)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pycoflux.orchestration import commands, effects, pools
from tests.unit.orchestration.conftest import Driver, Session

PROCESS = {"type": "process", "directory": "/srv/app"}


class PoolDriver(Driver):
    """Keeps every launcher effect the core asks for."""

    def __init__(self) -> None:
        self.launcher_effects: list[effects.Launch | effects.PollWorker | effects.HaltWorker] = []
        super().__init__()

    def handle(self, command: commands.Command) -> list[effects.Effect]:
        produced = super().handle(command)
        for effect in produced:
            if isinstance(effect, effects.Launch | effects.PollWorker | effects.HaltWorker):
                self.launcher_effects.append(effect)
        return produced

    def launches(self) -> list[effects.Launch]:
        return [e for e in self.launcher_effects if isinstance(e, effects.Launch)]

    def polls(self) -> list[effects.PollWorker]:
        return [e for e in self.launcher_effects if isinstance(e, effects.PollWorker)]

    def halts(self) -> list[effects.HaltWorker]:
        return [e for e in self.launcher_effects if isinstance(e, effects.HaltWorker)]

    def create_pool(self, workspace_id: str, name: str = "cpu", **fields: Any) -> None:
        pool = pools.Pool(
            modules=tuple(fields.get("modules", ("app",))),
            provides=fields.get("provides", {}),
            accepts=fields.get("accepts", {}),
            launcher=fields.get("launcher", PROCESS),
        )
        self.reply(commands.CreatePool(workspace_id=workspace_id, name=name, pool=pool))

    def start_launched(
        self, launch: effects.Launch, *, tasks: tuple[str, ...] = ("work",)
    ) -> Session:
        """The launcher answers, and the worker connects with its session and declares."""
        self.handle(commands.LaunchSucceeded(worker_id=launch.worker_id, data={"pid": 1}))
        session = Session(self, launch.session, self.workspace_of(launch))
        session.connect()
        self.handle(
            commands.DeclareTargets(
                session_id=session.id,
                targets={"app": {"workflow": ["main"], "task": list(tasks)}},
                concurrency=0,
            )
        )
        return session

    def workspace_of(self, launch: effects.Launch) -> str:
        workspace = self.store.workspace_by_name(launch.workspace)
        assert workspace is not None
        return workspace.external_id

    def worker(self, worker_id: str) -> Any:
        return self.core._workers.get(worker_id)


@pytest.fixture
def pd() -> Iterator[PoolDriver]:
    d = PoolDriver()
    yield d
    d.close()


def test_create_update_delete(pd: PoolDriver) -> None:
    ws = pd.workspace()
    pd.create_pool(ws)
    assert pd.rejected(
        commands.CreatePool(workspace_id=ws, name="cpu", pool=pools.Pool())
    ) == effects.Rejected(error="already_exists", status=409)
    pd.reply(
        commands.UpdatePool(
            workspace_id=ws, name="cpu", patch={"modules": ("app", "other"), "launcher": {}}
        )
    )
    (row,) = pd.store.current_pools()
    assert row.pool is not None
    assert row.pool.modules == ("app", "other") and row.pool.launcher == PROCESS
    rejected = pd.rejected(
        commands.UpdatePool(workspace_id=ws, name="cpu", patch={"launcher": {"type": "docker"}})
    )
    assert (rejected.error, rejected.status) == ("type_change", 409)
    missing = pd.rejected(commands.UpdatePool(workspace_id=ws, name="gpu", patch={}))
    assert (missing.error, missing.status) == ("not_found", 404)
    pd.reply(commands.UpdatePool(workspace_id=ws, name="cpu", patch=None))
    assert pd.store.current_pools() == []
    pd.create_pool(ws)  # a deleted name can be created again


def test_unchanged_definition_adds_no_row(pd: PoolDriver) -> None:
    ws = pd.workspace()
    pd.create_pool(ws)
    pd.reply(commands.UpdatePool(workspace_id=ws, name="cpu", patch={"modules": ["app"]}))
    (count,) = pd.db.execute("SELECT count(*) FROM pools").fetchone()
    assert count == 1


def test_replace_checks_the_version_and_deletes_what_is_missing(pd: PoolDriver) -> None:
    ws = pd.workspace()
    pd.create_pool(ws, "a")
    pd.create_pool(ws, "b")
    stale = pd.rejected(
        commands.ReplacePools(workspace_id=ws, pools={"c": pools.Pool()}, expected="0" * 64)
    )
    assert (stale.error, stale.status) == ("conflict", 412)
    current = {row.name: row.definition_hash for row in pd.store.current_pools()}
    etag = pools.pools_etag(current)
    pd.reply(commands.ReplacePools(workspace_id=ws, pools={"c": pools.Pool()}, expected=etag))
    assert [row.name for row in pd.store.current_pools()] == ["c"]


def test_queued_work_launches_one_worker_that_runs_it(pd: PoolDriver) -> None:
    ws = pd.workspace()
    pd.create_pool(ws, modules=("app",))
    first = pd.submit(ws)
    (launch,) = pd.launches()
    assert launch.modules == ("app",) and launch.workspace == "default"
    assert launch.launcher == PROCESS
    pd.submit(ws)  # still pending: no second launch
    pd.advance(20_000)
    assert len(pd.launches()) == 1
    session = pd.start_launched(launch)
    assert first in session.executes()
    view = pd.core.session_view(pd.execution(first).workspace_id)
    assert view[session.id]["poolName"] == "cpu"
    assert view[session.id]["workerState"] == "active"


def test_no_launch_for_other_modules_tags_or_a_disabled_pool(pd: PoolDriver) -> None:
    ws = pd.workspace()
    pd.create_pool(
        ws, "gpu", modules=("app",), provides={"gpu": ["a100"]}, accepts={"gpu": ["a100"]}
    )
    pd.create_pool(ws, "other", modules=("elsewhere",))
    pd.submit(ws)
    assert pd.launches() == []  # the gpu pool only accepts work that requires a gpu
    pd.reply(commands.DisablePool(workspace_id=ws, name="gpu"))
    pd.reply(commands.UpdatePool(workspace_id=ws, name="gpu", patch={"accepts": None}))
    pd.advance(6_000)
    assert pd.launches() == []
    pd.reply(commands.EnablePool(workspace_id=ws, name="gpu"))
    assert len(pd.launches()) == 1


def test_disabled_pool_workers_take_no_work(pd: PoolDriver) -> None:
    ws = pd.workspace()
    pd.create_pool(ws)
    pd.submit(ws)
    session = pd.start_launched(pd.launches()[0])
    pd.reply(commands.DisablePool(workspace_id=ws, name="cpu"))
    later = pd.submit(ws)
    assert later not in session.executes()
    pd.reply(commands.EnablePool(workspace_id=ws, name="cpu"))
    assert later in session.executes()


def test_launches_are_throttled_per_pool(pd: PoolDriver) -> None:
    ws = pd.workspace()
    pd.create_pool(ws)
    pd.submit(ws)
    pd.start_launched(pd.launches()[0], tasks=())  # takes the workflow, not tasks
    pd.submit(ws, "work")  # nobody runs "work"
    assert len(pd.launches()) == 1  # the last launch was under 10 s ago
    pd.advance(10_000)
    assert len(pd.launches()) == 2


def test_idle_worker_drains_is_stopped_and_deactivated(pd: PoolDriver) -> None:
    ws = pd.workspace()
    pd.create_pool(ws)
    execution = pd.submit(ws)
    launch = pd.launches()[0]
    session = pd.start_launched(launch)
    assert len(pd.polls()) == 1  # polled as soon as it was launched
    pd.handle(commands.WorkerPolled(worker_id=launch.worker_id, running=True))
    session.finish(execution, 1)
    pd.advance(4_000)
    assert pd.worker(launch.worker_id).state is pools.WorkerState.ACTIVE
    pd.advance(2_000)
    assert pd.worker(launch.worker_id).state is pools.WorkerState.DRAINING
    (halt,) = pd.halts()
    assert halt.data == {"pid": 1}
    pd.handle(commands.WorkerStopped(worker_id=launch.worker_id))
    pd.handle(
        commands.WorkerPolled(worker_id=launch.worker_id, running=False, logs="bye", error=None)
    )
    assert pd.worker(launch.worker_id) is None
    assert (session.id, "session_invalid") in pd.closed
    (error, logs) = pd.db.execute(
        "SELECT d.error, l.content FROM worker_deactivations d"
        " LEFT JOIN worker_logs l ON l.id = d.log_id"
    ).fetchone()
    assert (error, logs) == (None, "bye")


def test_stop_and_resume_worker(pd: PoolDriver) -> None:
    ws = pd.workspace()
    pd.create_pool(ws)
    pd.submit(ws)
    launch = pd.launches()[0]
    session = pd.start_launched(launch)
    missing = pd.rejected(commands.StopWorker(workspace_id=ws, worker_id="nope"))
    assert missing.status == 404
    pd.reply(commands.StopWorker(workspace_id=ws, worker_id=launch.worker_id))
    later = pd.submit(ws)
    assert later not in session.executes()
    pd.reply(commands.ResumeWorker(workspace_id=ws, worker_id=launch.worker_id))
    assert later in session.executes()


def test_failed_launch_deactivates_the_worker_and_its_session(pd: PoolDriver) -> None:
    ws = pd.workspace()
    pd.create_pool(ws)
    pd.submit(ws)
    launch = pd.launches()[0]
    pd.handle(commands.LaunchFailed(worker_id=launch.worker_id, error="launch_process_failed"))
    assert pd.worker(launch.worker_id) is None
    assert not pd.core.session_token_valid(launch.session)
    (error,) = pd.db.execute("SELECT error FROM worker_deactivations").fetchone()
    assert error == "launch_process_failed"


def test_a_session_that_never_connects_deactivates_its_worker(pd: PoolDriver) -> None:
    ws = pd.workspace()
    pd.create_pool(ws)
    pd.submit(ws)
    launch = pd.launches()[0]
    pd.advance(600_001)
    assert pd.worker(launch.worker_id) is None
    errors = [row[0] for row in pd.db.execute("SELECT error FROM worker_deactivations")]
    assert errors[0] == "launch_incomplete"
    # A launch that answers after all is stopped at once.
    pd.handle(commands.LaunchSucceeded(worker_id=launch.worker_id, data={"pid": 7}))
    assert [h.data for h in pd.halts()] == [{"pid": 7}]


def test_pool_change_drains_its_workers(pd: PoolDriver) -> None:
    ws = pd.workspace()
    pd.create_pool(ws)
    pd.submit(ws)
    launch = pd.launches()[0]
    pd.start_launched(launch)
    pd.reply(commands.UpdatePool(workspace_id=ws, name="cpu", patch={"provides": {"a": ["b"]}}))
    assert pd.worker(launch.worker_id).state is pools.WorkerState.DRAINING


def test_workers_survive_a_restart(pd: PoolDriver) -> None:
    ws = pd.workspace()
    pd.create_pool(ws)
    pd.submit(ws)
    launch = pd.launches()[0]
    session = pd.start_launched(launch)
    pd.restart()
    assert pd.worker(launch.worker_id).data == {"pid": 1}
    session.connect()
    view = pd.core.session_view(pd.store.workspace_by_external_id(ws).id)  # type: ignore[union-attr]
    assert view[session.id]["poolName"] == "cpu"


def test_unlaunched_worker_without_session_is_deactivated_at_start(pd: PoolDriver) -> None:
    ws = pd.workspace()
    pd.create_pool(ws)
    pd.submit(ws)
    launch = pd.launches()[0]
    session_id = launch.session.split(".")[0]
    pd.db.execute("UPDATE sessions SET expired_at = 1 WHERE external_id = ?", (session_id,))
    pd.restart()
    assert pd.worker(launch.worker_id) is None
    (error,) = pd.db.execute("SELECT error FROM worker_deactivations").fetchone()
    assert error == "server_restarted"
