"""Checkpoints in the core (``semantics.md`` §9.2; checklist L 133-150)."""

from __future__ import annotations

from typing import Any

from pycoflux.orchestration import commands, model
from pycoflux.storage import views
from tests.unit.orchestration.conftest import Driver, Session

C = model.Completion


def raw(data: Any) -> list[Any]:
    return ["raw", data, []]


def write(
    worker: Session,
    execution_id: str,
    sets: dict[str, Any] | None = None,
    resets: list[str] | None = None,
) -> list[Any]:
    return worker.request(
        lambda request_id: commands.UpdateCheckpoints(
            session_id=worker.id,
            request_id=request_id,
            execution_id=execution_id,
            sets={name: raw(value) for name, value in (sets or {}).items()},
            resets=resets or [],
        )
    )


def handed(worker: Session, execution_id: str) -> dict[str, Any]:
    """The checkpoint state an execution was started with (``execute`` param 9)."""
    (params,) = [p for p in worker.commands("execute") if p[0] == execution_id]
    return {name: value[1] for name, value in params[8].items()}


def suspend(driver: Driver, worker: Session, execution_id: str) -> str:
    driver.handle(commands.Suspend(session_id=worker.id, execution_id=execution_id))
    return execution_id[:-1] + str(int(execution_id[-1]) + 1)


