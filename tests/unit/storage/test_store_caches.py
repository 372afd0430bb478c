"""The orchestration store's writer-side caches and the in-memory queue index."""

from __future__ import annotations

import dataclasses
import json

from pycoflux.orchestration import model
from pycoflux.orchestration.queue import QueueIndex
from pycoflux.storage import orchestration, sqlite

NOW = 1_700_000_000_000


def test_options_json_keeps_every_field() -> None:
    options = model.StepOptions(
        wait_for=[1],
        cache={"params": True, "maxAge": 5},
        defer={"params": [0]},
        memo=[0],
        delay=3,
        retries=model.Retries(limit=3, backoff_min=1, backoff_max=2),
        recurrent=True,
        requires={"gpu": ["a100"]},
        timeout=5,
        streams={"buffer": 4},
    )
    assert {f.name for f in dataclasses.fields(options)} == set(
        json.loads(orchestration.options_to_json(options))
    )
    assert json.loads(orchestration.options_to_json(options)) == dataclasses.asdict(options)
    assert orchestration.options_from_json(orchestration.options_to_json(options)) == options
    default = model.StepOptions()
    assert orchestration.options_from_json(orchestration.options_to_json(default)) == default


def _store() -> tuple[orchestration.SqliteOrchestrationStore, int, int]:
    db = sqlite.connect(":memory:")
    store = orchestration.SqliteOrchestrationStore(db)
    workspace = store.insert_workspace("W1", "default", None, NOW)
    run = store.insert_run(
        external_id="R1",
        parent_execution_id=None,
        idempotency_key=None,
        requires={},
        memo=False,
        created_at=NOW,
        created_by=None,
    )
    return store, workspace, run


def _step(store: orchestration.SqliteOrchestrationStore, run: int, number: int) -> int:
    return store.insert_step(
        run_id=run,
        number=number,
        parent_execution_id=None,
        module="app",
        target="work",
        type=model.TargetType.TASK,
        options=model.StepOptions(),
        arguments=[["raw", number, []]],
        created_at=NOW,
    )


def _execution(store: orchestration.SqliteOrchestrationStore, step: int, workspace: int) -> int:
    return store.insert_execution(
        step_id=step,
        attempt=1,
        workspace_id=workspace,
        execute_after=None,
        created_at=NOW,
        created_by=None,
    )


def test_cached_rows_match_the_database() -> None:
    store, workspace, run = _store()
    step = _step(store, run, 1)
    execution = _execution(store, step, workspace)
    assert store.completion(execution) is None
    assert store.result(execution) is None
    store.insert_result(execution, value=["raw", 1, []], created_at=NOW)
    store.insert_result(execution, value=["raw", 2, []], created_at=NOW)  # first one wins
    store.insert_completion(execution, model.Completion.SUCCEEDED, None, NOW)
    cached = (store.execution(execution), store.result(execution), store.completion(execution))
    assert store.next_step_number(run) == 2
    store.discard_caches()
    assert (store.execution(execution), store.result(execution), store.completion(execution)) == (
        cached
    )
    assert cached[1] is not None and cached[1].value == ["raw", 1, []]
    assert store.next_step_number(run) == 2


def test_a_rolled_back_row_is_forgotten() -> None:
    """After ROLLBACK TO a savepoint SQLite reuses the row id; the caches must not
    answer with the rolled-back row."""
    store, workspace, run = _store()
    db = store._db
    db.execute("BEGIN")
    db.execute("SAVEPOINT command")
    step = _step(store, run, 1)
    execution = _execution(store, step, workspace)
    store.insert_completion(execution, model.Completion.CANCELLED, None, NOW)
    assert execution not in store.queue()
    db.execute("ROLLBACK TO command")
    db.execute("RELEASE command")
    store.discard_caches()
    again = _execution(store, _step(store, run, 1), workspace)
    db.execute("COMMIT")
    assert again == execution  # the same row id, a different row
    assert store.completion(again) is None
    assert again in store.queue()


def test_queue_index_follows_the_queue_table() -> None:
    store, workspace, run = _store()
    executions = [_execution(store, _step(store, run, n), workspace) for n in range(1, 5)]
    queue = store.queue()
    assert [e.id for e in queue.ordered()] == executions
    store.insert_completion(executions[1], model.Completion.CANCELLED, None, NOW)
    assert [e.id for e in store.queue().ordered()] == [executions[0], *executions[2:]]
    store.discard_caches()  # rebuilt from the table: the same
    assert [e.id for e in store.queue().ordered()] == [executions[0], *executions[2:]]
    (rows,) = store._db.execute("SELECT count(*) FROM queue").fetchone()
    assert rows == len(store.queue())


