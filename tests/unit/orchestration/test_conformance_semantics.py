"""``semantics.md`` §15 checklist items that no other core test checks on its own.

Each test names the item it checks ("item 42: ..."); ``tests/CONFORMANCE.md`` maps every
item to its tests.
"""

from __future__ import annotations

import re

from pycoflux.orchestration import commands, model
from pycoflux.storage import views
from tests.unit.orchestration import test_streams as streams
from tests.unit.orchestration.conftest import Driver, Session

C = model.Completion
WORKFLOW = model.TargetType.WORKFLOW


def attempt(execution_id: str, number: int) -> str:
    run, step, _ = execution_id.split(":")
    return f"{run}:{step}:{number}"


def reference(execution_id: str) -> list[object]:
    """An argument that is a reference to an execution's result."""
    return ["raw", {"type": "ref", "index": 0}, [["execution", execution_id]]]


def select_reply(worker: Session, request_id: int) -> object:
    (reply,) = worker.replies(request_id)
    return reply[2]


# --- A. Runs, steps, executions, results -------------------------------------------------


def test_item_15_16_idempotency_keys_are_per_workspace_and_dispatch_once(driver: Driver) -> None:
    """Items 15 and 16: the same key returns the same run (one dispatch) in one workspace
    and a new run in another."""
    ws = driver.workspace()
    other = driver.workspace("other")
    worker = driver.session(ws)

    def submit(workspace_id: str) -> str:
        reply = driver.reply(
            commands.SubmitWorkflow(
                workspace_id=workspace_id,
                module="app",
                target="main",
                arguments=[],
                options=model.StepOptions(),
                idempotency_key="nightly",
            )
        )
        return str(reply["runId"])

    first = submit(ws)
    assert submit(ws) == first
    driver.advance(86_400_000 - 1)
    assert submit(ws) == first
    assert worker.executes() == [f"{first}:1:1"]
    assert submit(other) != first


def test_item_17_ids_follow_the_formats_and_attempts_are_global_per_step(driver: Driver) -> None:
    """Item 17: run ``R…``, step ``<run>:<n>``, execution ``<run>:<n>:<attempt>``, input
    ``<run>/i<n>``; attempt numbers count across workspaces."""
    base = driver.workspace("base")
    derived = driver.workspace("derived", base_id=base)
    worker = driver.session(base)
    root = driver.submit(base)
    run = root.split(":")[0]
    assert re.fullmatch(r"R[b-df-hj-np-tv-zB-DF-HJ-NP-TV-Z2-9]{3,}", run), run
    assert root == f"{run}:1:1"
    child = worker.child(root)
    assert child == f"{run}:2:1"
    input_reply = worker.request(
        lambda request_id: commands.SubmitInput(
            session_id=worker.id,
            request_id=request_id,
            execution_id=root,
            template="ok?",
            placeholders={},
            schema=None,
            key=None,
            title=None,
            actions=None,
            initial=None,
            has_initial=False,
            requires={},
        )
    )
    assert input_reply[2] == f"{run}/i1"
    worker.finish(child, 1)
    rerun = driver.reply(commands.RerunStep(workspace_id=derived, step_id=f"{run}:2"))
    assert rerun["executionId"] == f"{run}:2:2"
    again = driver.reply(commands.RerunStep(workspace_id=base, step_id=f"{run}:2"))
    assert again["executionId"] == f"{run}:2:3"


def test_item_8_resolving_a_failed_child_is_an_error_status_not_a_failure(
    driver: Driver,
) -> None:
    """Item 8: the select reply carries the child's error type and message as a status;
    the resolver itself carries on."""
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    child = worker.child(root)
    request_id = worker.select(root, [child])
    worker.error(child)
    worker.terminated(child)
    assert select_reply(worker, request_id) == {
        "winner": 0,
        "status": "error",
        "error": {"type": "ValueError", "message": "boom"},
    }
    assert driver.completion(root) is None
    assert worker.id not in dict(driver.closed)


