"""The 0.12 orchestration model over HTTP and the worker socket, against a real server:
workspace endpoints, inputs, assets, checkpoints, streams and the completion model
(``server-api.md`` §4.3, §4.7, §8.5, §11; its checklist items 25-28, 49-51, 87, 89,
104-105, 117-133, numbered in the test names as ``api<n>``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.integration.server.conftest import (
    WorkerFactory,
    execution_view,
    new_workspace,
    submit,
)
from tests.support.eventually import eventually_async
from tests.support.frames import raw, submit_input_params, submit_params
from tests.support.server import ServerProcess
from tests.support.worker_socket import WorkerSocket

pytestmark = pytest.mark.integration

MODULE = "app.flows"


async def worker_for(connect_worker: WorkerFactory, workspace: str) -> WorkerSocket:
    worker = await connect_worker(workspace)
    await worker.session_frame()
    await worker.declare(MODULE, workflows=("main",), tasks=("work", "consume"))
    return worker


async def started(
    client: httpx.AsyncClient, worker: WorkerSocket, workspace: str, **extra: Any
) -> dict[str, str]:
    run = await submit(client, workspace, **extra)
    await worker.command("execute", run["executionId"])
    return run


async def call(worker: WorkerSocket, name: str, *params: Any) -> list[Any]:
    request_id = await worker.request(name, *params)
    return await worker.reply(request_id)


async def child(worker: WorkerSocket, parent: str, target: str = "work") -> str:
    reply = await call(worker, "submit", *submit_params(MODULE, target, parent))
    assert reply[0] == 2, reply
    execution_id: str = reply[2][0]
    await worker.command("execute", execution_id)
    return execution_id


async def view_of(client: httpx.AsyncClient, workspace: str, execution_id: str) -> Any:
    async def present() -> Any:
        return await execution_view(client, workspace, execution_id)

    return await eventually_async(present)


async def settled(client: httpx.AsyncClient, workspace: str, execution_id: str) -> Any:
    async def completed() -> Any:
        execution = await execution_view(client, workspace, execution_id)
        assert execution is not None and execution["completion"] is not None, execution
        return execution

    return await eventually_async(completed)


async def post(client: httpx.AsyncClient, name: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(f"/api/{name}", json=body)


async def workspaces_topic(client: httpx.AsyncClient) -> Any:
    return (await client.get("/topics/workspaces")).json()


# --- Workspaces (25-28) ----------------------------------------------------------------


async def test_api25_update_renames_rebases_rejects_cycles_and_clears_the_base(
    client: httpx.AsyncClient,
) -> None:
    root = await new_workspace(client)
    child_ws = await new_workspace(client, base_id=root)
    other = await new_workspace(client)
    response = await post(client, "update_workspace", {"workspaceId": root, "baseId": child_ws})
    assert response.status_code == 400
    assert response.json() == {"error": "bad_request", "details": {"baseId": "invalid"}}
    name = f"renamed-{other}"
    response = await post(
        client, "update_workspace", {"workspaceId": other, "name": name, "baseId": root}
    )
    assert response.status_code == 204, response.text
    assert (await workspaces_topic(client))[other] == {
        "name": name,
        "baseId": root,
        "state": "active",
    }
    response = await post(client, "update_workspace", {"workspaceId": other, "baseId": None})
    assert response.status_code == 204
    assert (await workspaces_topic(client))[other]["baseId"] is None
    missing = await post(client, "update_workspace", {"workspaceId": "Wnope"})
    assert (missing.status_code, missing.json()) == (404, {"error": "not_found"})
    required = await post(client, "update_workspace", {})
    assert required.json()["details"] == {"workspace_id": "required"}


async def test_api26_pause_and_resume_are_idempotent_and_gate_dispatch(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await worker_for(connect_worker, workspace)
    for _ in range(2):
        assert (
            await post(client, "pause_workspace", {"workspaceId": workspace})
        ).status_code == 204
    assert (await workspaces_topic(client))[workspace]["state"] == "paused"
    run = await submit(client, workspace)
    # Assignment happens in the same transaction as the submission: none while paused.
    assert (await execution_view(client, workspace, run["executionId"]))["assignedAt"] is None
    for _ in range(2):
        assert (
            await post(client, "resume_workspace", {"workspaceId": workspace})
        ).status_code == 204
    assert (await workspaces_topic(client))[workspace]["state"] == "active"
    await worker.command("execute", run["executionId"])


async def test_api27_a_workspace_with_a_live_child_cannot_be_archived(
    client: httpx.AsyncClient, workspace: str
) -> None:
    await new_workspace(client, base_id=workspace)
    response = await post(client, "archive_workspace", {"workspaceId": workspace})
    assert response.status_code == 400
    assert response.json() == {
        "error": "bad_request",
        "details": {"workspaceId": "has_dependencies"},
    }


async def test_api28_archiving_closes_workers_cancels_pending_work_and_hides_it(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await worker_for(connect_worker, workspace)
    queued = await submit(client, workspace, target="nobody")
    response = await post(client, "archive_workspace", {"workspaceId": workspace})
    assert response.status_code == 204
    assert await worker.closed() == (4000, "workspace_not_found")
    assert (await workspaces_topic(client))[workspace]["state"] == "archived"
    run = (await client.get(f"/topics/workspaces/{workspace}/runs/{queued['runId']}")).status_code
    assert run == 404  # the archived workspace behaves as if it did not exist
    for name in ("pause_workspace", "resume_workspace", "archive_workspace", "update_workspace"):
        assert (await post(client, name, {"workspaceId": workspace})).status_code == 404


# --- Inputs (49-51, 87, 104) ------------------------------------------------------------


async def submit_input(
    worker: WorkerSocket,
    execution_id: str,
    *,
    key: str | None = "k",
    schema: str | None = None,
    initial: Any = None,
) -> list[Any]:
    params = submit_input_params(execution_id, key=key, schema=schema, initial=initial)
    return await call(worker, "submit_input", *params)


async def test_api104_submit_input_reuses_a_key_and_refuses_a_bad_schema(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await worker_for(connect_worker, workspace)
    run = await started(client, worker, workspace)
    first = await submit_input(worker, run["executionId"])
    assert first[0::2] == [2, f"{run['runId']}/i1"]
    assert (await submit_input(worker, run["executionId"]))[2] == first[2]
    bad = await submit_input(worker, run["executionId"], key="bad", schema="{oops")
    assert bad[0] == 3 and bad[2].startswith("invalid_schema: ")
    no_schema = await submit_input(worker, run["executionId"], key="init", initial=1)
    assert no_schema[0::2] == [3, "invalid_initial: initial value requires a schema"]
    # Error replies leave the connection up.
    assert (await submit_input(worker, run["executionId"], key=None))[2].endswith("/i2")


async def test_api49_api50_api87_respond_through_the_api_and_wake_the_waiter(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await worker_for(connect_worker, workspace)
    run = await started(client, worker, workspace)
    schema = json.dumps({"type": "integer", "minimum": 1})
    input_id = (await submit_input(worker, run["executionId"], schema=schema, initial=2))[2]
    found = await post(client, "get_input", {"inputId": input_id})
    assert found.status_code == 200
    body = found.json()
    assert body["schema"] == schema  # the JSON text, not parsed
    assert body["initial"] == 2 and body["actions"] == ["Go", "Stop"]
    assert body["placeholders"] == {"version": {"type": "raw", "data": "1.2", "references": []}}
    assert body["requires"] == {"role": ["ops"]} and body["response"] is None
    waiting = await worker.request(
        "select", [{"type": "input", "id": input_id}], run["executionId"], None, False
    )

    async def listed() -> Any:
        # The select travels on the socket, the read over HTTP: wait until it is applied.
        listing = (await client.get(f"/topics/workspaces/{workspace}/inputs")).json()
        assert input_id in listing, listing
        return listing

    listing = await eventually_async(listed)
    assert listing[input_id]["runId"] == run["runId"]
    assert listing[input_id]["title"] == "Deploy"
    assert (await client.get(f"/topics/inputs/{input_id}")).json()["active"] is True

    invalid = await post(client, "respond_input", {"inputId": input_id, "value": 0})
    assert invalid.status_code == 422
    assert invalid.json()["error"] == "validation_failed"
    assert isinstance(invalid.json()["details"], str)
    ok = await post(client, "respond_input", {"inputId": input_id, "value": 3})
    assert (ok.status_code, ok.json()) == (200, {})
    assert await worker.reply(waiting) == [
        2,
        waiting,
        {"winner": 0, "status": "ok", "value": raw(3)},
    ]
    again = await post(client, "respond_input", {"inputId": input_id, "value": 4})
    assert (again.status_code, again.json()) == (409, {"error": "already_responded"})
    assert (await post(client, "get_input", {"inputId": input_id})).json()["response"]["value"] == 3
    assert (await client.get(f"/topics/workspaces/{workspace}/inputs")).json() == {}


async def test_api51_dismissing_wakes_the_waiter_with_dismissed(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await worker_for(connect_worker, workspace)
    run = await started(client, worker, workspace)
    input_id = (await submit_input(worker, run["executionId"]))[2]
    waiting = await worker.request(
        "select", [{"type": "input", "id": input_id}], run["executionId"], None, False
    )
    response = await post(client, "dismiss_input", {"inputId": input_id})
    assert (response.status_code, response.json()) == (200, {})
    assert (await worker.reply(waiting))[2] == {"winner": 0, "status": "dismissed"}
    late = await post(client, "respond_input", {"inputId": input_id, "value": 1})
    assert late.status_code == 409


@pytest.mark.parametrize("name", ["get_input", "respond_input", "dismiss_input"])
async def test_unknown_inputs_are_not_found(client: httpx.AsyncClient, name: str) -> None:
    for input_id in ("Rnope/i1", "nonsense"):
        response = await post(client, name, {"inputId": input_id, "value": 1})
        assert (response.status_code, response.json()) == (404, {"error": "not_found"})
    assert (await client.get("/topics/inputs/Rnope/i1")).status_code == 404


# --- Bad input keeps the worker connected ------------------------------------------------


async def test_bad_requests_get_error_replies_and_the_connection_stays_up(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await worker_for(connect_worker, workspace)
    run = await started(client, worker, workspace)
    caller = run["executionId"]
    for handle, error in (
        ({"type": "execution", "id": "Rnope:1:1"}, "not_found"),
        ({"type": "input", "id": "Rnope/i1"}, "input_not_found"),
        ({"type": "execution", "id": caller}, "wait_cycle"),
    ):
        reply = await call(worker, "select", [handle], caller, None, False)
        assert reply[0::2] == [3, error]
    finished = await submit(client, workspace, target="nobody")
    await post(
        client,
        "cancel_execution",
        {"workspaceId": workspace, "executionId": finished["executionId"]},
    )
    again = await post(
        client,
        "cancel_execution",
        {"workspaceId": workspace, "executionId": finished["executionId"]},
    )
    assert (again.status_code, again.json()) == (200, {})
    rerun = await post(client, "rerun_step", {"workspaceId": workspace, "stepId": "Rnope:1"})
    assert rerun.status_code == 404
    # Still connected: the execution can finish normally.
    await worker.notify("put_result", caller, raw("fine"))
    await worker.notify("notify_terminated", [caller])
    assert (await settled(client, workspace, caller))["completion"]["kind"] == "succeeded"


# --- Assets (89, 105) ------------------------------------------------------------------------


async def test_api89_api105_assets_persist_and_read_back(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await worker_for(connect_worker, workspace)
    run = await started(client, worker, workspace)
    entries = {"a.csv": ["a" * 64, 5, {"type": "text/csv"}]}
    reply = await call(worker, "put_asset", run["executionId"], "data", entries)
    asset_id, name, count, size = reply[2]
    assert (name, count, size) == ("data", 1, 5)
    assert (await call(worker, "get_asset", asset_id, run["executionId"]))[0::2] == [2, entries]
    assert (await call(worker, "get_asset", "Anope", run["executionId"]))[0::2] == [
        3,
        "not_found",
    ]
    topic = (await client.get(f"/topics/asset/{asset_id}")).json()
    assert topic == {
        "name": "data",
        "entries": {"a.csv": {"blobKey": "a" * 64, "size": 5, "metadata": {"type": "text/csv"}}},
    }
    assert (await client.get("/topics/asset/Anope")).status_code == 404
    view = await view_of(client, workspace, run["executionId"])
    assert view["assets"][asset_id]["totalSize"] == 5
    assert view["dependencies"][asset_id]["type"] == "asset"


# --- Completion model (117-119) ----------------------------------------------------------------


async def test_api117_a_clean_finish_records_result_then_completion(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await worker_for(connect_worker, workspace)
    run = await started(client, worker, workspace)
    await worker.notify("put_result", run["executionId"], raw(1))

    async def draining() -> Any:
        view = await execution_view(client, workspace, run["executionId"])
        assert view["resultAt"] is not None and view["completion"] is None
        return view

    await eventually_async(draining)
    await worker.notify("notify_terminated", [run["executionId"]])
    view = await settled(client, workspace, run["executionId"])
    assert view["completion"] == {"kind": "succeeded", "successor": None}
    assert view["completedAt"] >= view["resultAt"]


async def test_api118_termination_without_a_result_is_a_crash_and_is_retried(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await worker_for(connect_worker, workspace)
    run = await started(client, worker, workspace, retries={"limit": 1})
    await worker.notify("notify_terminated", [run["executionId"]])
    view = await settled(client, workspace, run["executionId"])
    retry = f"{run['stepId']}:2"
    assert view["result"] == {"type": "crashed", "retry": 2, "createdBy": None}
    assert view["completion"] == {
        "kind": "crashed",
        "successor": {"type": "execution", "id": retry},
    }
    await worker.command("execute", retry)


async def test_api119_api120_api121_api123_checkpoints_cross_a_suspension(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await worker_for(connect_worker, workspace)
    run = await started(client, worker, workspace)
    first = run["executionId"]
    reply = await call(worker, "checkpoint_update", first, {"a": raw(1), "b": raw(2)}, [])
    assert reply[0::2] == [2, None]
    reply = await call(worker, "checkpoint_update", first, {}, ["b"])
    assert reply[0::2] == [2, None]
    await worker.notify("suspend", first, None)
    await worker.command("abort", first)
    second = f"{run['stepId']}:2"
    params = await worker.command("execute", second)
    assert params[8] == {"a": raw(1)}  # the reset name is absent
    view = await settled(client, workspace, first)
    assert view["completion"] == {
        "kind": "suspended",
        "successor": {"type": "execution", "id": second},
    }
    later = await view_of(client, workspace, second)
    a = {"type": "raw", "data": 1, "references": []}
    assert view["checkpoints"] == {"before": {}, "after": {"a": a}}
    assert later["checkpoints"] == {"before": {"a": a}, "after": {"a": a}}


async def test_api122_checkpoint_writes_after_completion_and_bad_shapes(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await worker_for(connect_worker, workspace)
    run = await started(client, worker, workspace)
    await worker.notify("suspend", run["executionId"], None)
    await worker.command("abort", run["executionId"])
    reply = await call(worker, "checkpoint_update", run["executionId"], {"x": raw(1)}, [])
    assert reply[0::2] == [3, "execution_completed"]
    await worker.request("checkpoint_update", run["executionId"], ["not", "an object"], [])
    assert await worker.closed() == (4000, "protocol_error")


# --- Streams (124-133) ---------------------------------------------------------------------------


async def producer_and_consumer(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> tuple[WorkerSocket, str, str]:
    worker = await worker_for(connect_worker, workspace)
    run = await started(client, worker, workspace)
    return (
        worker,
        await child(worker, run["executionId"]),
        await child(worker, run["executionId"], "consume"),
    )


async def stream_command(worker: WorkerSocket, name: str, consumer: str, sub: int) -> list[Any]:
    frame = await worker.take(
        lambda f: f[0] == 1 and f[1]["command"] == name and f[1]["params"][:2] == [consumer, sub]
    )
    params: list[Any] = frame[1]["params"]
    return params


async def test_api124_api125_api126_register_append_subscribe_and_close(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker, producer, consumer = await producer_and_consumer(client, connect_worker, workspace)
    step = producer.rsplit(":", 1)[0]
    registered = await call(worker, "stream_register", producer, 0, None, None)
    assert registered[2] == {"id": f"{step}_0", "index": 0, "head": -1}
    assert (await call(worker, "stream_register", producer, 0, None, None))[2] == registered[2]
    await worker.notify("stream_append", producer, 0, 0, raw("a"))
    await worker.notify("stream_append", producer, 0, 1, raw("b"))
    await worker.notify("stream_subscribe", 1, consumer, f"{step}_0", 0, None, 16, None)
    await worker.notify("stream_subscribe", 1, consumer, f"{step}_0", 0, None, 16, None)
    items = await stream_command(worker, "stream_items", consumer, 1)
    assert items[2] == [[0, raw("a")], [1, raw("b")]]
    await worker.notify("stream_close", producer, 0, None)
    assert await stream_command(worker, "stream_closed", consumer, 1) == [
        consumer,
        1,
        "complete",
        None,
    ]
    assert not worker.has_frame(lambda f: f[0] == 1 and f[1]["command"] == "stream_items")
    await worker.notify("stream_subscribe", 2, consumer, "Rnope:1_0", 0, None, 16, None)
    assert await stream_command(worker, "stream_closed", consumer, 2) == [
        consumer,
        2,
        "stream_not_found",
        None,
    ]


async def test_api127_api128_prefetch_and_demand(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker, producer, consumer = await producer_and_consumer(client, connect_worker, workspace)
    stream_id = (await call(worker, "stream_register", producer, 0, 2, None))[2]["id"]
    demand = await worker.command("stream_demand", producer)
    assert demand == [producer, 0, 2]
    for sequence in range(3):
        await worker.notify("stream_append", producer, 0, sequence, raw(sequence))
    await worker.notify("stream_subscribe", 1, consumer, stream_id, 0, None, 1, None)
    assert (await stream_command(worker, "stream_items", consumer, 1))[2] == [[0, raw(0)]]
    await worker.notify("stream_ack", consumer, 1, 1, 0)
    assert (await stream_command(worker, "stream_items", consumer, 1))[2] == [[1, raw(1)]]
    unbounded = (await call(worker, "stream_register", producer, 1, None, None))[2]
    assert unbounded["index"] == 1
    await worker.notify("stream_append", producer, 1, 0, raw("x"))
    await worker.notify("stream_subscribe", 2, consumer, unbounded["id"], 0, None, 16, None)
    await stream_command(worker, "stream_items", consumer, 2)
    assert not worker.has_frame(
        lambda f: f[0] == 1 and f[1]["command"] == "stream_demand" and f[1]["params"][1] == 1
    )


async def test_api129_a_stream_error_makes_the_completion_stream_errored(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker, producer, consumer = await producer_and_consumer(client, connect_worker, workspace)
    stream_id = (await call(worker, "stream_register", producer, 0, None, None))[2]["id"]
    await worker.notify("stream_subscribe", 1, consumer, stream_id, 0, None, 16, None)
    error = ["ValueError", "bad", [["f.py", 1, "g", "x"]]]
    await worker.notify("stream_close", producer, 0, error)
    closed = await stream_command(worker, "stream_closed", consumer, 1)
    assert closed[2:] == [
        "errored",
        {"type": "ValueError", "message": "bad", "frames": [["f.py", 1, "g", "x"]]},
    ]
    await worker.notify("put_result", producer, raw("value"))
    await worker.notify("notify_terminated", [producer])
    view = await settled(client, workspace, producer)
    assert view["completion"]["kind"] == "stream_errored"
    assert view["result"]["type"] == "value"
    assert view["streams"]["0"]["reason"] == "errored"


async def test_api130_an_idle_timeout_close_is_declined_while_paused(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker, producer, consumer = await producer_and_consumer(client, connect_worker, workspace)
    stream_id = (await call(worker, "stream_register", producer, 0, 0, 1000))[2]["id"]
    await worker.notify("suspend", consumer, None, {"stream_id": stream_id, "sequence": 0})
    await worker.command("abort", consumer)
    assert (await call(worker, "stream_close", producer, 0, None, "timeout"))[2] is False
    await worker.notify("stream_append", producer, 0, 0, raw(0))
    await worker.command("execute", f"{consumer.rsplit(':', 1)[0]}:2")  # the item released it
    assert (await call(worker, "stream_close", producer, 0, None, "timeout"))[2] is True


async def test_api131_stream_select_handles_and_cancel_refusing_them(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker, producer, consumer = await producer_and_consumer(client, connect_worker, workspace)
    stream_id = (await call(worker, "stream_register", producer, 0, None, None))[2]["id"]
    handle = {"type": "stream", "id": stream_id, "sequence": 0}
    waiting = await worker.request("select", [handle], consumer, None, False)
    await worker.notify("stream_append", producer, 0, 0, raw(0))
    assert (await worker.reply(waiting))[2] == {"winner": 0, "status": "ok"}
    refused = await call(worker, "cancel", [handle], consumer)
    assert refused[0::2] == [3, "invalid_handle"]
    await worker.request(
        "select", [{"type": "stream", "id": stream_id, "sequence": -1}], consumer, 0, False
    )
    assert await worker.closed() == (4000, "protocol_error")


async def test_api132_the_stream_topic(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker, producer, _ = await producer_and_consumer(client, connect_worker, workspace)
    stream_id = (await call(worker, "stream_register", producer, 0, None, None))[2]["id"]
    await worker.notify("stream_append", producer, 0, 0, raw("a"))
    await worker.notify("stream_close", producer, 0, None)

    async def closed() -> Any:
        topic = (await client.get(f"/topics/streams/{stream_id}")).json()
        assert topic["closure"] is not None
        return topic

    topic = await eventually_async(closed)
    assert topic["id"] == stream_id
    assert topic["step"]["stepId"] == producer.rsplit(":", 1)[0]
    assert topic["workspaceId"] == workspace
    assert (topic["index"], topic["attempts"], topic["totalCount"]) == (0, [1], 1)
    assert topic["items"][0]["value"] == {"type": "raw", "data": "a", "references": []}
    assert topic["tailSize"] == 200
    assert (await client.get("/topics/streams/Rnope:1_0")).status_code == 404


async def test_api133_streams_configuration_reaches_the_execute_command(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await worker_for(connect_worker, workspace)
    run = await submit(client, workspace, streams={"buffer": 4})
    params = await worker.command("execute", run["executionId"])
    assert params[7] == {"buffer": 4, "timeout_ms": None}
    manifest = {
        "parameters": [],
        "waitFor": [],
        "delay": 0,
        "streams": {"buffer": None, "timeout_ms": 500},
    }
    response = await post(
        client,
        "register_manifests",
        {"workspaceId": workspace, "manifests": {MODULE: {"main": manifest}}},
    )
    assert response.status_code == 204
    topic = (await client.get(f"/topics/workspaces/{workspace}/workflows/{MODULE}/main")).json()
    assert topic["configuration"]["streams"] == {"buffer": None, "timeoutMs": 500}


# --- Live topics ------------------------------------------------------------------------------


class Topics:
    """A ``/topics`` client applying set/unset updates to the values it follows."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.values: dict[int, Any] = {}

    async def subscribe(self, channel: int, topic: Any) -> Any:
        await self.socket.send(json.dumps([2, channel, topic]))
        while channel not in self.values:
            await self.receive()
        return self.values[channel]

    async def receive(self) -> None:
        frame = json.loads(await self.socket.recv())
        if frame[0] == 2:
            self.values[frame[1]] = frame[2]
        elif frame[0] == 3:
            for update in frame[2]:
                self.values[frame[1]] = apply(self.values[frame[1]], update)
        elif frame[0] == 0:
            raise AssertionError(f"subscription failed: {frame}")

    async def until(self, channel: int, check: Any) -> Any:
        async with asyncio.timeout(10):
            while not check(self.values[channel]):
                await self.receive()
        return self.values[channel]


