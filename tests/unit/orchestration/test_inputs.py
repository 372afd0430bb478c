"""Human inputs in the core (``semantics.md`` §2.14, §7.8; checklist B 24, F 79-96)."""

from __future__ import annotations

import json
from typing import Any

from pycoflux.orchestration import commands, effects, model
from pycoflux.storage import views
from tests.unit.orchestration.conftest import Driver, Session

C = model.Completion
NUMBER = json.dumps({"type": "integer", "minimum": 0})
FORM = json.dumps(
    {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
)


def ask(
    worker: Session,
    execution_id: str,
    template: str = "Approve {thing}?",
    *,
    key: str | None = None,
    schema: str | None = None,
    initial: Any = None,
    placeholders: dict[str, Any] | None = None,
    title: str | None = None,
    requires: model.TagSet | None = None,
) -> list[Any]:
    """``submit_input``; returns the reply frame."""
    return worker.request(
        lambda request_id: commands.SubmitInput(
            session_id=worker.id,
            request_id=request_id,
            execution_id=execution_id,
            template=template,
            placeholders={k: ["raw", v, []] for k, v in (placeholders or {}).items()},
            schema=schema,
            key=key,
            title=title,
            actions=None,
            initial=initial,
            has_initial=initial is not None,
            requires=requires or {},
        )
    )


def new_input(worker: Session, execution_id: str, **kwargs: Any) -> str:
    reply = ask(worker, execution_id, **kwargs)
    assert reply[0] == 2, reply
    input_id: str = reply[2]
    return input_id


def wait_for(worker: Session, caller: str, input_id: str, **kwargs: Any) -> int:
    return worker.select_handles(caller, [{"type": "input", "id": input_id}], **kwargs)


def test_f79_a_response_resolves_a_waiting_select(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    input_id = new_input(worker, root)
    assert input_id == f"{root.split(':')[0]}/i1"
    request_id = wait_for(worker, root, input_id)
    assert worker.replies(request_id) == []
    assert driver.reply(commands.RespondInput(input_id=input_id, value={"ok": True})) == {}
    assert worker.replies(request_id) == [
        [2, request_id, {"winner": 0, "status": "ok", "value": ["raw", {"ok": True}, []]}]
    ]


def test_f80_dismissing_resolves_as_dismissed(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    input_id = new_input(worker, root)
    driver.reply(commands.DismissInput(input_id=input_id))
    request_id = wait_for(worker, root, input_id, timeout_ms=0)
    assert worker.replies(request_id) == [[2, request_id, {"winner": 0, "status": "dismissed"}]]


def test_f81_f82_without_a_schema_any_json_is_accepted_including_null(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    for value in (None, [1, "two"], {"nested": {"deep": [None]}}):
        input_id = new_input(worker, root, key=json.dumps(value))
        driver.reply(commands.RespondInput(input_id=input_id, value=value))
        request_id = wait_for(worker, root, input_id, timeout_ms=0)
        assert worker.replies(request_id)[0][2]["value"] == ["raw", value, []]
        found = views.input_view(driver.db, input_id)
        assert found is not None
        assert found["response"]["type"] == "value"
        assert found["response"]["value"] == value


def test_f83_f84_a_key_reuses_the_input_and_no_key_creates_a_new_one(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    keyed = new_input(worker, root, key="approval")
    assert new_input(worker, root, key="approval") == keyed
    first, second = new_input(worker, root), new_input(worker, root)
    assert len({keyed, first, second}) == 3
    # Another run's identical key is a different input.
    other_root = driver.submit(ws)
    assert new_input(worker, other_root, key="approval") != keyed


def test_f96_the_same_key_with_another_prompt_is_a_mismatch(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    new_input(worker, root, key="k", placeholders={"thing": "deploy"})
    for changes in (
        {"placeholders": {"thing": "rollback"}},
        {"schema": NUMBER},
        {"requires": {"team": ["ops"]}},
        {"template": "Something else"},
    ):
        reply = ask(worker, root, key="k", **{"placeholders": {"thing": "deploy"}, **changes})
        assert reply[0] == 3 and reply[2] == "input_mismatch", changes
    assert not driver.closed  # an error reply; the connection stays up


def test_f85_a_suspending_select_resumes_when_the_input_is_answered(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    input_id = new_input(worker, root, key="k")
    request_id = wait_for(worker, root, input_id, timeout_ms=0, suspend=True)
    assert worker.replies(request_id) == [[2, request_id, None]]
    successor = root[:-1] + "2"
    assert driver.completion(root) == (C.SUSPENDED, successor)
    assert root in worker.aborts()
    driver.advance(60_000)
    assert successor not in worker.executes()
    inputs_topic = views.workspace_inputs(driver.db, ws)
    assert inputs_topic is not None
    assert list(inputs_topic) == [input_id]
    driver.reply(commands.RespondInput(input_id=input_id, value=5))
    assert successor in worker.executes()
    assert views.workspace_inputs(driver.db, ws) == {}
    # The new attempt asks again (same key) and finds the answer at once.
    assert new_input(worker, successor, key="k") == input_id
    again = wait_for(worker, successor, input_id, timeout_ms=0, suspend=True)
    assert worker.replies(again)[0][2] == {"winner": 0, "status": "ok", "value": ["raw", 5, []]}


def test_f86_polling_an_unanswered_input_returns_null(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    input_id = new_input(worker, root)
    poll = wait_for(worker, root, input_id, timeout_ms=0)
    assert worker.replies(poll) == [[2, poll, None]]
    assert driver.completion(root) is None
    driver.reply(commands.RespondInput(input_id=input_id, value="yes"))
    again = wait_for(worker, root, input_id, timeout_ms=0)
    assert worker.replies(again)[0][2]["value"] == ["raw", "yes", []]


def test_f87_cancelling_an_input_handle_resolves_it_as_cancelled(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    input_id = new_input(worker, root)
    waiting = wait_for(worker, root, input_id)
    reply = worker.request(
        lambda request_id: commands.CancelHandles(
            session_id=worker.id,
            request_id=request_id,
            execution_id=root,
            handles=[{"type": "input", "id": input_id}],
        )
    )
    assert reply[0] == 2
    assert worker.replies(waiting)[0][2] == {"winner": 0, "status": "cancelled"}
    found = views.input_view(driver.db, input_id)
    assert found is not None
    assert found["response"]["type"] == "cancelled"
    assert driver.rejected(commands.RespondInput(input_id=input_id, value=1)).status == 409


def test_f88_f91_an_input_of_one_run_can_be_awaited_by_another(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    asking = driver.submit(ws)
    input_id = new_input(worker, asking)
    other = driver.submit(ws)
    request_id = wait_for(worker, other, input_id)
    driver.reply(commands.RespondInput(input_id=input_id, value="shared"))
    assert worker.replies(request_id)[0][2]["value"] == ["raw", "shared", []]


def test_f89_a_schema_accepts_valid_responses_and_rejects_invalid_ones(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    input_id = new_input(worker, root, schema=FORM)
    for bad in ({"name": "x"}, {"name": 1, "age": 2}, "text", None):
        rejected = driver.rejected(commands.RespondInput(input_id=input_id, value=bad))
        assert (rejected.error, rejected.status) == ("validation_failed", 422)
        assert isinstance(rejected.details, str) and rejected.details
    assert views.input_view(driver.db, input_id)["response"] is None  # type: ignore[index]
    driver.reply(commands.RespondInput(input_id=input_id, value={"name": "x", "age": 3}))


def test_f90_a_second_response_is_rejected_and_the_first_stands(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    input_id = new_input(worker, root)
    driver.reply(commands.RespondInput(input_id=input_id, value="first"))
    for command in (
        commands.RespondInput(input_id=input_id, value="second"),
        commands.DismissInput(input_id=input_id),
    ):
        rejected = driver.rejected(command)
        assert (rejected.error, rejected.status) == ("already_responded", 409)
    assert views.input_view(driver.db, input_id)["response"]["value"] == "first"  # type: ignore[index]


def test_responding_to_a_dismissed_input_is_rejected(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    input_id = new_input(worker, root)
    driver.reply(commands.DismissInput(input_id=input_id))
    rejected = driver.rejected(commands.RespondInput(input_id=input_id, value=1))
    assert (rejected.error, rejected.status) == ("already_responded", 409)
    assert views.input_view(driver.db, input_id)["response"]["type"] == "dismissed"  # type: ignore[index]


def test_unknown_inputs_are_not_found(driver: Driver) -> None:
    driver.workspace()
    for input_id in ("Rnope/i1", "garbage", "R/ix"):
        assert driver.rejected(commands.RespondInput(input_id=input_id, value=1)).status == 404
        assert driver.rejected(commands.DismissInput(input_id=input_id)).status == 404
        assert views.input_view(driver.db, input_id) is None


def test_f92_inspecting_shows_the_request_and_its_response(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    input_id = new_input(
        worker,
        root,
        key="k",
        schema=NUMBER,
        initial=3,
        title="How many?",
        placeholders={"thing": "replicas"},
        requires={"role": ["ops"]},
    )
    found = views.input_view(driver.db, input_id)
    assert found is not None
    assert found["key"] == "k"
    assert found["template"] == "Approve {thing}?"
    assert found["placeholders"] == {"thing": {"type": "raw", "data": "replicas", "references": []}}
    assert found["schema"] == NUMBER  # the JSON text, not parsed
    assert found["initial"] == 3
    assert found["title"] == "How many?"
    assert found["requires"] == {"role": ["ops"]}
    assert found["response"] is None
    driver.reply(commands.RespondInput(input_id=input_id, value=4, principal=None))
    found = views.input_view(driver.db, input_id)
    assert found is not None
    assert found["response"]["value"] == 4
    assert found["response"]["createdAt"] == driver.now


def test_f93_requests_with_a_bad_schema_or_initial_value_get_an_error_reply(
    driver: Driver,
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    cases = [
        ({"initial": 1}, "invalid_initial: initial value requires a schema"),
        ({"schema": "{not json"}, "invalid_schema: "),
        ({"schema": json.dumps({"type": "nonsense"})}, "invalid_schema: "),
        ({"schema": NUMBER, "initial": "many"}, "invalid_initial: "),
    ]
    for kwargs, error in cases:
        reply = ask(worker, root, **kwargs)
        assert reply[0] == 3 and reply[2].startswith(error), (kwargs, reply)
    # The initial value may be partial: required properties are not enforced.
    assert ask(worker, root, schema=FORM, initial={"name": "x"})[0] == 2
    assert not driver.closed


def test_g_a_select_over_an_unknown_handle_is_an_error_reply(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    for handle, error in (
        ({"type": "input", "id": "Rnope/i1"}, "input_not_found"),
        ({"type": "execution", "id": "Rnope:1:1"}, "not_found"),
        ({"type": "stream", "id": "Rnope:1_0"}, "not_found"),
        ({"type": "mystery", "id": "x"}, "invalid_handle"),
    ):
        request_id = worker.select_handles(root, [handle])
        assert worker.replies(request_id) == [[3, request_id, error]]
    assert not driver.closed
    assert driver.completion(root) is None


def test_b24_input_references_in_waited_arguments_do_not_block(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    input_id = new_input(worker, root)
    child = worker.child(
        root,
        values=[["raw", {"type": "ref", "index": 0}, [["input", input_id]]]],
        options=model.StepOptions(wait_for=[0]),
    )
    assert child in worker.executes()


def test_inputs_topics_follow_the_input(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    input_id = new_input(worker, root, title="Go?")
    assert views.workspace_inputs(driver.db, ws) == {}  # nothing waits on it yet
    produced = driver.handle(
        commands.Select(
            session_id=worker.id,
            request_id=99,
            execution_id=root,
            handles=[{"type": "input", "id": input_id}],
            timeout_ms=None,
            suspend=False,
        )
    )
    published = next(e for e in produced if isinstance(e, effects.Publish)).topics
    assert ("inputs", ws) in published
    assert ("input", input_id) in published
    listing = views.workspace_inputs(driver.db, ws)
    assert listing is not None
    assert listing[input_id]["title"] == "Go?"
    assert listing[input_id]["executionId"] == root
    found = views.input_view(driver.db, input_id)
    assert found is not None and found["active"] is True
    run = views.run(driver.db, ws, root.split(":")[0])
    assert run is not None
    execution = run["steps"][root.rsplit(":", 1)[0]]["executions"]["1"]
    assert execution["inputs"] == {input_id: {"title": "Go?", "status": None}}
    assert execution["dependencies"][input_id] == {
        "type": "input",
        "inputId": input_id,
        "title": "Go?",
        "status": None,
    }
    driver.reply(commands.RespondInput(input_id=input_id, value=True))
    assert views.workspace_inputs(driver.db, ws) == {}
    found = views.input_view(driver.db, input_id)
    assert found is not None and found["active"] is False


def test_an_input_is_no_longer_listed_once_its_waiter_is_cancelled(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    input_id = new_input(worker, root)
    wait_for(worker, root, input_id)
    assert list(views.workspace_inputs(driver.db, ws) or {}) == [input_id]
    produced = driver.handle(commands.CancelExecution(workspace_id=ws, execution_id=root))
    published = next(e for e in produced if isinstance(e, effects.Publish)).topics
    assert ("inputs", ws) in published
    assert views.workspace_inputs(driver.db, ws) == {}