def test_item_11_targets_are_dispatched_to_the_session_declaring_their_module(
    driver: Driver,
) -> None:
    """Item 11: targets in different modules go to the session that declared them."""
    ws = driver.workspace()
    first = driver.session(ws, module="app", tasks=("work",))
    second = driver.session(ws, module="other", workflows=(), tasks=("work",))
    root = driver.submit(ws)
    request_id = 100
    driver.handle(
        commands.SubmitChild(
            session_id=first.id,
            request_id=request_id,
            parent_id=root,
            module="other",
            target="work",
            type=model.TargetType.TASK,
            arguments=[],
            group_id=None,
            options=model.StepOptions(),
        )
    )
    (reply,) = first.replies(request_id)
    child = reply[2][0]
    assert first.executes() == [root]
    assert second.executes() == [child]


# --- B. Scheduling -------------------------------------------------------------------------------


def test_item_20_a_delayed_child_is_not_dispatched_before_its_delay(driver: Driver) -> None:
    """Item 20: a child submitted with delay 500 ms waits 500 ms."""
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    child = worker.child(root, options=model.StepOptions(delay=500))
    assert driver.execution(child).execute_after == driver.now + 500
    driver.advance(499)
    assert child not in worker.executes()
    driver.advance(1)
    assert child in worker.executes()


def test_item_19_a_delayed_run_is_not_dispatched_before_its_delay(driver: Driver) -> None:
    """Item 19 (core side): a run submitted with the manifest's 500 ms delay waits."""
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws, options=model.StepOptions(delay=500))
    driver.advance(499)
    assert worker.executes() == []
    driver.advance(1)
    assert worker.executes() == [root]


def test_item_21_wait_for_holds_a_task_until_its_argument_completes(driver: Driver) -> None:
    """Item 21: ``wait_for=[0]`` on a reference to a running execution."""
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    running = worker.child(root)
    waiting = worker.child(
        root, options=model.StepOptions(wait_for=[0]), values=[reference(running)]
    )
    assert waiting not in worker.executes()
    worker.finish(running, 1)
    assert waiting in worker.executes()


def test_item_21_without_wait_for_the_reference_does_not_hold(driver: Driver) -> None:
    """Item 21 (control): the same reference without ``wait_for`` is dispatched at once."""
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    running = worker.child(root)
    eager = worker.child(root, values=[reference(running)])
    assert eager in worker.executes()


def test_item_22_wait_for_two_arguments_needs_both(driver: Driver) -> None:
    """Item 22: with ``wait_for`` on two arguments both referenced executions must finish."""
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    one, two = worker.child(root), worker.child(root)
    waiting = worker.child(
        root,
        options=model.StepOptions(wait_for=[0, 1]),
        values=[reference(one), reference(two)],
    )
    worker.finish(one, 1)
    assert waiting not in worker.executes()
    worker.finish(two, 2)
    assert waiting in worker.executes()


def test_item_23_argument_waiting_is_recursive(driver: Driver) -> None:
    """Item 23: a referenced value that itself references a pending execution keeps the
    dependant waiting."""
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    inner = worker.child(root)
    outer = worker.child(root)
    waiting = worker.child(root, options=model.StepOptions(wait_for=[0]), values=[reference(outer)])
    driver.handle(
        commands.RecordResult(session_id=worker.id, execution_id=outer, value=reference(inner))
    )
    worker.terminated(outer)
    assert driver.completion(outer) == (C.SUCCEEDED, None)
    assert waiting not in worker.executes()
    worker.finish(inner, "deep")
    assert waiting in worker.executes()


