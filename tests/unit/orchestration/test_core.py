"""The orchestration core on the real SQLite store: retries, resolution, cancellation,
session loss, heartbeats and select (``semantics.md`` §3-5, §7.7, §7.12)."""

from __future__ import annotations

from pycoflux.orchestration import commands, core, effects, model
from tests.unit.orchestration.conftest import Driver

C = model.Completion


def with_retries(
    limit: int | None, backoff_min: int = 0, backoff_max: int = 0
) -> model.StepOptions:
    return model.StepOptions(
        retries=model.Retries(limit=limit, backoff_min=backoff_min, backoff_max=backoff_max)
    )


def attempt(execution_id: str, number: int) -> str:
    run, step, _ = execution_id.split(":")
    return f"{run}:{step}:{number}"


# --- Retries ------------------------------------------------------------------------------


def test_failed_attempts_are_retried_with_growing_backoff_until_the_limit(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws, options=with_retries(2, backoff_min=1000, backoff_max=3000))
    assert worker.executes() == [first]

    worker.error(first)
    assert not driver.exists(attempt(first, 2))  # the decision waits for termination
    worker.terminated(first)
    second = attempt(first, 2)
    assert driver.completion(first) == (C.ERRORED, second)
    assert driver.execution(second).execute_after == driver.now + 1000
    driver.advance(999)
    assert worker.executes() == [first]
    driver.advance(1)
    assert worker.executes() == [first, second]

    worker.error(second)
    worker.terminated(second)
    third = attempt(first, 3)
    assert driver.execution(third).execute_after == driver.now + 3000
    driver.advance(3000)
    assert worker.executes()[-1] == third

    worker.error(third)
    worker.terminated(third)
    assert driver.completion(third) == (C.ERRORED, None)
    assert not driver.exists(attempt(first, 4))
    resolution = driver.resolve(first)
    assert resolution.status == "error"
    assert resolution.error == model.ErrorInfo(type="ValueError", message="boom")


def test_non_retryable_error_is_final(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws, options=with_retries(5))
    worker.error(first, retryable=False)
    worker.terminated(first)
    assert driver.completion(first) == (C.ERRORED, None)
    assert not driver.exists(attempt(first, 2))


def test_termination_without_a_result_is_a_crash_and_is_retried(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws, options=with_retries(1))
    worker.terminated(first)
    assert driver.completion(first) == (C.CRASHED, attempt(first, 2))
    assert worker.executes() == [first, attempt(first, 2)]


# --- Resolution chains ------------------------------------------------------------------


def test_resolution_follows_a_retry_successor(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws, options=with_retries(1))
    assert driver.pending(first) == first
    worker.error(first)
    assert driver.pending(first) == first  # an error is not final before termination
    worker.terminated(first)
    assert driver.pending(first) == attempt(first, 2)
    worker.finish(attempt(first, 2), "second time lucky")
    resolution = driver.resolve(first)
    assert resolution.pending is None
    assert resolution.value == ["raw", "second time lucky", []]


