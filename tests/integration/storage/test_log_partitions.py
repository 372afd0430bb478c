"""Logs and metrics over HTTP across epochs, pages and event streams.

``server-api.md`` §6-7 and checklist 62-71, ``semantics.md`` §12 and checklist J.129.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.integration.storage.conftest import event_stream, new_run_id, rotate_logs
from tests.support.eventually import eventually
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

DAY_MS = 24 * 3600 * 1000


def message(run: str, timestamp: int, **extra: Any) -> dict[str, Any]:
    return {
        "runId": run,
        "executionId": f"{run}:1:1",
        "workspaceId": "W1",
        "timestamp": timestamp,
        "level": 2,
        "template": "row {n}",
        "values": {"n": {"type": "raw", "data": timestamp, "references": []}},
        **extra,
    }


async def post_logs(client: httpx.AsyncClient, *messages: dict[str, Any]) -> None:
    response = await client.post("/logs", json={"messages": list(messages)})
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True}


async def get_logs(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/logs", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def stamps(body: dict[str, Any]) -> list[int]:
    return [entry["timestamp"] for entry in body["logs"]]


async def test_logs_survive_rotation_and_cursors_name_the_epoch(
    client: httpx.AsyncClient, server: ServerProcess
) -> None:
    run = new_run_id()
    await post_logs(client, message(run, 30), message(run, 10))
    await rotate_logs(client)
    await post_logs(client, message(run, 20))
    body = await get_logs(client, run=run)
    # Partitions are read oldest first, each in timestamp order.
    assert stamps(body) == [10, 30, 20]
    assert body["cursor"].startswith(":20:")
    archive_dir = server.data_dir / "projects" / "test" / "logs"
    index = json.loads((archive_dir / "index.json").read_text())
    assert index, "the index lists the archive"
    newest = max(index)
    assert (archive_dir / f"{newest}.sqlite").is_file()
    paged = []
    after = None
    while True:
        params = {"run": run, **({"after": after} if after else {})}
        response = await client.get("/logs", params=params)
        page = response.json()
        if not page["logs"]:
            assert page["cursor"] is None
            break
        paged.append((stamps(page), page["cursor"]))
        after = page["cursor"]
    assert [entries for entries, _ in paged] == [[10, 30, 20]]
    # The filters of an archive are built after the rotation, in the background.
    eventually(lambda: json.loads((archive_dir / "index.json").read_text())[newest][0])


async def test_pages_hold_at_most_1000_entries(client: httpx.AsyncClient) -> None:
    run = new_run_id()
    await post_logs(client, *(message(run, i) for i in range(700)))
    await rotate_logs(client)
    await post_logs(client, *(message(run, 700 + i) for i in range(800)))
    first = await get_logs(client, run=run)
    assert stamps(first) == list(range(1000))
    assert first["cursor"].startswith(":999:")
    second = await get_logs(client, run=run, after=first["cursor"])
    assert stamps(second) == list(range(1000, 1500))
    last = await get_logs(client, run=run, after=second["cursor"])
    assert last == {"logs": [], "cursor": None}


async def test_from_skips_archives_rotated_before_its_day(client: httpx.AsyncClient) -> None:
    run = new_run_id()
    await post_logs(client, message(run, 1))
    await rotate_logs(client)
    await post_logs(client, message(run, 2))
    now = int(time.time() * 1000)
    assert stamps(await get_logs(client, run=run, **{"from": str(now)})) == [1, 2]
    tomorrow = str(now + DAY_MS)
    # Only whole archives are skipped; entries of the active partition are all returned.
    assert stamps(await get_logs(client, run=run, **{"from": tomorrow})) == [2]


async def test_filters_by_execution_and_workspaces(client: httpx.AsyncClient) -> None:
    run = new_run_id()
    await post_logs(
        client,
        message(run, 1),
        message(run, 2, executionId=f"{run}:2:1", workspaceId="W2"),
        message(run, 3, workspaceId="W3"),
    )
    assert stamps(await get_logs(client, run=run, execution=f"{run}:2:1")) == [2]
    assert stamps(await get_logs(client, run=run, workspaces="W1,W3")) == [1, 3]
    assert stamps(await get_logs(client, run=run, workspaces="")) == [1, 2, 3]


async def test_logs_for_unknown_runs_and_executions_are_stored(client: httpx.AsyncClient) -> None:
    # Logs are not validated against the orchestration store (server-api.md §6.1).
    run = new_run_id()
    await post_logs(client, message(run, 1, executionId="nonsense"))
    assert (await get_logs(client, run=run))["logs"][0]["executionId"] == "nonsense"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            b'{"messages": [{"runId": "R1", "values": {"x": {"type": "raw", "data": NaN}}}]}',
            "invalid_json",
        ),
        (
            b'{"messages": [{"runId": "R1", "values": {"x": {"type": "raw", "data": 1e999}}}]}',
            "invalid_request",
        ),
        (
            b'{"messages": [{"runId": "R1", "values": {"x": {"type": "raw", "references": [1]}}}]}',
            "invalid_request",
        ),
        (
            b'{"messages": [{"runId": "R1", "values": {"x": {"type": "blob", "key": "k", "size": true}}}]}',
            "invalid_request",
        ),
    ],
)
async def test_bad_log_values_are_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, body: bytes, error: str
) -> None:
    response = await client.post("/logs", content=body)
    assert response.status_code == 400
    assert response.json()["error"] == error
    if error == "invalid_request":
        assert response.json()["details"] == {"field": "values", "reason": "invalid structure"}
    assert (await get_logs(client, run="R1"))["logs"] == []


@pytest.mark.parametrize(
    ("params", "reason"),
    [({"after": "nonsense"}, "invalid cursor"), ({"from": "yesterday"}, "invalid from")],
)
async def test_bad_query_parameters_are_refused(
    client: httpx.AsyncClient, params: dict[str, str], reason: str
) -> None:
    response = await client.get("/logs", params={"run": "R1", **params})
    assert response.status_code == 400
    assert response.json()["error"] == "query_failed"
    assert response.json()["details"]["reason"].startswith(reason)


async def test_rotate_logs_needs_the_super_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/rotate_logs", json={})
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden"}


async def test_follow_sends_a_snapshot_then_new_entries_across_rotation(
    client: httpx.AsyncClient,
) -> None:
    run = new_run_id()
    await post_logs(client, message(run, 1))
    params = {"run": run, "execution": f"{run}:1:1", "after": "ignored"}
    async with event_stream(client, "/logs", params) as events:
        snapshot = await events.next()
        assert [entry["timestamp"] for entry in snapshot] == [1]
        assert snapshot[0]["template"] == "row {n}"
        # Entries of other executions or runs never reach this stream.
        await post_logs(client, message(run, 2, executionId=f"{run}:2:1"), message(new_run_id(), 3))
        await post_logs(client, message(run, 4))
        assert [entry["timestamp"] for entry in await events.next()] == [4]
        await rotate_logs(client)
        await post_logs(client, message(run, 5), message(run, 6))
        assert [entry["timestamp"] for entry in await events.next()] == [5, 6]


async def test_follow_of_a_quiet_run_starts_with_an_empty_snapshot(
    client: httpx.AsyncClient,
) -> None:
    run = new_run_id()
    async with event_stream(client, "/logs", {"run": run, "workspaces": "W2"}) as events:
        assert await events.next() == []
        await post_logs(client, message(run, 1), message(run, 2, workspaceId="W2"))
        assert [entry["timestamp"] for entry in await events.next()] == [2]


async def test_a_follow_stream_without_a_run_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/logs", headers={"accept": "text/event-stream"})
    assert response.status_code == 400
    assert response.json() == {"error": "run_required"}


async def test_accepted_logs_survive_a_crash(
    client: httpx.AsyncClient, server: ServerProcess
) -> None:
    run = new_run_id()
    await post_logs(client, *(message(run, i) for i in range(50)))
    await rotate_logs(client)
    await post_logs(client, message(run, 50))
    server.restart(kill=True)  # SIGKILL: nothing is flushed on the way down
    assert stamps(await get_logs(client, run=run)) == list(range(51))


# --- metrics ---------------------------------------------------------------------------


def point(run: str, key: str, value: Any, at: Any, **extra: Any) -> dict[str, Any]:
    return {
        "runId": run,
        "executionId": f"{run}:1:1",
        "workspaceId": "W1",
        "key": key,
        "value": value,
        "at": at,
        **extra,
    }


async def post_metrics(client: httpx.AsyncClient, *points: dict[str, Any]) -> None:
    response = await client.post("/metrics", json={"entries": list(points)})
    assert response.status_code == 200, response.text


async def test_metric_pages_and_cursors(client: httpx.AsyncClient) -> None:
    run = new_run_id()
    await post_metrics(client, *(point(run, "loss", i / 10, float(i)) for i in range(1200)))
    first = (await client.get("/metrics", params={"run": run})).json()
    assert len(first["metrics"]) == 1000
    assert first["cursor"].startswith(":999.0:")
    rest = (await client.get("/metrics", params={"run": run, "after": first["cursor"]})).json()
    assert [m["at"] for m in rest["metrics"]] == [float(i) for i in range(1000, 1200)]
    bad = await client.get("/metrics", params={"run": run, "after": "x:y"})
    assert bad.status_code == 400
    assert bad.json()["error"] == "query_failed"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"entries": [{"runId": "R1", "executionId": "R1:1:1", "workspaceId": "W", "key": "k", "value": 1e999, "at": 1}]}',
        b'{"entries": [{"runId": "R1", "executionId": "R1:1:1", "workspaceId": "W", "key": "k", "value": 1, "at": "1"}]}',
        b'{"entries": [{"runId": 1, "executionId": "R1:1:1", "workspaceId": "W", "key": "k", "value": 1, "at": 1}]}',
    ],
)
async def test_malformed_metrics_are_refused(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post("/metrics", content=raw)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "details": {"field": "entries", "reason": "invalid entry structure"},
    }
    assert (await client.get("/metrics", params={"run": "R1"})).json()["metrics"] == []


async def test_metrics_follow_with_a_key_filter(client: httpx.AsyncClient) -> None:
    run = new_run_id()
    await post_metrics(client, point(run, "loss", 1, 1), point(run, "acc", 2, 1))
    async with event_stream(client, "/metrics", {"run": run, "keys": "loss"}) as events:
        assert await events.next() == [
            {
                "executionId": f"{run}:1:1",
                "workspaceId": "W1",
                "key": "loss",
                "value": 1.0,
                "at": 1.0,
            }
        ]
        await post_metrics(client, point(run, "acc", 3, 2), point(run, "loss", 4, 2))
        assert [m["value"] for m in await events.next()] == [4.0]


async def test_metric_streams_need_a_run(client: httpx.AsyncClient) -> None:
    run = new_run_id()
    await post_metrics(client, point(run, "loss", 1, 1))
    # With only an execution the answer is the JSON page, even to an event-stream client.
    response = await client.get(
        "/metrics", params={"execution": f"{run}:1:1"}, headers={"accept": "text/event-stream"}
    )
    assert response.headers["content-type"] == "application/json"
    assert [m["key"] for m in response.json()["metrics"]] == ["loss"]