def test_item_26_28_an_execution_can_suspend_repeatedly(driver: Driver) -> None:
    """Items 26 and 28: each suspend makes a new attempt that is dispatched again."""
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    driver.handle(commands.Suspend(session_id=worker.id, execution_id=first))
    second = attempt(first, 2)
    assert driver.completion(first) == (C.SUSPENDED, second)
    assert worker.executes() == [first, second]
    driver.handle(commands.Suspend(session_id=worker.id, execution_id=second))
    third = attempt(first, 3)
    assert driver.completion(second) == (C.SUSPENDED, third)
    assert worker.executes() == [first, second, third]
    worker.finish(third, "done")
    assert driver.resolve(first).value == ["raw", "done", []]


def test_item_27_suspend_with_execute_after_delays_the_successor(driver: Driver) -> None:
    """Item 27: the successor is not dispatched before ``execute_after``."""
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    driver.handle(
        commands.Suspend(session_id=worker.id, execution_id=first, execute_after=driver.now + 800)
    )
    second = attempt(first, 2)
    driver.advance(799)
    assert second not in worker.executes()
    driver.advance(1)
    assert second in worker.executes()


def test_item_29_a_workflow_cancels_its_child_and_carries_on(driver: Driver) -> None:
    """Item 29: resolving a cancelled child reports cancellation; the caller is not
    cancelled."""
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    child = worker.child(root)
    reply = worker.request(
        lambda request_id: commands.CancelHandles(
            session_id=worker.id,
            request_id=request_id,
            execution_id=root,
            handles=[{"type": "execution", "id": child}],
        )
    )
    assert reply[0] == 2
    assert driver.completion(child) == (C.CANCELLED, None)
    assert child in worker.aborts()
    request_id = worker.select(root, [child])
    assert select_reply(worker, request_id) == {"winner": 0, "status": "cancelled"}
    assert driver.completion(root) is None
    worker.finish(root, "carried on")
    assert driver.resolve(root).value == ["raw", "carried on", []]


def tagged_session(
    driver: Driver,
    workspace_id: str,
    *,
    provides: model.TagSet | None = None,
    accepts: model.TagSet | None = None,
    workflows: tuple[str, ...] = ("main",),
    tasks: tuple[str, ...] = ("work",),
    concurrency: int = 0,
) -> Session:
    token = driver.reply(
        commands.CreateSession(
            workspace_id=workspace_id, provides=provides or {}, accepts=accepts or {}
        )
    )["sessionId"]
    session = Session(driver, token, workspace_id)
    session.connect()
    driver.handle(
        commands.DeclareTargets(
            session_id=session.id,
            targets={"app": {"workflow": list(workflows), "task": list(tasks)}},
            concurrency=concurrency,
        )
    )
    return session


def test_item_30_a_child_requiring_a_tag_goes_only_to_a_session_providing_it(
    driver: Driver,
) -> None:
    """Item 30: ``gpu:cuda-12`` is only dispatched where it is provided."""
    ws = driver.workspace()
    plain = tagged_session(driver, ws)
    root = driver.submit(ws)
    assert plain.executes() == [root]
    child = plain.child(root, options=model.StepOptions(requires={"gpu": ["cuda-12"]}))
    assert child not in plain.executes()
    gpu = tagged_session(driver, ws, provides={"gpu": ["cuda-12"]}, workflows=())
    assert gpu.executes() == [child]
    assert child not in plain.executes()


def test_item_31_32_run_requires_apply_to_children_unless_unset(driver: Driver) -> None:
    """Items 31 and 32: a workflow's requires reach its child tasks; ``{"gpu": []}``
    removes the inherited key."""
    ws = driver.workspace()
    gpu = tagged_session(driver, ws, provides={"gpu": ["a100"]}, concurrency=2)
    plain = tagged_session(driver, ws, workflows=())
    root = driver.submit(ws, options=model.StepOptions(requires={"gpu": ["a100"]}))
    assert gpu.executes() == [root]
    inherited = gpu.child(root)
    assert gpu.executes() == [root, inherited]  # never the plain session
    assert plain.executes() == []
    # The gpu session is full now: the inherited requirement keeps this one queued...
    held = gpu.child(root)
    assert held not in plain.executes()
    # ...while with the key unset the plain session takes it.
    unset = gpu.child(root, options=model.StepOptions(requires={"gpu": []}))
    assert plain.executes() == [unset]


