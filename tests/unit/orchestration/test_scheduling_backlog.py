"""A scheduling pass does not revisit queued work that cannot start yet.

Every command that changes something runs a pass (``semantics.md`` §4.4), so a pass that
walked every queued execution would make each command cost as much as the backlog:
executions delayed into the future, executions waiting on a dependency, an input or a
stream. These tests count what a pass examines, and check that the held-back work still
starts the moment it can.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pycoflux.orchestration import caching, commands, deferral, model
from pycoflux.orchestration.handlers.scheduling import SWEEP_MS
from tests.unit.orchestration.conftest import Driver
from tests.unit.orchestration.test_conformance_semantics import reference, tagged_session

BACKLOG = 200


class PassSpy:
    """Counts the executions scheduling passes yield as placeable and examine for readiness."""

    def __init__(self, driver: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
        self.placeable = 0
        self.examined = 0
        core = driver.core
        placeable, blockers = core._placeable, core._blockers

        def counting_placeable(*args: Any) -> Iterator[Any]:
            for item in placeable(*args):
                self.placeable += 1
                yield item

        def counting_blockers(execution: model.Execution) -> Any:
            self.examined += 1
            return blockers(execution)

        monkeypatch.setattr(core, "_placeable", counting_placeable)
        monkeypatch.setattr(core, "_blockers", counting_blockers)

    def reset(self) -> None:
        self.placeable = self.examined = 0


def test_executions_delayed_into_the_future_are_not_walked(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    later = [
        worker.child(root, options=model.StepOptions(delay=60_000), arguments=[i])
        for i in range(BACKLOG)
    ]
    spy = PassSpy(driver, monkeypatch)
    now = worker.child(root, arguments=["now"])
    assert now in worker.executes()
    assert spy.placeable == 1  # the new child only, not the delayed backlog
    assert not set(later) & set(worker.executes())
    driver.advance(60_000)
    assert set(later) <= set(worker.executes())


def test_executions_requiring_tags_no_free_session_offers_are_not_walked(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = driver.workspace()
    plain = driver.session(ws)
    root = driver.submit(ws)
    gpu = model.StepOptions(requires={"gpu": ["a100"]})
    needing = [plain.child(root, options=gpu, arguments=[i]) for i in range(BACKLOG)]
    spy = PassSpy(driver, monkeypatch)
    plain.child(root, arguments=["untagged"])
    assert spy.placeable == 1
    assert not set(needing) & set(plain.executes())
    spy.reset()
    tagged = tagged_session(driver, ws, provides={"gpu": ["a100"]}, workflows=())
    assert spy.placeable == BACKLOG
    assert sorted(tagged.executes()) == sorted(needing)


def test_waiting_executions_are_parked_until_their_dependency_resolves(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    running = worker.child(root)
    waiting = [
        worker.child(root, options=model.StepOptions(wait_for=[0]), values=[reference(running)])
        for _ in range(BACKLOG)
    ]
    spy = PassSpy(driver, monkeypatch)
    for i in range(5):
        worker.child(root, arguments=[i])  # unrelated work: each command runs a pass
    assert spy.examined == 5  # the five new children, never the parked backlog
    spy.reset()
    worker.finish(running, 1)  # no time passes: the wake-up alone releases them
    assert spy.examined == BACKLOG
    assert set(waiting) <= set(worker.executes())


def test_suspended_successors_are_parked_until_a_handle_resolves(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    dependency = worker.child(root)
    suspended = []
    for _ in range(20):
        caller = worker.child(root, type=model.TargetType.TASK)
        worker.select(caller, [dependency], timeout_ms=0, suspend=True)
        suspended.append(caller[:-1] + "2")
    spy = PassSpy(driver, monkeypatch)
    worker.child(root)
    assert spy.examined == 1
    assert not set(suspended) & set(worker.executes())
    worker.finish(dependency, "ready")
    assert set(suspended) <= set(worker.executes())


CACHE = model.StepOptions(
    cache={"params": True, "maxAge": None, "namespace": None, "version": None}
)


def test_a_cache_miss_is_looked_up_again_only_when_its_key_reappears(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws, concurrency=1)  # the root takes the only slot
    root = driver.submit(ws)
    queued = [worker.child(root, options=CACHE, arguments=[i]) for i in range(BACKLOG)]
    lookups: list[int] = []
    cache_hit = caching.cache_hit

    def counting(store: Any, execution: model.Execution, *args: Any) -> int | None:
        lookups.append(execution.id)
        return cache_hit(store, execution, *args)

    monkeypatch.setattr(caching, "cache_hit", counting)
    for i in range(5):
        worker.child(root, arguments=[i])  # no cache key: nothing to look up again
    assert lookups == []
    duplicate = worker.child(root, options=CACHE, arguments=[3])
    # The duplicate and the queued execution with its key, and no other.
    assert sorted(lookups) == sorted(driver.execution(e).id for e in (queued[3], duplicate))
    outcomes = {driver.completion(queued[3]), driver.completion(duplicate)}
    assert outcomes in (
        {(model.Completion.CACHED, duplicate), None},
        {(model.Completion.CACHED, queued[3]), None},
    )


def test_only_executions_sharing_a_defer_key_are_split(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws, concurrency=1)
    root = driver.submit(ws)
    defer = model.StepOptions(defer={"params": True})
    queued = [worker.child(root, options=defer, arguments=[i]) for i in range(BACKLOG)]
    split_sizes: list[int] = []
    split = deferral.split

    def counting(executions: list[model.Execution], now: int) -> deferral.Split:
        split_sizes.append(len(executions))
        return split(executions, now)

    monkeypatch.setattr(deferral, "split", counting)
    worker.child(root, arguments=["unrelated"])
    assert sum(split_sizes) == 0
    newer = worker.child(root, options=defer, arguments=[3])
    assert split_sizes == [2]
    assert driver.completion(queued[3]) == (model.Completion.DEFERRED, newer)


def test_a_parked_execution_is_looked_at_again_by_a_sweep(driver: Driver) -> None:
    """Parking waits for a wake-up; should one never come, passes keep re-examining a few
    parked executions at a time, so the cost is a delay, never a hang."""
    ws = driver.workspace()
    worker = driver.session(ws, concurrency=2)
    root = driver.submit(ws)
    busy = worker.child(root)
    ready = worker.child(root)  # nothing to wait for, but no room yet
    assert ready not in worker.executes()
    driver.store.queue().park(driver.execution(ready).id, [("execution", 10**9)])
    worker.finish(busy, 1)  # room now; the execution is parked as if a wake-up went missing
    assert ready not in worker.executes()
    driver.advance(SWEEP_MS)
    worker.heartbeat(root)  # any command runs a pass
    assert ready in worker.executes()


def test_a_cache_miss_is_looked_up_again_when_its_workspace_gets_a_base(
    driver: Driver,
) -> None:
    base = driver.workspace("base")
    worker = driver.session(base)
    root = driver.submit(base)
    done = worker.child(root, options=CACHE, arguments=["x"])
    worker.finish(done, "from base")
    child_ws = driver.workspace("child")
    busy = driver.session(child_ws, concurrency=1)
    other = driver.submit(child_ws)
    queued = busy.child(other, options=CACHE, arguments=["x"])
    assert driver.completion(queued) is None  # no base yet: a miss, and no room to run
    driver.reply(commands.UpdateWorkspace(workspace_id=child_ws, base_id=base, set_base=True))
    assert driver.completion(queued) == (model.Completion.CACHED, done)


# --- Sessions ---------------------------------------------------------------------------


def test_a_pass_reads_the_declarations_of_sessions_only_when_they_change(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions serving other targets cost a pass nothing; the index of who serves what
    follows declarations, removals, disconnections and drains."""
    ws = driver.workspace()
    main = driver.session(ws, tasks=())
    root = driver.submit(ws)
    assert root in main.executes()
    idle = [driver.session(ws, workflows=(), tasks=("other",)) for _ in range(20)]
    reads = 0  # builds of the index of who serves what
    build = driver.core._serving

    def counting() -> Any:
        nonlocal reads
        if driver.core._serving_index is None:
            reads += 1
        return build()

    monkeypatch.setattr(driver.core, "_serving", counting)
    first = main.child(root, arguments=[1])
    second = main.child(root, arguments=[2])
    assert reads == 0  # built before, by the declarations above; nobody serves "work" yet
    assert driver.execution(first).id in driver.store.queue()
    # A session re-declaring to serve "work" is used at once.
    worker = idle[0]
    driver.handle(
        commands.DeclareTargets(
            session_id=worker.id, targets={"app": {"task": ["work"]}}, concurrency=1
        )
    )
    assert reads == 1
    assert worker.executes() == [first]
    # Disconnected and draining sessions are passed over without a rebuild.
    other = idle[1]
    driver.handle(
        commands.DeclareTargets(
            session_id=other.id, targets={"app": {"task": ["work"]}}, concurrency=1
        )
    )
    assert other.executes() == [second]
    third = main.child(root, arguments=[3])
    other.finish(second, 2)
    assert other.executes() == [second, third]
    other.finish(third, 3)
    other.disconnect()
    driver.handle(commands.DrainSession(session_id=worker.id))
    worker.finish(first, 1)
    fourth = main.child(root, arguments=[4])
    assert fourth not in worker.executes() + other.executes()
    reads_before = reads
    # A removed session is never chosen; a new one declaring "work" takes the backlog.
    driver.advance(10 * 60_000)  # the disconnected session expires
    assert not driver.core._sessions.get(other.id)
    late = driver.session(ws, workflows=(), tasks=("work",))
    assert late.executes() == [fourth]
    assert reads > reads_before