def test_resolution_follows_a_suspended_successor(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    driver.handle(
        commands.Suspend(session_id=worker.id, execution_id=first, execute_after=driver.now + 500)
    )
    second = attempt(first, 2)
    assert driver.completion(first) == (C.SUSPENDED, second)
    assert worker.aborts() == [first]
    assert driver.pending(first) == second
    driver.advance(500)
    assert worker.executes() == [first, second]
    worker.finish(second, 7)
    assert driver.resolve(first).value == ["raw", 7, []]


def test_resolution_follows_a_spawned_run(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws, workflows=("main", "sub"))
    parent = driver.submit(ws)
    child = worker.child(parent, "sub", type=model.TargetType.WORKFLOW)
    kind, spawned_root = driver.completion(child) or (None, None)
    assert kind is C.SPAWNED
    assert spawned_root is not None
    assert spawned_root.endswith(":1:1")
    assert spawned_root.split(":")[0] != parent.split(":")[0]  # a run of its own
    assert driver.pending(child) == spawned_root
    assert spawned_root in worker.executes()
    worker.finish(spawned_root, "from the spawned run")
    assert driver.resolve(child).value == ["raw", "from the spawned run", []]


def test_resolution_reports_final_failures(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    crashed = driver.submit(ws)
    worker.terminated(crashed)
    assert driver.resolve(crashed).status == "crashed"
    cancelled = driver.submit(ws)
    driver.reply(commands.CancelExecution(workspace_id=ws, execution_id=cancelled))
    assert driver.resolve(cancelled).status == "cancelled"


# --- Cancellation ---------------------------------------------------------------------------


def test_cancel_cascades_to_unfinished_descendants(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws, workflows=("main", "sub"))
    root = driver.submit(ws)
    running = worker.child(root)
    done = worker.child(root)
    worker.finish(done, "kept")
    queued = worker.child(running, "undeclared")
    spawned_from = worker.child(running, "sub", type=model.TargetType.WORKFLOW)
    spawned = (driver.completion(spawned_from) or (None, None))[1]
    assert spawned is not None
    grandchild_of_spawned = worker.child(spawned)
    worker.heartbeat(root, running, spawned, grandchild_of_spawned)

    assert driver.reply(commands.CancelExecution(workspace_id=ws, execution_id=root)) == {}

    for execution_id in (root, running, queued, spawned, grandchild_of_spawned):
        assert driver.completion(execution_id) == (C.CANCELLED, None), execution_id
    assert driver.completion(done) == (C.SUCCEEDED, None)
    assert driver.completion(spawned_from) == (C.SPAWNED, spawned)
    assert set(worker.aborts()) == {root, running, spawned, grandchild_of_spawned}
    assert driver.resolve(done).value == ["raw", "kept", []]


def test_cancelling_a_spawned_step_cancels_the_spawned_run(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws, workflows=("main", "sub"))
    root = driver.submit(ws)
    step = worker.child(root, "sub", type=model.TargetType.WORKFLOW)
    spawned = (driver.completion(step) or (None, None))[1]
    assert spawned is not None
    driver.reply(commands.CancelExecution(workspace_id=ws, execution_id=step))
    assert driver.completion(spawned) == (C.CANCELLED, None)
    assert driver.completion(root) is None


def test_cancel_keeps_descendants_in_other_workspaces(driver: Driver) -> None:
    base = driver.workspace("base")
    child_ws = driver.workspace("child", base_id=base)
    worker = driver.session(base)
    root = driver.submit(base)
    task = worker.child(root, "undeclared")
    step_id = task.rsplit(":", 1)[0]
    rerun = driver.reply(commands.RerunStep(workspace_id=child_ws, step_id=step_id))
    other = rerun["executionId"]
    assert driver.execution(other).workspace_id != driver.execution(task).workspace_id
    driver.reply(commands.CancelExecution(workspace_id=base, execution_id=root))
    assert driver.completion(task) == (C.CANCELLED, None)
    assert driver.completion(other) is None


# --- Session loss and heartbeats ----------------------------------------------------------------


def test_session_expiry_abandons_held_executions_and_retries_them(driver: Driver) -> None:
    ws = driver.workspace()
    lost = driver.session(ws)
    first = driver.submit(ws, options=with_retries(1))
    lost.heartbeat(first)
    lost.disconnect()
    assert driver.timers[("session", lost.id)] == driver.now + core.RECONNECTION_TIMEOUT_MS
    driver.advance(core.RECONNECTION_TIMEOUT_MS - 1)
    assert driver.completion(first) is None
    driver.advance(1)

    assert driver.completion(first) == (C.ABANDONED, attempt(first, 2))
    assert (lost.id, "session_invalid") in driver.closed
    assert not driver.core.session_token_valid(lost.token)
    assert (
        driver.rejected(commands.ConnectSession(token=lost.token, workspace_id=ws)).error
        == "session_invalid"
    )
    assert driver.core.session_view(driver.execution(first).workspace_id) == {}
    replacement = driver.session(ws)
    assert replacement.executes() == [attempt(first, 2)]


def test_reconnecting_in_time_keeps_held_executions(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    worker.heartbeat(first)
    worker.disconnect()
    driver.advance(core.RECONNECTION_TIMEOUT_MS - 1)
    assert worker.connect() == [0, worker.id, [first]]
    assert ("session", worker.id) not in driver.timers
    driver.advance(10 * core.RECONNECTION_TIMEOUT_MS)
    assert driver.completion(first) is None
    worker.finish(first, "late")
    assert driver.completion(first) == (C.SUCCEEDED, None)


def test_a_session_that_never_connects_expires_after_the_activation_timeout(
    driver: Driver,
) -> None:
    ws = driver.workspace()
    token = driver.reply(commands.CreateSession(workspace_id=ws))["sessionId"]
    assert driver.core.session_token_valid(token)
    driver.advance(core.ACTIVATION_TIMEOUT_MS)
    assert not driver.core.session_token_valid(token)


def test_heartbeat_omitting_a_running_execution_abandons_it(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws, options=with_retries(1))
    second = driver.submit(ws)
    starting = driver.submit(ws)
    worker.heartbeat(first, second)
    worker.heartbeat()  # an empty heartbeat reconciles nothing
    assert driver.completion(first) is None
    assert driver.completion(second) is None

    worker.heartbeat(second)
    assert driver.completion(first) == (C.ABANDONED, attempt(first, 2))
    assert driver.completion(second) is None
    assert driver.completion(starting) is None  # never reported running: still starting
    assert attempt(first, 2) in worker.executes()


def test_heartbeat_reporting_a_finished_execution_gets_an_abort(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    worker.finish(first, 1)
    assert worker.aborts() == []
    worker.heartbeat(first)
    assert worker.aborts() == [first]


def test_heartbeat_makes_the_running_set_exactly_the_reported_one(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws, concurrency=2)
    first = driver.submit(ws)
    second = driver.submit(ws)
    worker.heartbeat(first, second)
    driver.reply(commands.CancelExecution(workspace_id=ws, execution_id=first))
    assert worker.aborts() == [first]
    worker.heartbeat(second)  # the worker stopped the cancelled execution
    workspace_row = driver.execution(first).workspace_id
    assert driver.core.session_view(workspace_row)[worker.id]["executing"] == 1
    third = driver.submit(ws)
    assert third in worker.executes()


# --- Select ---------------------------------------------------------------------------------------


def test_select_waits_and_cancels_the_remaining_handles(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    caller = driver.submit(ws)
    slow = worker.child(caller)
    fast = worker.child(caller)
    queued = worker.child(caller, "undeclared")
    request_id = worker.select(caller, [slow, fast, queued], cancel_remaining=True)
    assert worker.replies(request_id) == []
    worker.finish(fast, "fast")
    assert worker.replies(request_id) == [
        [2, request_id, {"winner": 1, "status": "ok", "value": ["raw", "fast", []]}]
    ]
    assert driver.completion(slow) == (C.CANCELLED, None)
    assert driver.completion(queued) == (C.CANCELLED, None)
    assert driver.completion(fast) == (C.SUCCEEDED, None)
    assert slow in worker.aborts()
    assert driver.completion(caller) is None


def test_select_resolved_immediately_cancels_the_remaining_handles(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    caller = driver.submit(ws)
    pending = worker.child(caller)
    done = worker.child(caller)
    worker.finish(done, 1)
    request_id = worker.select(caller, [pending, done], timeout_ms=0, cancel_remaining=True)
    assert worker.replies(request_id)[0][2]["winner"] == 1
    assert driver.completion(pending) == (C.CANCELLED, None)


def test_select_without_cancel_remaining_leaves_the_others_running(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    caller = driver.submit(ws)
    pending = worker.child(caller)
    done = worker.child(caller)
    worker.finish(done, 1)
    request_id = worker.select(caller, [pending, done])
    assert worker.replies(request_id)[0][2]["winner"] == 1
    assert driver.completion(pending) is None


def test_select_timeout_replies_null(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    caller = driver.submit(ws)
    child = worker.child(caller)
    request_id = worker.select(caller, [child], timeout_ms=1000)
    driver.advance(999)
    assert worker.replies(request_id) == []
    driver.advance(1)
    assert worker.replies(request_id) == [[2, request_id, None]]
    worker.finish(child, 1)
    assert len(worker.replies(request_id)) == 1
    assert driver.completion(caller) is None


def test_select_timeout_survives_a_retry_of_the_awaited_execution(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    caller = driver.submit(ws)
    child = worker.child(caller, options=with_retries(1, backoff_min=60_000, backoff_max=60_000))
    request_id = worker.select(caller, [child], timeout_ms=1000)
    worker.error(child)
    worker.terminated(child)
    assert driver.pending(child) == attempt(child, 2)
    assert worker.replies(request_id) == []
    driver.advance(1000)
    assert worker.replies(request_id) == [[2, request_id, None]]


def test_select_wait_moves_to_the_retry_and_resolves_with_it(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    caller = driver.submit(ws)
    child = worker.child(caller, options=with_retries(1))
    request_id = worker.select(caller, [child])
    worker.error(child)
    worker.terminated(child)
    assert worker.replies(request_id) == []
    worker.finish(attempt(child, 2), "retried")
    assert worker.replies(request_id) == [
        [2, request_id, {"winner": 0, "status": "ok", "value": ["raw", "retried", []]}]
    ]


def test_select_timeout_with_suspend_suspends_until_the_dependency_resolves(
    driver: Driver,
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    caller = driver.submit(ws)
    child = worker.child(caller)
    request_id = worker.select(caller, [child], timeout_ms=1000, suspend=True)
    driver.advance(1000)
    assert worker.replies(request_id) == [[2, request_id, None]]
    successor = attempt(caller, 2)
    assert driver.completion(caller) == (C.SUSPENDED, successor)
    assert caller in worker.aborts()
    assert successor not in worker.executes()
    worker.finish(child, "ready")
    assert successor in worker.executes()


def test_aborting_the_caller_answers_its_pending_select(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    caller = driver.submit(ws)
    child = worker.child(caller, "undeclared")
    request_id = worker.select(caller, [child])
    driver.reply(commands.CancelExecution(workspace_id=ws, execution_id=caller))
    assert worker.replies(request_id) == [[2, request_id, None]]
    assert driver.completion(child) == (C.CANCELLED, None)


def test_results_are_idempotent(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    worker.result(first, "first")
    worker.result(first, "second")
    worker.error(first)
    worker.terminated(first)
    worker.terminated(first)
    assert driver.completion(first) == (C.SUCCEEDED, None)
    assert driver.resolve(first).value == ["raw", "first", []]


def test_messages_about_executions_not_held_close_the_connection(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws, workflows=())
    queued = driver.submit(ws)
    produced = driver.handle(
        commands.RecordResult(session_id=worker.id, execution_id=queued, value=["raw", 1, []])
    )
    assert effects.CloseSession(session_id=worker.id, reason="execution_invalid") in produced
    assert driver.completion(queued) is None
    assert driver.store.result(driver.execution(queued).id) is None


# --- Restart ---------------------------------------------------------------------------------------


def test_restart_restores_sessions_disconnected_with_their_held_executions(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    idle = driver.reply(commands.CreateSession(workspace_id=ws))["sessionId"]
    first = driver.submit(ws, options=with_retries(1))
    worker.heartbeat(first)
    driver.restart(downtime=3_600_000)

    assert driver.core.session_token_valid(worker.token)
    assert driver.core.session_token_valid(idle)
    assert driver.timers[("session", worker.id)] == driver.now + core.RECONNECTION_TIMEOUT_MS
    assert driver.timers[("session", idle.split(".")[0])] == driver.now + core.ACTIVATION_TIMEOUT_MS
    workspace_row = driver.execution(first).workspace_id
    assert driver.core.session_view(workspace_row)[worker.id]["connected"] is False
    assert worker.connect() == [0, worker.id, [first]]
    worker.finish(first, "after the restart")
    assert driver.completion(first) == (C.SUCCEEDED, None)


def test_work_held_by_a_session_that_never_comes_back_is_abandoned_after_restart(
    driver: Driver,
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws, options=with_retries(1))
    worker.heartbeat(first)
    driver.restart()
    driver.advance(core.RECONNECTION_TIMEOUT_MS)
    assert driver.completion(first) == (C.ABANDONED, attempt(first, 2))
    assert not driver.core.session_token_valid(worker.token)


def test_delayed_work_is_scheduled_after_restart(driver: Driver) -> None:
    ws = driver.workspace()
    first = driver.submit(ws, options=model.StepOptions(delay=10_000))
    driver.restart()
    worker = driver.session(ws)
    assert worker.executes() == []
    driver.advance(10_000)
    assert worker.executes() == [first]