def test_item_33_a_session_with_accepts_only_takes_work_requiring_an_accepted_value(
    driver: Driver,
) -> None:
    """Item 33: ``accepts`` restricts a session to executions that ask for it."""
    ws = driver.workspace()
    picky = tagged_session(driver, ws, accepts={"tier": ["gold"]}, workflows=("main",))
    plain_run = driver.submit(ws)
    assert picky.executes() == []
    gold_run = driver.submit(ws, options=model.StepOptions(requires={"tier": ["gold"]}))
    assert picky.executes() == [gold_run]
    other = tagged_session(driver, ws)
    assert plain_run in other.executes()
    assert gold_run not in other.executes()


def test_item_34_a_full_session_gets_nothing_more_and_zero_is_unlimited(driver: Driver) -> None:
    """Item 34: a session at its concurrency receives no more work; 0 means unlimited."""
    ws = driver.workspace()
    limited = driver.session(ws, concurrency=2)
    runs = [driver.submit(ws) for _ in range(3)]
    assert limited.executes() == runs[:2]
    limited.finish(runs[0], 0)
    assert limited.executes() == runs
    other = driver.workspace("unlimited")
    unlimited = driver.session(other, concurrency=0)
    many = [driver.submit(other) for _ in range(25)]
    assert unlimited.executes() == many


def test_item_35_executions_are_considered_oldest_first(driver: Driver) -> None:
    """Item 35: queued executions with no ``execute_after`` go first, then by creation."""
    ws = driver.workspace()
    delayed = driver.submit(ws, options=model.StepOptions(delay=100))
    driver.advance(200)
    first = driver.submit(ws)
    driver.advance(1)
    second = driver.submit(ws)
    worker = driver.session(ws, concurrency=1)
    assert worker.executes() == [first]
    worker.finish(first, 1)
    assert worker.executes() == [first, second]
    worker.finish(second, 2)
    assert worker.executes() == [first, second, delayed]


def test_item_36_cancelling_a_delayed_run_through_the_api_means_it_never_runs(
    driver: Driver,
) -> None:
    """Item 36: a cancelled queued (delayed) run resolves as cancelled, never dispatched."""
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws, options=model.StepOptions(delay=10_000))
    driver.reply(commands.CancelExecution(workspace_id=ws, execution_id=root))
    assert driver.completion(root) == (C.CANCELLED, None)
    assert driver.resolve(root).status == "cancelled"
    driver.advance(20_000)
    assert worker.executes() == []


def test_item_38_cancellation_crosses_several_spawned_runs(driver: Driver) -> None:
    """Item 38: cancelling the root reaches runs spawned two levels down and their tasks."""
    ws = driver.workspace()
    worker = driver.session(ws, workflows=("main", "sub"))
    root = driver.submit(ws)
    first_step = worker.child(root, "sub", type=WORKFLOW)
    first_run = (driver.completion(first_step) or (None, None))[1]
    assert first_run is not None
    second_step = worker.child(first_run, "sub", type=WORKFLOW)
    second_run = (driver.completion(second_step) or (None, None))[1]
    assert second_run is not None
    task = worker.child(second_run)
    assert first_run.split(":")[0] != root.split(":")[0]
    assert second_run.split(":")[0] not in (root.split(":")[0], first_run.split(":")[0])
    driver.reply(commands.CancelExecution(workspace_id=ws, execution_id=root))
    for execution_id in (root, first_run, second_run, task):
        assert driver.completion(execution_id) == (C.CANCELLED, None), execution_id
    assert driver.resolve(first_step).status == "cancelled"