def test_l133_l143_a_write_before_suspending_reaches_the_successor(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    assert handed(worker, first) == {}
    assert write(worker, first, {"cursor": 10})[0::2] == [2, None]  # the flush barrier reply
    second = suspend(driver, worker, first)
    assert handed(worker, second) == {"cursor": 10}


def test_l134_checkpoints_survive_a_retry(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws, options=model.StepOptions(retries=model.Retries(limit=1)))
    write(worker, first, {"done": [1, 2]})
    worker.error(first)
    worker.terminated(first)
    assert handed(worker, first[:-1] + "2") == {"done": [1, 2]}


def test_l135_each_recurrence_sees_the_previous_iteration(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    execution = driver.submit(ws, options=model.StepOptions(recurrent=True))
    for iteration in range(3):
        assert handed(worker, execution) == ({} if iteration == 0 else {"n": iteration})
        write(worker, execution, {"n": iteration + 1})
        worker.finish(execution, None)
        execution = execution[:-1] + str(iteration + 2)


def test_l136_checkpoints_survive_a_manual_rerun(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    write(worker, first, {"x": "y"})
    worker.finish(first, 1)
    rerun = driver.reply(commands.RerunStep(workspace_id=ws, step_id=first.rsplit(":", 1)[0]))
    assert handed(worker, rerun["executionId"]) == {"x": "y"}


def test_l137_checkpoints_are_scoped_to_the_step(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    write(worker, root, {"secret": 1})
    sibling = worker.child(root)
    assert handed(worker, sibling) == {}
    assert handed(worker, driver.submit(ws)) == {}


def test_l138_names_the_latest_attempt_did_not_write_are_carried_forward(
    driver: Driver,
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    write(worker, first, {"a": 1, "b": 1})
    second = suspend(driver, worker, first)
    write(worker, second, {"b": 2})
    third = suspend(driver, worker, second)
    assert handed(worker, third) == {"a": 1, "b": 2}


def test_l139_a_reset_name_stays_gone_through_attempts_that_write_nothing(
    driver: Driver,
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    write(worker, first, {"a": 1, "b": 2})
    second = suspend(driver, worker, first)
    write(worker, second, resets=["a", "never-set"])
    third = suspend(driver, worker, second)
    fourth = suspend(driver, worker, third)
    assert handed(worker, fourth) == {"b": 2}


def test_l140_resetting_every_name_leaves_an_empty_state(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    write(worker, first, {"a": 1})
    second = suspend(driver, worker, first)
    write(worker, second, resets=["a"])
    assert handed(worker, suspend(driver, worker, second)) == {}


def test_l141_a_stored_null_is_not_a_reset(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    write(worker, first, {"a": None})
    assert handed(worker, suspend(driver, worker, first)) == {"a": None}


def test_resets_apply_before_sets_in_one_update(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    write(worker, first, {"a": "new"}, resets=["a"])
    assert handed(worker, suspend(driver, worker, first)) == {"a": "new"}


def test_l145_writes_from_a_finished_attempt_are_ignored(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    write(worker, first, {"a": 1})
    worker.result(first, "value")  # draining: still allowed
    assert write(worker, first, {"a": 2})[0] == 2
    worker.terminated(first)
    # No longer held by the session: a strict message closes the connection...
    driver.handle(
        commands.UpdateCheckpoints(
            session_id=worker.id, request_id=None, execution_id=first, sets={}, resets=[]
        )
    )
    assert (worker.id, "execution_invalid") in driver.closed


def test_l145_a_superseded_attempt_still_held_gets_execution_completed(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    second = suspend(driver, worker, first)  # completed, the worker has not let go yet
    assert write(worker, first, {"late": True})[0::2] == [3, "execution_completed"]
    assert handed(worker, second) == {}


def test_l147_a_derived_workspace_reads_its_base_and_writes_only_its_own(
    driver: Driver,
) -> None:
    base = driver.workspace("base")
    derived = driver.workspace("derived", base_id=base)
    base_worker = driver.session(base)
    derived_worker = driver.session(derived)
    first = driver.submit(base)
    write(base_worker, first, {"a": 1, "b": 1})
    base_worker.finish(first, 1)
    step = first.rsplit(":", 1)[0]
    in_derived = driver.reply(commands.RerunStep(workspace_id=derived, step_id=step))["executionId"]
    assert handed(derived_worker, in_derived) == {"a": 1, "b": 1}
    write(derived_worker, in_derived, {"b": 2}, resets=["a"])
    derived_worker.finish(in_derived, 2)
    again_in_derived = driver.reply(commands.RerunStep(workspace_id=derived, step_id=step))
    assert handed(derived_worker, again_in_derived["executionId"]) == {"b": 2}
    again_in_base = driver.reply(commands.RerunStep(workspace_id=base, step_id=step))
    assert handed(base_worker, again_in_base["executionId"]) == {"a": 1, "b": 1}


def test_l149_the_run_topic_shows_before_and_after_for_every_attempt(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    write(worker, first, {"a": 1})
    second = suspend(driver, worker, first)
    third = suspend(driver, worker, second)  # the second attempt wrote nothing
    write(worker, third, {"a": 3})
    run = views.run(driver.db, ws, first.split(":")[0])
    assert run is not None
    executions = run["steps"][first.rsplit(":", 1)[0]]["executions"]

    def state(attempt: str, which: str) -> dict[str, Any]:
        return {k: v["data"] for k, v in executions[attempt]["checkpoints"][which].items()}

    assert (state("1", "before"), state("1", "after")) == ({}, {"a": 1})
    assert (state("2", "before"), state("2", "after")) == ({"a": 1}, {"a": 1})
    assert (state("3", "before"), state("3", "after")) == ({"a": 1}, {"a": 3})


def test_l150_falsy_values_round_trip_and_an_empty_state_is_an_empty_object(
    driver: Driver,
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    assert handed(worker, first) == {}
    falsy = {"zero": 0, "empty": "", "no": False, "nothing": []}
    write(worker, first, falsy)
    assert handed(worker, suspend(driver, worker, first)) == falsy


def test_l146_blob_backed_values_are_handed_over_as_blobs(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    blob = ["blob", "ab" * 32, 5000, []]
    worker.request(
        lambda request_id: commands.UpdateCheckpoints(
            session_id=worker.id,
            request_id=request_id,
            execution_id=first,
            sets={"big": blob},
            resets=[],
        )
    )
    second = suspend(driver, worker, first)
    (params,) = [p for p in worker.commands("execute") if p[0] == second]
    assert params[8] == {"big": blob}
