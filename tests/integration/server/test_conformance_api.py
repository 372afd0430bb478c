"""server-api.md checklist items against the real server that no other test checked:
manifests, live topics over ``/topics``, topic contents, ``cancel`` and pings."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.integration.server.conftest import (
    WorkerFactory,
    new_workspace,
    run_topic,
    submit,
)
from tests.support.eventually import eventually_async
from tests.support.frames import raw, submit_params
from tests.support.server import ServerProcess
from tests.support.worker_socket import WorkerSocket

pytestmark = pytest.mark.integration

MODULE = "app.flows"
DEFINITION = {"parameters": [{"name": "x"}], "waitFor": [], "delay": 0}
INVALID = {"error": "bad_request", "details": {"manifests": "invalid"}}


async def register(
    client: httpx.AsyncClient, workspace: str, manifests: dict[str, Any]
) -> httpx.Response:
    return await client.post(
        "/api/register_manifests", json={"workspaceId": workspace, "manifests": manifests}
    )


async def topic(client: httpx.AsyncClient, path: str) -> Any:
    response = await client.get(f"/topics/{path}")
    assert response.status_code == 200, (path, response.text)
    return response.json()


# --- Manifests (38-40) -------------------------------------------------------------------


async def test_item_38_register_manifests_validates_and_updates_the_topics(
    client: httpx.AsyncClient, workspace: str
) -> None:
    for missing in ("delay", "waitFor"):
        definition = {k: v for k, v in DEFINITION.items() if k != missing}
        response = await register(client, workspace, {MODULE: {"main": definition}})
        assert (response.status_code, response.json()) == (400, INVALID), missing
    assert await topic(client, f"workspaces/{workspace}/manifests") == {}

    response = await register(client, workspace, {MODULE: {"main": DEFINITION}})
    assert response.status_code == 204, response.text
    manifests = await topic(client, f"workspaces/{workspace}/manifests")
    assert manifests[MODULE]["main"]["parameters"] == [
        {"name": "x", "default": None, "annotation": None}
    ]
    modules = await topic(client, f"workspaces/{workspace}/modules")
    assert modules == {MODULE: {"workflows": {"main": {"activeRuns": []}}}}
    workflow = await topic(client, f"workspaces/{workspace}/workflows/{MODULE}/main")
    assert workflow["parameters"] == manifests[MODULE]["main"]["parameters"]
    assert workflow["configuration"]["delay"] == 0


async def test_item_39_snake_case_aliases_in_cache_and_retries(
    client: httpx.AsyncClient, workspace: str
) -> None:
    definition = {
        **DEFINITION,
        "cache": {"params": True, "max_age": 60000, "namespace": None, "version": None},
        "retries": {"limit": 2, "backoff_min": 100, "backoff_max": 900},
    }
    response = await register(client, workspace, {MODULE: {"main": definition}})
    assert response.status_code == 204, response.text
    shown = (await topic(client, f"workspaces/{workspace}/manifests"))[MODULE]["main"]
    assert shown["cache"]["maxAge"] == 60000
    assert shown["retries"] == {"limit": 2, "backoffMin": 100, "backoffMax": 900}


async def test_item_40_archive_module_removes_it_from_the_topics(
    client: httpx.AsyncClient, workspace: str
) -> None:
    both = {MODULE: {"main": DEFINITION}, "app.other": {"side": DEFINITION}}
    assert (await register(client, workspace, both)).status_code == 204
    archived = await client.post(
        "/api/archive_module", json={"workspaceId": workspace, "moduleName": MODULE}
    )
    assert archived.status_code == 204, archived.text
    assert set(await topic(client, f"workspaces/{workspace}/modules")) == {"app.other"}
    assert set(await topic(client, f"workspaces/{workspace}/manifests")) == {"app.other"}


async def test_item_53_create_session_in_an_unknown_workspace_is_not_found(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/api/create_session", json={"workspaceId": "Wnope"})
    assert (response.status_code, response.json()) == (404, {"error": "not_found"})


# --- Live topics (17, 74-78, 116) -------------------------------------------------------


@pytest.fixture
async def topics_socket(server: ServerProcess) -> AsyncIterator[ClientConnection]:
    async with connect(
        f"{server.ws_url}/topics",
        subprotocols=["v1"],  # type: ignore[list-item]
        proxy=None,
    ) as socket:
        yield socket


async def frame(socket: ClientConnection) -> Any:
    async with asyncio.timeout(10):
        return json.loads(await socket.recv())


async def test_item_17_topics_version_mismatch_before_upgrade(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
        response = await http.get(
            "/topics",
            params={"version": "0.11"},
            headers={
                "connection": "upgrade",
                "upgrade": "websocket",
                "sec-websocket-version": "13",
                "sec-websocket-key": base64.b64encode(b"0123456789abcdef").decode(),
                "sec-websocket-protocol": "v1",
            },
        )
    assert response.status_code == 409
    assert response.json()["error"] == "version_mismatch"
    assert response.json()["details"]["expected"] == "0.11"


async def test_item_74_item_75_subscribe_then_follow_updates(
    client: httpx.AsyncClient, topics_socket: ClientConnection
) -> None:
    await topics_socket.send(json.dumps([2, 1, "workspaces"]))
    reset = await frame(topics_socket)
    assert reset[:2] == [2, 1] and isinstance(reset[2], dict)
    workspace = await new_workspace(client)
    update = await frame(topics_socket)
    assert update[:2] == [3, 1]
    sets = [op for op in update[2] if op[0] == 0 and op[1] == [workspace]]
    assert len(sets) == 1 and sets[0][2]["state"] == "active", update

    # The array form names the same topic.
    await topics_socket.send(json.dumps([2, 2, ["workspaces", workspace, "queue"]]))
    assert await frame(topics_socket) == [2, 2, {}]
    run = await submit(client, workspace)
    update = await frame(topics_socket)
    assert update[:2] == [3, 2]
    assert any(op[0] == 0 and op[1] == [run["executionId"]] for op in update[2]), update


async def test_item_76_unknown_topics_are_not_found(
    topics_socket: ClientConnection,
) -> None:
    await topics_socket.send(json.dumps([2, 1, "nonsense/route"]))
    assert await frame(topics_socket) == [0, 1, "not_found"]
    await topics_socket.send(json.dumps([2, 2, "workspaces/Wnope/queue"]))
    assert await frame(topics_socket) == [0, 2, "not_found"]


async def test_item_77_a_second_subscription_points_at_the_first(
    topics_socket: ClientConnection,
) -> None:
    await topics_socket.send(json.dumps([2, 1, "workspaces"]))
    assert (await frame(topics_socket))[:2] == [2, 1]
    await topics_socket.send(json.dumps([2, 7, ["workspaces"]]))
    assert await frame(topics_socket) == [4, 7, 1]


async def test_item_78_unsubscribing_stops_updates(
    client: httpx.AsyncClient, topics_socket: ClientConnection
) -> None:
    await topics_socket.send(json.dumps([2, 1, "workspaces"]))
    assert (await frame(topics_socket))[:2] == [2, 1]
    await topics_socket.send(json.dumps([3, 1]))
    first = await new_workspace(client)
    # Channel 1 is gone: subscribing again is a new reset (not a [4, ...] pointer) that
    # already holds the workspace, and the only update after it is channel 2's.
    await topics_socket.send(json.dumps([2, 2, "workspaces"]))
    reset = await frame(topics_socket)
    assert reset[:2] == [2, 2] and first in reset[2], reset
    second = await new_workspace(client)
    update = await frame(topics_socket)
    assert update[:2] == [3, 2] and any(op[1] == [second] for op in update[2]), update


async def test_item_116_pings_are_answered_on_both_sockets(
    server: ServerProcess,
    connect_worker: WorkerFactory,
    workspace: str,
    topics_socket: ClientConnection,
) -> None:
    pong = await topics_socket.ping(b"topics")
    async with asyncio.timeout(10):
        await pong
    worker = await connect_worker(workspace)
    await worker.session_frame()
    pong = await worker.connection.ping(b"worker")
    async with asyncio.timeout(10):
        await pong


# --- Topic contents (82, 83, 85, 86) -----------------------------------------------------


async def ready_worker(connect_worker: WorkerFactory, workspace: str) -> WorkerSocket:
    worker = await connect_worker(workspace)
    await worker.session_frame()
    await worker.declare(MODULE, workflows=("main",), tasks=("work",))
    return worker


async def finish(worker: WorkerSocket, execution_id: str, value: Any) -> None:
    await worker.notify("put_result", execution_id, raw(value))
    await worker.notify("notify_terminated", [execution_id])


async def test_item_82_modules_topic_tracks_active_runs(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    assert (await register(client, workspace, {MODULE: {"main": DEFINITION}})).status_code == 204
    worker = await ready_worker(connect_worker, workspace)
    run = await submit(client, workspace)
    modules = await topic(client, f"workspaces/{workspace}/modules")
    assert modules[MODULE]["workflows"]["main"]["activeRuns"] == [run["runId"]]
    await worker.command("execute", run["executionId"])
    await finish(worker, run["executionId"], 1)

    async def emptied() -> bool:
        modules = await topic(client, f"workspaces/{workspace}/modules")
        return modules[MODULE]["workflows"]["main"]["activeRuns"] == []

    await eventually_async(emptied)


async def test_item_83_workflow_topic_keeps_the_50_latest_runs(
    client: httpx.AsyncClient, workspace: str
) -> None:
    definition = {**DEFINITION, "instruction": "Run it."}
    assert (await register(client, workspace, {MODULE: {"main": definition}})).status_code == 204
    runs = [(await submit(client, workspace))["runId"] for _ in range(51)]
    workflow = await topic(client, f"workspaces/{workspace}/workflows/{MODULE}/main")
    assert {"parameters", "instruction", "configuration", "runs"} <= set(workflow)
    assert workflow["instruction"] == "Run it."
    assert len(workflow["runs"]) == 50
    assert runs[-1] in workflow["runs"] and set(workflow["runs"]) <= set(runs)
    entry = workflow["runs"][runs[-1]]
    assert entry["id"] == runs[-1] and "createdAt" in entry and "createdBy" in entry


async def test_item_85_run_topic_hides_executions_of_unrelated_workspaces(
    client: httpx.AsyncClient, workspace: str
) -> None:
    child = await new_workspace(client, base_id=workspace)
    sibling = await new_workspace(client, base_id=workspace)
    run = await submit(client, workspace)
    rerun = await client.post(
        "/api/rerun_step", json={"workspaceId": child, "stepId": run["stepId"]}
    )
    assert rerun.status_code == 200, rerun.text
    assert rerun.json()["attempt"] == 2

    def attempts(view: Any) -> list[str]:
        return sorted(view["steps"][run["stepId"]]["executions"])

    assert attempts(await run_topic(client, child, run["runId"])) == ["1", "2"]
    assert attempts(await run_topic(client, workspace, run["runId"])) == ["1"]
    assert attempts(await run_topic(client, sibling, run["runId"])) == ["1"]


async def test_item_86_queue_topic_lists_dependencies_and_drops_finished_work(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    run = await submit(client, workspace)
    await worker.command("execute", run["executionId"])
    first = await worker.request(
        "submit", *submit_params(MODULE, "work", run["executionId"], arguments=[raw(1)])
    )
    dependency = (await worker.reply(first))[2][0]
    # The second child waits for the first (its argument references it).
    waiting = await worker.request(
        "submit",
        *submit_params(
            MODULE,
            "work",
            run["executionId"],
            arguments=[["raw", {"type": "ref", "index": 0}, [["execution", dependency]]]],
            wait_for=[0],
        ),
    )
    reply = await worker.reply(waiting)
    assert reply[0] == 2, reply
    waiter = reply[2][0]
    queue = await topic(client, f"workspaces/{workspace}/queue")
    assert run["executionId"] in queue and dependency in queue
    assert queue[waiter]["dependencies"] == [dependency]
    await worker.command("execute", dependency)
    await finish(worker, dependency, 1)

    async def dropped() -> bool:
        queue = await topic(client, f"workspaces/{workspace}/queue")
        return dependency not in queue and queue[waiter]["dependencies"] == []

    await eventually_async(dropped)


# --- cancel (106) -------------------------------------------------------------------------


async def test_item_106_cancel_replies_null_and_cancels_the_handles(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    run = await submit(client, workspace)
    await worker.command("execute", run["executionId"])
    submitted = await worker.request(
        "submit", *submit_params(MODULE, "other", run["executionId"], arguments=[])
    )
    child = (await worker.reply(submitted))[2][0]
    request_id = await worker.request(
        "cancel", [{"type": "execution", "id": child}], run["executionId"]
    )
    assert await worker.reply(request_id) == [2, request_id, None]

    async def cancelled() -> Any:
        step = (await run_topic(client, workspace, run["runId"]))["steps"][child.rsplit(":", 1)[0]]
        result = step["executions"]["1"]["result"]
        assert result is not None and result["type"] == "cancelled", result
        return result

    await eventually_async(cancelled)
    assert child not in await topic(client, f"workspaces/{workspace}/queue")


# --- Search (52, 79) ----------------------------------------------------------------------


async def searchable(client: httpx.AsyncClient, workspace: str) -> dict[str, str]:
    manifests = {"etl.jobs": {name: DEFINITION for name in ("load", "lookup", "other")}}
    assert (await register(client, workspace, manifests)).status_code == 204
    return await submit(client, workspace, module="etl.jobs", target="load")


def expected_matches(run: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "type": "workflow",
            "module": "etl.jobs",
            "name": "load",
            "run": {
                "runId": run["runId"],
                "stepId": run["stepId"],
                "stepNumber": 1,
                "attempt": 1,
            },
            "score": 0.5,
        },
        {
            "type": "workflow",
            "module": "etl.jobs",
            "name": "lookup",
            "run": None,
            "score": pytest.approx(2 / 6),
        },
    ]


async def test_item_52_search_scores_and_sorts_the_matches(
    client: httpx.AsyncClient, workspace: str
) -> None:
    run = await searchable(client, workspace)
    found = await client.get("/api/search", params={"workspaceId": workspace, "query": "lo"})
    assert found.status_code == 200, found.text
    assert found.json()["matches"] == expected_matches(run)
    both = await client.get("/api/search", params={"workspaceId": workspace, "query": "jobs lo"})
    assert [(m["type"], m["name"]) for m in both.json()["matches"]] == [
        ("workflow", "load"),
        ("workflow", "lookup"),
    ]
    module = await client.get("/api/search", params={"workspaceId": workspace, "query": "etl"})
    assert module.json()["matches"][0] == {"type": "module", "name": "etl.jobs", "score": 1.0}
    empty = await client.get("/api/search", params={"workspaceId": workspace})
    assert (empty.status_code, empty.json()) == (200, {"matches": []})
    unknown = await client.get("/api/search", params={"workspaceId": "Wnope", "query": "lo"})
    assert (unknown.status_code, unknown.json()) == (500, {"error": "search_failed"})


async def test_item_79_search_over_the_topics_socket(
    client: httpx.AsyncClient, workspace: str, topics_socket: ClientConnection
) -> None:
    run = await searchable(client, workspace)
    await topics_socket.send(json.dumps([1, 5, f"workspaces/{workspace}/search", "query", ["lo"]]))
    assert await frame(topics_socket) == [1, 5, expected_matches(run)]
    await topics_socket.send(json.dumps([1, 6, "workspaces/Wnope/search", "query", ["lo"]]))
    assert await frame(topics_socket) == [0, 6, "not_found"]


# --- select with cancelRemaining (102) ----------------------------------------------------


async def test_item_102_select_with_cancel_remaining_cancels_the_losers(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    run = await submit(client, workspace)
    await worker.command("execute", run["executionId"])
    children = []
    for target in ("work", "other"):  # "other" is declared by no one: it stays queued
        request_id = await worker.request(
            "submit", *submit_params(MODULE, target, run["executionId"], arguments=[raw(1)])
        )
        children.append((await worker.reply(request_id))[2][0])
    winner, loser = children
    await worker.command("execute", winner)
    await finish(worker, winner, 7)
    handles = [{"type": "execution", "id": h} for h in children]
    request_id = await worker.request("select", handles, run["executionId"], None, False, True)
    assert await worker.reply(request_id) == [
        2,
        request_id,
        {"winner": 0, "status": "ok", "value": raw(7)},
    ]

    async def cancelled() -> Any:
        step = (await run_topic(client, workspace, run["runId"]))["steps"][loser.rsplit(":", 1)[0]]
        result = step["executions"]["1"]["result"]
        assert result is not None and result["type"] == "cancelled", result
        return result

    await eventually_async(cancelled)


# --- A worker-enforced timeout is retried (worker.md item 9, server side) -----------------


async def test_worker_item_9_a_timeout_is_retried_when_the_step_has_retries(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    run = await submit(client, workspace, retries={"limit": 1}, timeout=1500)
    params = await worker.command("execute", run["executionId"])
    assert params[6] == 1500
    await worker.notify("put_timeout", run["executionId"])
    await worker.notify("notify_terminated", [run["executionId"]])
    await worker.command("execute", f"{run['stepId']}:2")
    view = await run_topic(client, workspace, run["runId"])
    first = view["steps"][run["stepId"]]["executions"]["1"]
    assert first["result"]["type"] == "timeout" and first["result"]["retry"] == 2


async def test_item_52_targets_that_ran_are_found_with_their_latest_step(
    client: httpx.AsyncClient, connect_worker: WorkerFactory, workspace: str
) -> None:
    worker = await ready_worker(connect_worker, workspace)
    run = await submit(client, workspace)
    await worker.command("execute", run["executionId"])
    for _ in range(2):
        request_id = await worker.request(
            "submit", *submit_params(MODULE, "work", run["executionId"], arguments=[raw(1)])
        )
        latest = (await worker.reply(request_id))[2][0]
    found = await client.get("/api/search", params={"workspaceId": workspace, "query": "wo"})
    [match] = found.json()["matches"]
    assert match == {
        "type": "task",
        "module": MODULE,
        "name": "work",
        "run": {
            "runId": run["runId"],
            "stepId": latest.rsplit(":", 1)[0],
            "stepNumber": 3,
            "attempt": 1,
        },
        "score": 0.5,
    }