def test_item_39_a_poll_of_a_running_child_returns_null_at_once(driver: Driver) -> None:
    """Item 39: select without suspend, timeout 0, on a running child."""
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    child = worker.child(root)
    request_id = worker.select(root, [child], timeout_ms=0)
    assert worker.replies(request_id) == [[2, request_id, None]]
    assert driver.completion(root) is None


def test_item_40_41_a_poll_with_a_timeout_returns_the_value_or_waits_it_out(
    driver: Driver,
) -> None:
    """Items 40 and 41: the value once it arrives; null only when the timeout elapses."""
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    quick, stuck = worker.child(root), worker.child(root)
    arrives = worker.select(root, [quick], timeout_ms=5_000)
    driver.advance(1_000)
    assert worker.replies(arrives) == []
    worker.finish(quick, "here")
    assert select_reply(worker, arrives) == {
        "winner": 0,
        "status": "ok",
        "value": ["raw", "here", []],
    }
    waits = worker.select(root, [stuck], timeout_ms=2_000)
    driver.advance(1_999)
    assert worker.replies(waits) == []
    driver.advance(1)
    assert worker.replies(waits) == [[2, waits, None]]


def test_item_42_a_poll_with_a_long_timeout_answers_at_once_when_ready(driver: Driver) -> None:
    """Item 42: the value is already there, so the reply does not wait for the timeout."""
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    child = worker.child(root)
    worker.finish(child, 42)
    request_id = worker.select(root, [child], timeout_ms=600_000)
    assert select_reply(worker, request_id) == {
        "winner": 0,
        "status": "ok",
        "value": ["raw", 42, []],
    }
    assert not any(key[0] == "select" for key in driver.timers)


def test_item_43_an_undeclared_target_stays_queued_until_declared(driver: Driver) -> None:
    """Item 43: no error while nobody declares the target; dispatched once one does."""
    ws = driver.workspace()
    worker = driver.session(ws, workflows=("other",))
    root = driver.submit(ws)
    driver.advance(60_000)
    assert driver.completion(root) is None
    assert worker.executes() == []
    late = driver.session(ws)
    assert late.executes() == [root]


def test_item_44_a_workflow_step_never_goes_to_a_session_declaring_it_as_a_task(
    driver: Driver,
) -> None:
    """Item 44: the target type must match."""
    ws = driver.workspace()
    as_task = driver.session(ws, workflows=(), tasks=("main",))
    root = driver.submit(ws)
    assert as_task.executes() == []
    as_workflow = driver.session(ws, workflows=("main",), tasks=())
    assert as_workflow.executes() == [root]


def test_item_45_a_scheduling_pass_is_always_due_within_5_s(driver: Driver) -> None:
    """Item 45: the pass re-arms itself at most 5 s ahead, even with nothing queued."""
    ws = driver.workspace()
    driver.session(ws)
    driver.submit(ws, options=model.StepOptions(delay=60_000))
    assert driver.timers[("tick",)] <= driver.now + 5_000
    driver.advance(5_000)
    assert driver.timers[("tick",)] <= driver.now + 5_000


# --- D. Retries, timeouts, recurrence ----------------------------------------------------------


def with_retries(limit: int | None, low: int = 0, high: int = 0) -> model.StepOptions:
    return model.StepOptions(retries=model.Retries(limit=limit, backoff_min=low, backoff_max=high))


def test_item_60_a_retryable_error_is_retried(driver: Driver) -> None:
    """Item 60: ``retryable=true`` retries as usual."""
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws, options=with_retries(1))
    worker.error(first, retryable=True)
    worker.terminated(first)
    assert driver.completion(first) == (C.ERRORED, attempt(first, 2))
    assert attempt(first, 2) in worker.executes()


