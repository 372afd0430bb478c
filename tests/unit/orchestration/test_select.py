"""Select edge cases: list order, any-of wake-ups, hand-offs, wait cycles; cancelling what
already finished (``semantics.md`` §7.7, §7.12; checklist G 97-100)."""

from __future__ import annotations

from pycoflux.orchestration import commands, model
from pycoflux.storage import views
from tests.unit.orchestration.conftest import Driver

C = model.Completion


def test_g97_the_first_resolved_handle_in_list_order_wins(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    caller = driver.submit(ws)
    pending, second, first = (worker.child(caller) for _ in range(3))
    worker.finish(first, "first finished")
    worker.finish(second, "second finished")
    request_id = worker.select(caller, [pending, second, first])
    assert worker.replies(request_id)[0][2] == {
        "winner": 1,
        "status": "ok",
        "value": ["raw", "second finished", []],
    }


def test_g99_a_suspended_select_wakes_when_any_handle_resolves(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    caller = driver.submit(ws)
    one, two = worker.child(caller, "undeclared"), worker.child(caller)
    worker.select(caller, [one, two], timeout_ms=0, suspend=True)
    successor = caller[:-1] + "2"
    assert driver.completion(caller) == (C.SUSPENDED, successor)
    assert successor not in worker.executes()
    worker.finish(two, "either will do")
    assert successor in worker.executes()
    assert driver.completion(one) is None


def test_g100_a_wait_follows_a_deferral_to_the_final_outcome(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    caller = driver.submit(ws)
    defer = model.StepOptions(defer={"params": True}, delay=1000)
    older = worker.child(caller, arguments=[1], options=defer)
    request_id = worker.select(caller, [older])
    newer = worker.child(caller, arguments=[1], options=defer)
    assert driver.completion(older) == (C.DEFERRED, newer)
    assert worker.replies(request_id) == []  # moved to the newer execution
    driver.advance(1000)
    worker.finish(newer, "debounced")
    assert worker.replies(request_id)[0][2]["value"] == ["raw", "debounced", []]


def test_g100_a_wait_follows_a_spawned_run(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws, workflows=("main", "sub"))
    caller = driver.submit(ws)
    step = worker.child(caller, "sub", type=model.TargetType.WORKFLOW)
    request_id = worker.select(caller, [step])
    spawned = (driver.completion(step) or (None, None))[1]
    assert spawned is not None
    assert worker.replies(request_id) == []
    worker.finish(spawned, "spawned result")
    assert worker.replies(request_id)[0][2]["value"] == ["raw", "spawned result", []]


def test_g100_a_wait_on_a_cached_duplicate_fires_with_the_original(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    caller = driver.submit(ws)
    options = model.StepOptions(
        cache={"params": True, "maxAge": None, "namespace": None, "version": None}
    )
    original = worker.child(caller, arguments=[1], options=options)
    duplicate = worker.child(caller, arguments=[1], options=options)
    request_id = worker.select(caller, [duplicate])
    assert driver.completion(duplicate) == (C.CACHED, original)
    worker.finish(original, "computed once")
    assert worker.replies(request_id)[0][2]["value"] == ["raw", "computed once", []]


def test_waiting_on_yourself_is_a_wait_cycle(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    caller = driver.submit(ws)
    request_id = worker.select(caller, [caller])
    assert worker.replies(request_id) == [[3, request_id, "wait_cycle"]]
    assert not driver.closed
    assert driver.completion(caller) is None


def test_a_child_waiting_on_its_waiting_parent_is_a_wait_cycle(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    parent = driver.submit(ws)
    child = worker.child(parent)
    parent_wait = worker.select(parent, [child])
    child_wait = worker.select(child, [parent])
    assert worker.replies(child_wait) == [[3, child_wait, "wait_cycle"]]
    assert worker.replies(parent_wait) == []  # undisturbed: still waiting
    worker.finish(child, "fine")
    assert worker.replies(parent_wait)[0][2]["value"] == ["raw", "fine", []]


def test_a_cycle_through_a_suspended_parent_is_detected(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    parent = driver.submit(ws)
    child = worker.child(parent)
    worker.select(parent, [child], timeout_ms=0, suspend=True)
    assert driver.completion(parent) == (C.SUSPENDED, parent[:-1] + "2")
    request_id = worker.select(child, [parent])
    assert worker.replies(request_id) == [[3, request_id, "wait_cycle"]]


def test_waiting_on_a_sibling_is_not_a_cycle(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    parent = driver.submit(ws)
    left, right = worker.child(parent), worker.child(parent)
    worker.select(parent, [left, right])
    request_id = worker.select(left, [right])
    assert worker.replies(request_id) == []
    worker.finish(right, 1)
    assert worker.replies(request_id)[0][2]["winner"] == 0


def test_cancelling_a_finished_execution_succeeds_and_changes_nothing(
    driver: Driver,
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    done = driver.submit(ws)
    worker.finish(done, "kept")
    assert driver.reply(commands.CancelExecution(workspace_id=ws, execution_id=done)) == {}
    assert driver.completion(done) == (C.SUCCEEDED, None)
    assert driver.resolve(done).value == ["raw", "kept", []]
    assert worker.aborts() == []


def test_cancelling_a_finished_execution_still_cancels_its_live_descendants(
    driver: Driver,
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    orphan = worker.child(root, "undeclared")
    worker.finish(root, "returned early")
    assert driver.reply(commands.CancelExecution(workspace_id=ws, execution_id=root)) == {}
    assert driver.completion(orphan) == (C.CANCELLED, None)
    assert driver.completion(root) == (C.SUCCEEDED, None)


def test_an_execution_already_suspended_neither_waits_nor_suspends_again(
    driver: Driver,
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    caller = driver.submit(ws)
    driver.handle(commands.Suspend(session_id=worker.id, execution_id=caller))
    successor = caller[:-1] + "2"
    assert successor in worker.executes()
    # The worker has not processed the abort yet and still asks.
    request_id = worker.select(caller, [successor], timeout_ms=0, suspend=True)
    assert worker.replies(request_id) == [[2, request_id, None]]
    assert not driver.exists(caller[:-1] + "3")
    assert driver.completion(successor) is None


def test_a_finished_execution_cannot_submit_children(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    caller = driver.submit(ws)
    driver.reply(commands.CancelExecution(workspace_id=ws, execution_id=caller))
    driver.handle(
        commands.SubmitChild(
            session_id=worker.id,
            request_id=7,
            parent_id=caller,
            module="app",
            target="work",
            type=model.TargetType.TASK,
            arguments=[],
            group_id=None,
            options=model.StepOptions(),
        )
    )
    assert worker.replies(7) == [[3, 7, "execution_completed"]]
    assert not driver.exists(caller.split(":")[0] + ":2:1")


def test_a_cancellation_records_who_cancelled(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    child = worker.child(root, "undeclared")
    who = {"type": "token", "externalId": "abc"}
    driver.reply(commands.CancelExecution(workspace_id=ws, execution_id=root, principal=who))
    run = views.run(driver.db, ws, root.split(":")[0])
    assert run is not None
    for execution_id in (root, child):
        step = run["steps"][execution_id.rsplit(":", 1)[0]]
        assert step["executions"]["1"]["result"] == {"type": "cancelled", "createdBy": who}