def apply(value: Any, update: list[Any]) -> Any:
    kind, path = update[0], update[1]
    if kind == 0 and not path:
        return update[2]
    target = value
    for key in path[:-1] if kind == 0 else path:
        target = target.setdefault(key, {})
    if kind == 0:
        target[path[-1]] = update[2]
    elif kind == 1:
        target.pop(update[2], None)
    return value


async def test_input_and_stream_topics_follow_live(
    server: ServerProcess,
    client: httpx.AsyncClient,
    connect_worker: WorkerFactory,
    workspace: str,
) -> None:
    worker, producer, consumer = await producer_and_consumer(client, connect_worker, workspace)
    input_id = (await submit_input(worker, consumer))[2]
    stream_id = (await call(worker, "stream_register", producer, 0, None, None))[2]["id"]
    async with connect(f"{server.ws_url}/topics", subprotocols=["v1"], proxy=None) as socket:  # type: ignore[list-item]
        topics = Topics(socket)
        assert await topics.subscribe(1, f"workspaces/{workspace}/inputs") == {}
        single = await topics.subscribe(2, ["inputs", input_id])  # array form, "/" kept
        assert single["response"] is None and single["active"] is False
        assert (await topics.subscribe(3, f"streams/{stream_id}"))["items"] == []
        await worker.request("select", [{"type": "input", "id": input_id}], consumer, None, False)
        listing = await topics.until(1, lambda v: input_id in v)
        assert listing[input_id]["title"] == "Deploy"
        await post(client, "respond_input", {"inputId": input_id, "value": True})
        await topics.until(1, lambda v: v == {})
        answered = await topics.until(2, lambda v: v["response"] is not None)
        assert answered["response"]["value"] is True
        await worker.notify("stream_append", producer, 0, 0, raw("first"))
        await topics.until(3, lambda v: v["totalCount"] == 1)
        await worker.notify("stream_close", producer, 0, None)
        closed = await topics.until(3, lambda v: v["closure"] is not None)
        assert closed["closure"]["reason"] == "complete"