def test_item_63_a_timeout_makes_the_run_result_timeout(driver: Driver) -> None:
    """Item 63: a timed-out execution resolves as ``timeout``; the timeout is in execute."""
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws, options=model.StepOptions(timeout=1_500))
    (params,) = worker.commands("execute")
    assert params[6] == 1_500
    driver.handle(commands.RecordTimeout(session_id=worker.id, execution_id=root))
    worker.terminated(root)
    assert driver.completion(root) == (C.TIMEOUT, None)
    assert driver.resolve(root).status == "timeout"


def test_item_64_a_timed_out_execution_is_retried(driver: Driver) -> None:
    """Item 64: a timeout counts as a failure for the retry policy."""
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(
        ws, options=model.StepOptions(timeout=1_500, retries=model.Retries(limit=1))
    )
    driver.handle(commands.RecordTimeout(session_id=worker.id, execution_id=root))
    worker.terminated(root)
    assert driver.completion(root) == (C.TIMEOUT, attempt(root, 2))
    worker.finish(attempt(root, 2), "in time")
    assert driver.resolve(root).value == ["raw", "in time", []]


def test_item_65_a_timed_out_parent_s_children_are_cancelled(driver: Driver) -> None:
    """Item 65: children of a timed-out execution are cancelled."""
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws, options=model.StepOptions(timeout=1_500))
    running = worker.child(root)
    queued = worker.child(root, "undeclared")
    worker.heartbeat(root, running)
    driver.handle(commands.RecordTimeout(session_id=worker.id, execution_id=root))
    worker.terminated(root)
    assert driver.resolve(root).status == "timeout"
    assert driver.completion(running) == (C.CANCELLED, None)
    assert driver.completion(queued) == (C.CANCELLED, None)
    assert running in worker.aborts()


def test_item_66_67_a_recurrent_task_repeats_on_null_and_stops_on_a_value(
    driver: Driver,
) -> None:
    """Items 66 and 67: each null makes a new execution; a value ends the recurrence."""
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws, options=model.StepOptions(recurrent=True))
    worker.finish(first, None)
    second = attempt(first, 2)
    assert driver.completion(first) == (C.RECURRED, second)
    assert worker.executes() == [first, second]
    worker.finish(second, None)
    third = attempt(first, 3)
    assert worker.executes() == [first, second, third]
    worker.finish(third, "stop")
    assert driver.completion(third) == (C.SUCCEEDED, None)
    assert not driver.exists(attempt(first, 4))
    assert driver.resolve(first).value == ["raw", "stop", []]


def test_item_68_an_error_stops_recurrence(driver: Driver) -> None:
    """Item 68: a failing recurrent execution (no retries) ends the step with its error."""
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws, options=model.StepOptions(recurrent=True))
    worker.finish(first, None)
    second = attempt(first, 2)
    worker.error(second)
    worker.terminated(second)
    assert driver.completion(second) == (C.ERRORED, None)
    assert not driver.exists(attempt(first, 3))
    assert driver.resolve(first).status == "error"


def test_item_69_recurrence_honours_the_step_delay(driver: Driver) -> None:
    """Item 69: the next iteration waits the step's delay."""
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws, options=model.StepOptions(recurrent=True, delay=1_000))
    driver.advance(1_000)
    assert worker.executes() == [first]
    worker.finish(first, None)
    second = attempt(first, 2)
    assert driver.execution(second).execute_after == driver.now + 1_000
    driver.advance(999)
    assert second not in worker.executes()
    driver.advance(1)
    assert second in worker.executes()


# --- E. Workspaces, manifests --------------------------------------------------------------------


def test_item_72_archiving_a_module_removes_it_from_the_current_manifests(
    driver: Driver,
) -> None:
    """Item 72: the archived module is gone from the manifests; the others stay."""
    ws = driver.workspace()
    manifests = {"app": {"main": {"parameters": []}}, "etl": {"load": {"parameters": []}}}
    driver.reply(commands.RegisterManifests(workspace_id=ws, manifests=manifests))
    assert set(views.manifests(driver.db, ws) or {}) == {"app", "etl"}
    driver.reply(commands.ArchiveModule(workspace_id=ws, module="etl"))
    assert set(views.manifests(driver.db, ws) or {}) == {"app"}


