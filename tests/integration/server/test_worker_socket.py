"""The worker WebSocket against a real server (``server-api.md`` §9, checklist 91-101)."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.integration.server.conftest import (
    WorkerFactory,
    execution_view,
    new_workspace,
    run_topic,
    submit,
)
from tests.support.eventually import eventually_async
from tests.support.frames import raw, submit_params
from tests.support.server import ServerProcess
from tests.support.worker_socket import WorkerSocket, create_session

pytestmark = pytest.mark.integration

MODULE = "app.flows"


def child_params(parent_id: str, target: str = "work", **options: Any) -> list[Any]:
    """``submit`` params for a task called with ``1`` (options as ``submit_params``)."""
    return submit_params(MODULE, target, parent_id, arguments=[raw(1)], **options)


async def started(
    client: httpx.AsyncClient, worker: WorkerSocket, workspace: str, **extra: Any
) -> dict[str, str]:
    """Submit ``app.flows/main`` and wait until ``worker`` is told to execute it."""
    run = await submit(client, workspace, **extra)
    await worker.command("execute", run["executionId"])
    return run


async def ready_worker(connect_worker: WorkerFactory, workspace: str) -> WorkerSocket:
    worker = await connect_worker(workspace)
    await worker.session_frame()
    await worker.declare(MODULE, workflows=("main",), tasks=("work",))
    return worker


async def submit_child(worker: WorkerSocket, parent_id: str, **options: Any) -> str:
    request_id = await worker.request("submit", *child_params(parent_id, **options))
    reply = await worker.reply(request_id)
    assert reply[0] == 2, reply
    child: str = reply[2][0]
    return child


async def finish(worker: WorkerSocket, execution_id: str, value: Any) -> None:
    await worker.notify("put_result", execution_id, raw(value))
    await worker.notify("notify_terminated", [execution_id])


# --- Handshake (91-93) ------------------------------------------------------------------


async def test_first_frame_is_the_session_message(
    connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await connect_worker(workspace)
    assert worker.connection.subprotocol == "v1"
    assert worker.token is not None
    session_id = worker.token.split(".")[0]
    assert await worker.session_frame() == [0, session_id, []]
    assert worker.frames == []


async def test_session_token_shape(client: httpx.AsyncClient, workspace: str) -> None:
    token = await create_session(client, workspace)
    session_id, _, secret = token.partition(".")
    assert len(session_id) == 13
    assert len(secret) == 24


def corrupt(token: str) -> str:
    session_id, _, secret = token.partition(".")
    return f"{session_id}.{'A' if secret[0] != 'A' else 'B'}{secret[1:]}"


@pytest.mark.parametrize(
    "make_token",
    [
        lambda token: None,
        lambda token: "nonsense",
        lambda token: "bcdfghjklmnpq.xxxxxxxxxxxxxxxxxxxxxxxx",
        lambda token: token.split(".")[0],
        lambda token: token.split(".")[0] + ".",
        corrupt,
    ],
    ids=["missing", "garbage", "unknown-session", "no-secret", "empty-secret", "wrong-secret"],
)
async def test_invalid_session_token_closes_with_session_invalid(
    server: ServerProcess, client: httpx.AsyncClient, workspace: str, make_token: Any
) -> None:
    token = await create_session(client, workspace)
    worker = await WorkerSocket.connect(server.ws_url, make_token(token), workspace)
    assert await worker.closed() == (4000, "session_invalid")
    assert worker.frames == []


async def test_undecodable_session_subprotocol_closes_with_session_invalid(
    server: ServerProcess, workspace: str
) -> None:
    async with connect(
        f"{server.ws_url}/worker?workspaceId={workspace}",
        subprotocols=["session.%%%", "v1"],  # type: ignore[list-item]
        proxy=None,
    ) as connection:
        with pytest.raises(ConnectionClosed):
            await connection.recv()
        assert (connection.close_code, connection.close_reason) == (4000, "session_invalid")


async def test_other_workspace_closes_with_workspace_mismatch(
    server: ServerProcess, client: httpx.AsyncClient, workspace: str
) -> None:
    other = await new_workspace(client)
    token = await create_session(client, workspace)
    for workspace_id in (other, "Wzzzz", ""):
        worker = await WorkerSocket.connect(server.ws_url, token, workspace_id)
        assert await worker.closed() == (4000, "workspace_mismatch")
    # The session itself is still usable from its own workspace.
    worker = await WorkerSocket.connect(server.ws_url, token, workspace)
    assert (await worker.session_frame())[1] == token.split(".")[0]
    await worker.close()


async def test_version_mismatch_before_upgrade(server: ServerProcess, workspace: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
        response = await http.get(
            "/worker",
            params={"workspaceId": workspace, "version": "0.11"},
            headers={
                "connection": "upgrade",
                "upgrade": "websocket",
                "sec-websocket-version": "13",
                "sec-websocket-key": base64.b64encode(b"0123456789abcdef").decode(),
            },
        )
    assert response.status_code == 409
    assert response.json()["error"] == "version_mismatch"


# --- Execution (94-96) --------------------------------------------------------------------


async def test_declared_workflow_is_executed(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    run = await submit(
        client, workspace, arguments=[["json", '{"a": 1}'], ["json", "[1, 2]"]], timeout=5000
    )
    params = await worker.command("execute", run["executionId"])
    assert params[:7] == [
        run["executionId"],
        MODULE,
        "main",
        [raw({"type": "dict", "items": ["a", 1]}), raw([1, 2])],
        run["runId"],
        workspace,
        5000,
    ]
    assert len(params) == 9
    assert params[7] is None  # no stream configuration
    assert params[8] == {}  # no checkpoints for a first attempt
    execution = await execution_view(client, workspace, run["executionId"])
    assert execution["assignedAt"] is not None


async def test_work_submitted_before_declaration_is_executed_after_it(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    run = await submit(client, workspace)
    worker = await connect_worker(workspace)
    await worker.session_frame()
    await worker.declare("other.module", tasks=("main",))
    await worker.declare(MODULE, workflows=("main",))
    assert (await worker.command("execute"))[0] == run["executionId"]


async def test_undeclared_target_is_not_executed(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    queued = await submit(client, workspace, target="other")
    marker = await started(client, worker, workspace)
    assert not worker.has_frame(lambda f: f[0] == 1 and f[1]["params"][0] == queued["executionId"])
    queue = (await client.get(f"/topics/workspaces/{workspace}/queue")).json()
    assert queue[queued["executionId"]]["assignedAt"] is None
    assert queue[marker["executionId"]]["assignedAt"] is not None


async def test_put_result_completes_the_run(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    run = await started(client, worker, workspace)
    await worker.notify("record_heartbeats", {run["executionId"]: 1})
    await finish(worker, run["executionId"], {"type": "dict", "items": ["ok", True]})

    async def completed() -> Any:
        execution = await execution_view(client, workspace, run["executionId"])
        assert execution["completedAt"] is not None
        return execution

    execution = await eventually_async(completed)
    assert execution["result"] == {
        "type": "value",
        "value": {
            "type": "raw",
            "data": {"type": "dict", "items": ["ok", True]},
            "references": [],
        },
        "createdBy": None,
    }
    assert execution["resultAt"] is not None
    queue = (await client.get(f"/topics/workspaces/{workspace}/queue")).json()
    assert run["executionId"] not in queue


async def test_put_result_for_an_unknown_execution_closes_with_execution_invalid(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    queued = await submit(client, workspace, target="other")  # never assigned to this worker
    await worker.notify("put_result", queued["executionId"], raw(1))
    assert await worker.closed() == (4000, "execution_invalid")
    execution = await execution_view(client, workspace, queued["executionId"])
    assert execution["result"] is None


@pytest.mark.parametrize("execution_id", ["Rzzzz:1:1", "nonsense"])
async def test_put_result_for_a_nonexistent_execution_closes_with_execution_invalid(
    connect_worker: WorkerFactory, workspace: str, execution_id: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    await worker.notify("put_result", execution_id, raw(1))
    assert await worker.closed() == (4000, "execution_invalid")


async def test_non_retryable_error_is_not_retried(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    run = await started(client, worker, workspace, retries={"limit": 3})
    frames = [["app/flows.py", 3, "main", "raise ValueError()"]]
    await worker.notify("put_error", run["executionId"], ["ValueError", "boom", frames, False])
    await worker.notify("notify_terminated", [run["executionId"]])

    async def errored() -> Any:
        execution = await execution_view(client, workspace, run["executionId"])
        assert execution["completedAt"] is not None
        return execution

    execution = await eventually_async(errored)
    assert execution["result"] == {
        "type": "error",
        "error": {
            "type": "ValueError",
            "message": "boom",
            "frames": [
                {"file": "app/flows.py", "line": 3, "name": "main", "code": "raise ValueError()"}
            ],
        },
        "retry": None,
        "retryable": False,
        "createdBy": None,
    }
    step = (await run_topic(client, workspace, run["runId"]))["steps"][run["stepId"]]
    assert list(step["executions"]) == ["1"]


async def test_retryable_error_produces_attempt_two(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    run = await started(client, worker, workspace, retries={"limit": 1})
    await worker.notify("put_error", run["executionId"], ["ValueError", "boom", []])
    await worker.notify("notify_terminated", [run["executionId"]])
    second = f"{run['stepId']}:2"
    await worker.command("execute", second)
    first = await execution_view(client, workspace, run["executionId"])
    assert first["result"]["type"] == "error"
    assert first["result"]["retry"] == 2
    # The last allowed attempt fails too: no third attempt.
    await worker.notify("put_error", second, ["ValueError", "again", [], True])
    await worker.notify("notify_terminated", [second])

    async def final() -> Any:
        execution = await execution_view(client, workspace, second)
        assert execution["completedAt"] is not None
        return execution

    assert (await eventually_async(final))["result"]["retry"] is None
    step = (await run_topic(client, workspace, run["runId"]))["steps"][run["stepId"]]
    assert sorted(step["executions"]) == ["1", "2"]


# --- Children and select (97-101) ------------------------------------------------------------


async def test_submit_replies_with_the_child_and_records_it(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    run = await started(client, worker, workspace)
    request_id = await worker.request("submit", *child_params(run["executionId"]))
    assert await worker.reply(request_id) == [
        2,
        request_id,
        [f"{run['runId']}:2:1", MODULE, "work"],
    ]
    grouped = await worker.request("submit", *child_params(run["executionId"], group_id=0))
    assert (await worker.reply(grouped))[2][0] == f"{run['runId']}:3:1"
    await worker.command("execute", f"{run['runId']}:2:1")
    topic = await run_topic(client, workspace, run["runId"])
    assert topic["steps"][run["stepId"]]["executions"]["1"]["children"] == [
        {"stepId": f"{run['runId']}:2", "attempt": 1, "groupId": None},
        {"stepId": f"{run['runId']}:3", "attempt": 1, "groupId": 0},
    ]
    child_step = topic["steps"][f"{run['runId']}:2"]
    assert child_step["parentId"] == run["executionId"]
    assert child_step["target"] == "work"
    assert child_step["arguments"] == [{"type": "raw", "data": 1, "references": []}]


async def test_submit_from_an_execution_not_held_closes_with_execution_invalid(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    queued = await submit(client, workspace, target="other")
    await worker.request("submit", *child_params(queued["executionId"]))
    assert await worker.closed() == (4000, "execution_invalid")


def select_params(
    handles: list[str], caller: str, timeout_ms: int | None, suspend: bool
) -> list[Any]:
    return [[{"type": "execution", "id": h} for h in handles], caller, timeout_ms, suspend]


async def test_select_on_a_completed_execution_replies_immediately(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    run = await started(client, worker, workspace)
    child = await submit_child(worker, run["executionId"])
    await worker.command("execute", child)
    await finish(worker, child, 42)
    request_id = await worker.request(
        "select", *select_params([child], run["executionId"], None, False)
    )
    assert await worker.reply(request_id) == [
        2,
        request_id,
        {"winner": 0, "status": "ok", "value": raw(42)},
    ]
    execution = await execution_view(client, workspace, run["executionId"])
    assert execution["dependencies"] == {
        child: {
            "type": "result",
            "execution": {"executionId": child, "module": MODULE, "target": "work"},
        }
    }


async def test_select_first_resolved_handle_in_list_order_wins(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    run = await started(client, worker, workspace)
    pending = await submit_child(worker, run["executionId"])
    failed = await submit_child(worker, run["executionId"])
    done = await submit_child(worker, run["executionId"])
    await worker.command("execute", failed)
    await worker.command("execute", done)
    await worker.notify("put_error", failed, ["KeyError", "k", [["f.py", 1, "work", None]]])
    await worker.notify("notify_terminated", [failed])
    await finish(worker, done, "x")
    request_id = await worker.request(
        "select", *select_params([pending, done, failed], run["executionId"], 0, False)
    )
    assert (await worker.reply(request_id))[2] == {"winner": 1, "status": "ok", "value": raw("x")}
    request_id = await worker.request(
        "select", *select_params([pending, failed, done], run["executionId"], 0, False)
    )
    assert (await worker.reply(request_id))[2] == {
        "winner": 1,
        "status": "error",
        "error": {
            "type": "KeyError",
            "message": "k",
            "traceback": '  File "f.py", line 1, in work\n    ',
        },
    }


async def test_select_poll_on_a_pending_execution_replies_null(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    run = await started(client, worker, workspace)
    child = await submit_child(worker, run["executionId"])
    request_id = await worker.request(
        "select", *select_params([child], run["executionId"], 0, False)
    )
    assert await worker.reply(request_id) == [2, request_id, None]
    # A poll miss changes nothing for the caller.
    execution = await execution_view(client, workspace, run["executionId"])
    assert execution["result"] is None
    assert not worker.has_frame(lambda f: f[0] == 1 and f[1]["command"] == "abort")


async def test_select_waits_until_the_execution_completes(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    run = await started(client, worker, workspace)
    child = await submit_child(worker, run["executionId"])
    await worker.command("execute", child)
    request_id = await worker.request(
        "select", *select_params([child], run["executionId"], None, False)
    )
    # The reply cannot come before the result: the child is only finished after this.
    assert not worker.has_frame(lambda f: f[0] in (2, 3) and f[1] == request_id)
    await finish(worker, child, [1, 2])
    assert (await worker.reply(request_id))[2] == {
        "winner": 0,
        "status": "ok",
        "value": raw([1, 2]),
    }


async def test_select_with_a_timeout_replies_null_when_it_elapses(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    run = await started(client, worker, workspace)
    child = await submit_child(worker, run["executionId"])
    request_id = await worker.request(
        "select", *select_params([child], run["executionId"], 100, False)
    )
    assert await worker.reply(request_id) == [2, request_id, None]
    # A late result does not produce a second reply, and the caller was not suspended.
    await worker.command("execute", child)
    await finish(worker, child, 1)
    poll = await worker.request("select", *select_params([child], run["executionId"], 0, False))
    assert (await worker.reply(poll))[2]["status"] == "ok"
    assert not worker.has_frame(lambda f: f[0] in (2, 3) and f[1] == request_id)
    execution = await execution_view(client, workspace, run["executionId"])
    assert execution["result"] is None


async def test_select_with_suspend_aborts_and_reruns_after_the_dependency(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    run = await started(client, worker, workspace)
    caller = run["executionId"]
    child = await submit_child(worker, caller)
    await worker.command("execute", child)
    request_id = await worker.request("select", *select_params([child], caller, 0, True))
    assert await worker.reply(request_id) == [2, request_id, None]
    assert await worker.command("abort", caller) == [caller]
    execution = await execution_view(client, workspace, caller)
    assert execution["result"] == {"type": "suspended", "successor": 2, "createdBy": None}
    successor = f"{run['stepId']}:2"
    waiting = await execution_view(client, workspace, successor)
    assert waiting["assignedAt"] is None
    await worker.notify("notify_terminated", [caller])
    # The successor re-runs once the child it waited for has a result.
    await finish(worker, child, "done")
    params = await worker.command("execute", successor)
    assert params[:3] == [successor, MODULE, "main"]
    again = await worker.request("select", *select_params([child], successor, 0, True))
    assert (await worker.reply(again))[2] == {"winner": 0, "status": "ok", "value": raw("done")}
    await finish(worker, successor, "all done")

    async def resolved() -> Any:
        execution = await execution_view(client, workspace, successor)
        assert execution["completedAt"] is not None
        return execution

    assert (await eventually_async(resolved))["result"]["type"] == "value"


async def test_select_on_an_unknown_execution_handle_is_an_error_reply(
    connect_worker: WorkerFactory, client: httpx.AsyncClient, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    run = await started(client, worker, workspace)
    request_id = await worker.request(
        "select", *select_params(["Rzzzz:1:1"], run["executionId"], 0, False)
    )
    assert await worker.reply(request_id) == [3, request_id, "not_found"]


async def test_select_from_an_unknown_caller_closes_with_execution_invalid(
    connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    await worker.request("select", *select_params([], "Rzzzz:1:1", 0, False))
    assert await worker.closed() == (4000, "execution_invalid")


# --- Malformed frames (§11.4) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        {"request": "put_result", "params": [5, ["raw", 1, []]]},
        {"request": "put_result", "params": ["R:1:1", ["nonsense"]]},
        {"request": "put_error", "params": [["R:1:1"], ["E", "m", []]]},
        {"request": "declare_targets", "params": ["app", 1]},
        {"request": "declare_targets", "params": [{"app": ["main"]}, 1]},
        {"request": "record_heartbeats", "params": [["R:1:1"]]},
        {"request": "notify_terminated", "params": ["R:1:1"]},
        {"request": "select", "params": ["R:1:1", "R:1:1", 0, False], "id": 1},
        {"request": "submit", "params": ["app", "work", "task", "args", "R:1:1"], "id": 1},
        {"request": "put_result"},
        [1, 2, 3],
    ],
    ids=lambda frame: frame["request"] if isinstance(frame, dict) else "array",
)
async def test_malformed_params_close_with_protocol_error(
    connect_worker: WorkerFactory, workspace: str, frame: Any
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    await worker.connection.send(json.dumps(frame))
    assert await worker.closed() == (4000, "protocol_error")


async def test_unknown_requests_are_answered_or_ignored(
    connect_worker: WorkerFactory, client: httpx.AsyncClient, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    await worker.notify("no_such_notification", 1)
    request_id = await worker.request("no_such_request")
    assert (await worker.reply(request_id))[0] == 3
    run = await started(client, worker, workspace)  # the connection still works
    assert run["executionId"]


# --- Cancellation and re-runs reach the worker ------------------------------------------------


async def test_cancel_execution_aborts_it_and_cancels_its_descendants(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    run = await started(client, worker, workspace)
    child = await submit_child(worker, run["executionId"])
    await worker.command("execute", child)
    grandchild = await submit_child(worker, child)
    await worker.command("execute", grandchild)
    await finish(worker, grandchild, "done first")
    queued = await worker.reply(
        await worker.request("submit", *child_params(child, target="undeclared"))
    )
    response = await client.post(
        "/api/cancel_execution", json={"workspaceId": workspace, "executionId": run["executionId"]}
    )
    assert response.status_code == 200
    assert response.json() == {}
    assert await worker.command("abort", run["executionId"]) == [run["executionId"]]
    assert await worker.command("abort", child) == [child]
    topic = await run_topic(client, workspace, run["runId"])

    def result_type(execution_id: str) -> str | None:
        run_id, number, attempt = execution_id.split(":")
        result = topic["steps"][f"{run_id}:{number}"]["executions"][attempt]["result"]
        return None if result is None else str(result["type"])

    assert result_type(run["executionId"]) == "cancelled"
    assert result_type(child) == "cancelled"
    assert result_type(queued[2][0]) == "cancelled"
    assert result_type(grandchild) == "value"
    assert not worker.has_frame(lambda f: f[0] == 1 and f[1]["params"] == [grandchild])


async def test_rerun_of_a_running_step_aborts_it_and_executes_the_new_attempt(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    run = await started(client, worker, workspace)
    response = await client.post(
        "/api/rerun_step", json={"workspaceId": workspace, "stepId": run["stepId"]}
    )
    assert response.json() == {"executionId": f"{run['stepId']}:2", "attempt": 2}
    await worker.command("abort", run["executionId"])
    await worker.command("execute", f"{run['stepId']}:2")