def _queued(
    id: int, *, created_at: int, execute_after: int | None = None, target: str = "work"
) -> model.Execution:
    return model.Execution(
        id=id,
        external_id=model.ExecutionId(f"R:{id}:1"),
        run_id=1,
        run_external_id=model.RunId("R"),
        step_id=id,
        step_number=id,
        attempt=1,
        workspace_id=1,
        module="app",
        target=target,
        type=model.TargetType.TASK,
        parent_id=None,
        execute_after=execute_after,
        created_at=created_at,
    )


def test_queue_index_orders_each_group_like_the_scheduler() -> None:
    """Due executions first by creation, then delayed ones by when they are due, however
    they arrive."""
    index = QueueIndex()
    index.add(_queued(1, created_at=10, execute_after=500))
    index.add(_queued(2, created_at=20))
    index.add(_queued(3, created_at=5))
    index.add(_queued(4, created_at=1, execute_after=400))
    index.add(_queued(5, created_at=30, target="other"))
    key = (1, "app", "work", model.TargetType.TASK, ())
    assert [e.id for e in index.group(key)] == [3, 2, 4, 1]
    assert sorted(index.groups()) == sorted([key, (1, "app", "other", model.TargetType.TASK, ())])
    assert index.next_due(now=0) == 400
    index.discard(4)
    assert index.next_due(now=0) == 500
    assert index.next_due(now=600) is None  # due now: no timer needed
    index.discard(5)
    assert index.groups() == [key]
    assert len(index) == 3


def test_queue_index_gives_the_due_prefix_of_a_group() -> None:
    index = QueueIndex()
    index.add(_queued(1, created_at=10, execute_after=500))
    index.add(_queued(2, created_at=20))
    index.add(_queued(3, created_at=5, execute_after=300))
    key = (1, "app", "work", model.TargetType.TASK, ())
    assert [e.id for e in index.due(key, now=0)] == [2]
    assert [e.id for e in index.due(key, now=300)] == [2, 3]
    assert [e.id for e in index.due(key, now=10_000)] == [2, 3, 1]
    assert index.due((1, "app", "missing", model.TargetType.TASK, ()), now=0) == []


def test_queue_index_parks_executions_until_a_key_wakes_them() -> None:
    index = QueueIndex()
    for id in (1, 2, 3):
        index.add(_queued(id, created_at=id))
    key = (1, "app", "work", model.TargetType.TASK, ())
    index.park(1, [("execution", 7), ("input", 8)])
    index.park(2, [("execution", 7)])
    assert [e.id for e in index.group(key)] == [3]
    assert 1 in index and index.parked(1)  # still queued, only out of the passes
    index.wake(("input", 8))
    assert [e.id for e in index.group(key)] == [1, 3]  # back in queue order
    assert not index.parked(1)
    index.wake(("execution", 7))  # 1 was already woken by its other key
    assert [e.id for e in index.group(key)] == [1, 2, 3]
    index.park(3, [("stream", 9)])
    index.discard(3)  # assigned or cancelled while parked: gone for good
    index.wake(("stream", 9))
    assert [e.id for e in index.group(key)] == [1, 2]
    index.park(1, [("execution", 7)])
    index.park(2, [])  # nothing to wait on: nothing to park under
    assert [e.id for e in index.group(key)] == [2]
    index.park(2, [("execution", 8)])
    assert index.groups() == []
    index.sweep(1)  # the one parked longest first
    assert [e.id for e in index.group(key)] == [1]
    index.sweep(5)
    assert [e.id for e in index.group(key)] == [1, 2]
    assert len(index) == 2


def test_queue_index_groups_a_target_by_the_tags_it_requires() -> None:
    needs = {1: {"gpu": ["a100"]}, 2: {}, 3: {"gpu": ["a100"]}}
    index = QueueIndex(
        [_queued(id, created_at=id) for id in (1, 2, 3)], requires=lambda e: needs[e.id]
    )
    target = (1, "app", "work", model.TargetType.TASK)
    gpu, plain = (*target, (("gpu", ("a100",)),)), (*target, ())
    assert index.groups(target) == sorted([gpu, plain])
    assert [e.id for e in index.group(gpu)] == [1, 3]
    index.discard(2)
    assert index.groups(target) == [gpu]
    assert index.groups((1, "app", "other", model.TargetType.TASK)) == []