def test_item_77_an_identical_manifest_changes_nothing_and_a_change_replaces_it(
    driver: Driver,
) -> None:
    """Item 77: re-registering the same manifest writes nothing (the rows keep their
    registration time); any definition change replaces them."""

    def registered_at() -> set[int]:
        return {row[0] for row in driver.db.execute("SELECT created_at FROM manifests")}

    ws = driver.workspace()
    manifest = {"app": {"main": {"parameters": [], "delay": 0}}}
    driver.reply(commands.RegisterManifests(workspace_id=ws, manifests=manifest))
    before = views.manifests(driver.db, ws)
    first = registered_at()
    assert before is not None and "main" in before["app"]
    driver.advance(1_000)
    driver.reply(commands.RegisterManifests(workspace_id=ws, manifests=manifest))
    assert views.manifests(driver.db, ws) == before
    assert registered_at() == first
    changed = {"app": {"main": {"parameters": [], "delay": 500}}}
    driver.reply(commands.RegisterManifests(workspace_id=ws, manifests=changed))
    after = views.manifests(driver.db, ws)
    assert after is not None and after != before
    assert after["app"]["main"]["delay"] == 500
    assert registered_at() == {driver.now}


# --- H. Sessions ---------------------------------------------------------------------------------


def test_item_101_102_results_and_errors_after_a_reconnect_are_accepted(driver: Driver) -> None:
    """Items 101 and 102: on reconnect the session message lists the held executions and
    the buffered value and error are recorded."""
    ws = driver.workspace()
    worker = driver.session(ws, concurrency=2)
    good, bad = driver.submit(ws), driver.submit(ws)
    worker.heartbeat(good, bad)
    worker.disconnect()
    frame = worker.connect()
    assert sorted(frame[2]) == sorted([good, bad])
    worker.finish(good, "buffered")
    worker.error(bad)
    worker.terminated(bad)
    assert driver.resolve(good).value == ["raw", "buffered", []]
    resolution = driver.resolve(bad)
    assert resolution.status == "error"
    assert resolution.error == model.ErrorInfo(type="ValueError", message="boom")


# --- M. Streams ------------------------------------------------------------------------------


def test_item_170_a_consumer_suspended_on_a_stream_counts_as_demand(driver: Driver) -> None:
    """Item 170: a lockstep producer (buffer 0) is granted the item its suspended consumer
    waits for, and the item releases the consumer's successor."""
    _, worker, producer, consumer = streams.pair(driver)
    stream = streams.register(worker, producer, buffer=0)
    assert streams.demand(worker, producer) == 0
    driver.handle(
        commands.Suspend(session_id=worker.id, execution_id=consumer, stream_wait=(stream["id"], 0))
    )
    assert streams.demand(worker, producer) == 1
    successor = attempt(consumer, 2)
    assert successor not in worker.executes()
    streams.append(driver, worker, producer, 0)
    assert successor in worker.executes()


def test_item_170_a_resumed_lockstep_producer_is_granted_for_a_suspended_consumer(
    driver: Driver,
) -> None:
    """Item 170: the same holds for the successor of a suspended producer that continues
    the stream."""
    _, worker, producer, consumer = streams.pair(driver)
    stream = streams.register(worker, producer, buffer=0)
    driver.handle(commands.Suspend(session_id=worker.id, execution_id=producer))
    driver.handle(
        commands.Suspend(session_id=worker.id, execution_id=consumer, stream_wait=(stream["id"], 0))
    )
    resumed = attempt(producer, 2)
    assert streams.register(worker, resumed, buffer=0)["id"] == stream["id"]
    assert streams.demand(worker, resumed) == 1
    streams.append(driver, worker, resumed, 0)
    assert attempt(consumer, 2) in worker.executes()
