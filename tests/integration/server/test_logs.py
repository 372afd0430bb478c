"""Logs and metrics over HTTP (``server-api.md`` §6-7, checklist 62-64, 69-71)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration


def run_id() -> str:
    return "R" + uuid.uuid4().hex[:8]


def message(run: str, timestamp: int, **extra: Any) -> dict[str, Any]:
    return {
        "runId": run,
        "executionId": f"{run}:1:1",
        "workspaceId": "Wabc",
        "timestamp": timestamp,
        "level": 2,
        "template": "Loaded {count} rows",
        "values": {"count": {"type": "raw", "data": 3, "references": []}},
        **extra,
    }


async def test_posted_logs_are_returned_in_timestamp_order(client: httpx.AsyncClient) -> None:
    run = run_id()
    blob_value = {"type": "blob", "key": "a" * 64, "size": 10, "references": []}
    messages = [
        message(run, 2000, template=None, values={}),
        message(run, 1000, values={"v": blob_value}),
        message(run, 3000, executionId=f"{run}:2:1", level=5),
    ]
    post = await client.post("/logs", json={"messages": messages})
    assert post.status_code == 200
    assert post.json() == {"ok": True}
    # No waiting: the store is flushed before any query.
    got = await client.get("/logs", params={"run": run})
    assert got.status_code == 200
    body = got.json()
    assert [entry["timestamp"] for entry in body["logs"]] == [1000, 2000, 3000]
    assert body["logs"][0] == {
        "executionId": f"{run}:1:1",
        "workspaceId": "Wabc",
        "timestamp": 1000,
        "level": 2,
        "template": "Loaded {count} rows",
        "values": {"v": blob_value},
    }
    assert body["logs"][1]["template"] is None
    assert isinstance(body["cursor"], str)
    only = await client.get("/logs", params={"run": run, "execution": f"{run}:2:1"})
    assert [entry["level"] for entry in only.json()["logs"]] == [5]
    after = await client.get("/logs", params={"run": run, "after": body["cursor"]})
    assert after.json() == {"logs": [], "cursor": None}


async def test_logs_of_another_run_are_not_returned(client: httpx.AsyncClient) -> None:
    run = run_id()
    await client.post("/logs", json={"messages": [message(run, 1)]})
    other = await client.get("/logs", params={"run": run_id()})
    assert other.json() == {"logs": [], "cursor": None}


@pytest.mark.parametrize(
    ("body", "details"),
    [
        ({}, {"field": "messages", "reason": "required"}),
        ({"messages": {}}, {"field": "messages", "reason": "must be an array"}),
        ({"messages": "x"}, {"field": "messages", "reason": "must be an array"}),
        (
            {"messages": [{"runId": "R1", "values": {"x": {"type": "other"}}}]},
            {"field": "values", "reason": "invalid structure"},
        ),
        (
            {"messages": [{"runId": "R1", "values": {"x": {"type": "blob", "key": "k"}}}]},
            {"field": "values", "reason": "invalid structure"},
        ),
        (
            {"messages": [{"runId": "R1", "values": []}]},
            {"field": "values", "reason": "invalid structure"},
        ),
    ],
)
async def test_malformed_log_posts_are_rejected(
    client: httpx.AsyncClient, body: dict[str, Any], details: dict[str, str]
) -> None:
    response = await client.post("/logs", json=body)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "details": details}


async def test_a_bad_message_rejects_the_whole_batch(client: httpx.AsyncClient) -> None:
    run = run_id()
    bad = message(run, 2, values={"x": {"type": "nonsense"}})
    response = await client.post("/logs", json={"messages": [message(run, 1), bad]})
    assert response.status_code == 400
    got = await client.get("/logs", params={"run": run})
    assert got.json()["logs"] == []


async def test_log_post_that_is_not_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/logs", content=b"{nope")
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_json"}


async def test_log_query_requires_a_run(client: httpx.AsyncClient) -> None:
    response = await client.get("/logs")
    assert response.status_code == 400
    assert response.json() == {"error": "run_required"}


@pytest.mark.parametrize("path", ["/logs", "/metrics"])
@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_other_methods_are_not_allowed(
    client: httpx.AsyncClient, path: str, method: str
) -> None:
    response = await client.request(method, path)
    assert response.status_code == 405
    assert response.json() == {"error": "method_not_allowed"}


def metric(run: str, key: str, value: Any, at: Any) -> dict[str, Any]:
    return {
        "runId": run,
        "executionId": f"{run}:1:1",
        "workspaceId": "Wabc",
        "key": key,
        "value": value,
        "at": at,
    }


async def test_metrics_are_returned_ordered_by_at_and_filtered_by_keys(
    client: httpx.AsyncClient,
) -> None:
    run = run_id()
    entries = [
        metric(run, "loss", 0.5, 2.0),
        metric(run, "loss", 0.9, 1),
        metric(run, "acc", 7, 1.5),
    ]
    post = await client.post("/metrics", json={"entries": entries})
    assert post.status_code == 200
    assert post.json() == {"ok": True}
    got = await client.get("/metrics", params={"run": run})
    assert got.status_code == 200
    assert [(m["key"], m["at"]) for m in got.json()["metrics"]] == [
        ("loss", 1),
        ("acc", 1.5),
        ("loss", 2.0),
    ]
    assert got.json()["metrics"][0] == {
        "executionId": f"{run}:1:1",
        "workspaceId": "Wabc",
        "key": "loss",
        "value": 0.9,
        "at": 1,
    }
    loss = await client.get("/metrics", params={"run": run, "keys": "loss"})
    assert [m["value"] for m in loss.json()["metrics"]] == [0.9, 0.5]
    both = await client.get("/metrics", params={"run": run, "keys": "loss,acc"})
    assert len(both.json()["metrics"]) == 3
    by_execution = await client.get("/metrics", params={"execution": f"{run}:1:1"})
    assert len(by_execution.json()["metrics"]) == 3


@pytest.mark.parametrize("value", ["1", None, True, [1], {"a": 1}])
async def test_a_metric_with_a_non_numeric_value_rejects_the_batch(
    client: httpx.AsyncClient, value: Any
) -> None:
    run = run_id()
    entries = [metric(run, "ok", 1, 1), metric(run, "bad", value, 2)]
    response = await client.post("/metrics", json={"entries": entries})
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "details": {"field": "entries", "reason": "invalid entry structure"},
    }
    got = await client.get("/metrics", params={"run": run})
    assert got.json()["metrics"] == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [({}, "required"), ({"entries": {}}, "must be an array")],
)
async def test_malformed_metric_posts_are_rejected(
    client: httpx.AsyncClient, body: dict[str, Any], reason: str
) -> None:
    response = await client.post("/metrics", json=body)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "details": {"field": "entries", "reason": reason},
    }
    not_json = await client.post("/metrics", content=b"nope")
    assert not_json.json() == {"error": "invalid_json"}


async def test_metric_query_requires_a_run_or_an_execution(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 400
    assert response.json() == {"error": "run_or_execution_required"}
    keys_only = await client.get("/metrics", params={"keys": "a"})
    assert keys_only.status_code == 400
