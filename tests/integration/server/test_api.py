"""The HTTP API against a real server (``server-api.md`` §2-4, checklist 16-23, 41-48, 80)."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.integration.server.conftest import new_workspace, submit, unique_name

pytestmark = pytest.mark.integration

ALPHABET = "bcdfghjklmnpqrstvwxyzBCDFGHJKLMNPQRSTVWXYZ23456789"
WORKSPACE_ID = re.compile(rf"^W[{ALPHABET}]{{3,}}$")
RUN_ID = re.compile(rf"^R[{ALPHABET}]{{3,}}$")

POST_ENDPOINTS = [
    "create_workspace",
    "register_manifests",
    "archive_module",
    "create_session",
    "submit_workflow",
    "cancel_execution",
    "rerun_step",
]


# --- Versions and discovery (16, 18, 19) -------------------------------------------


async def test_discover_reports_versions_and_access(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/discover")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["version"].startswith("0.12")
    assert body["api_version"] == "0.12"
    assert body["access"] == {"workspaces": ["*"]}


@pytest.mark.parametrize("header", [{}, {"X-API-Version": "0.12"}])
async def test_matching_or_absent_api_version_is_accepted(
    client: httpx.AsyncClient, header: dict[str, str]
) -> None:
    response = await client.get("/api/discover", headers=header)
    assert response.status_code == 200


async def test_other_api_version_is_a_conflict(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/discover", headers={"X-API-Version": "0.11"})
    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "version_mismatch"
    discover = (await client.get("/api/discover")).json()
    assert body["details"] == {"server": discover["version"], "expected": "0.11"}


async def test_version_mismatch_is_checked_before_the_body(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/create_workspace", content=b"{nope", headers={"X-API-Version": "0.11"}
    )
    assert response.status_code == 409


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/foo"), ("GET", "/api/foo"), ("GET", "/api/create_workspace"), ("POST", "/api")],
)
async def test_unknown_api_routes_are_not_found(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, json={})
    assert response.status_code == 404
    assert response.json() == {"error": "not_found"}


# --- Bodies and workspace validation (20-23) ------------------------------------------


@pytest.mark.parametrize("endpoint", POST_ENDPOINTS)
@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"'])
async def test_body_that_is_not_a_json_object_is_rejected(
    client: httpx.AsyncClient, endpoint: str, body: bytes
) -> None:
    response = await client.post(
        f"/api/{endpoint}", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {"error": "bad_request", "details": "invalid_json"}


async def test_create_workspace_requires_a_name(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/create_workspace", json={})
    assert response.status_code == 400
    assert response.json() == {"error": "bad_request", "details": {"name": "required"}}


@pytest.mark.parametrize("name", ["a b", "a//b", "/a", "a/", "ä", ""])
async def test_create_workspace_rejects_an_invalid_name(
    client: httpx.AsyncClient, name: str
) -> None:
    response = await client.post("/api/create_workspace", json={"name": name})
    assert response.status_code == 400
    assert response.json() == {"error": "bad_request", "details": {"name": "invalid"}}


async def test_create_workspace_rejects_a_duplicate_name(client: httpx.AsyncClient) -> None:
    name = unique_name()
    first = await client.post("/api/create_workspace", json={"name": name})
    assert first.status_code == 200
    again = await client.post("/api/create_workspace", json={"name": name.upper()})
    assert again.status_code == 400
    assert again.json() == {"error": "bad_request", "details": {"name": "exists"}}


async def test_create_workspace_rejects_an_unknown_base(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/create_workspace", json={"name": unique_name(), "baseId": "Wzzzz"}
    )
    assert response.status_code == 400
    assert response.json() == {"error": "bad_request", "details": {"baseId": "invalid"}}


async def test_created_workspace_appears_in_the_workspaces_topic(
    client: httpx.AsyncClient,
) -> None:
    name = unique_name()
    response = await client.post("/api/create_workspace", json={"name": name})
    assert response.status_code == 200
    workspace_id = response.json()["id"]
    assert response.json() == {"id": workspace_id}
    assert WORKSPACE_ID.match(workspace_id)
    child_name = f"{name}/child"
    child = await client.post(
        "/api/create_workspace", json={"name": child_name, "baseId": workspace_id}
    )
    assert child.status_code == 200, child.text

    topic = await client.get("/topics/workspaces")
    assert topic.status_code == 200
    assert topic.json()[workspace_id] == {"name": name, "baseId": None, "state": "active"}
    assert topic.json()[child.json()["id"]] == {
        "name": child_name,
        "baseId": workspace_id,
        "state": "active",
    }


# --- Runs (41-44, 47, 48) ----------------------------------------------------------------


async def test_submit_returns_run_step_and_execution_ids(
    client: httpx.AsyncClient, workspace: str
) -> None:
    result = await submit(client, workspace)
    run_id = result["runId"]
    assert RUN_ID.match(run_id)
    assert result == {"runId": run_id, "stepId": f"{run_id}:1", "executionId": f"{run_id}:1:1"}


async def test_submit_stores_json_objects_in_dict_form(
    client: httpx.AsyncClient, workspace: str
) -> None:
    result = await submit(
        client,
        workspace,
        arguments=[["json", '{"a": 1}'], ["json", '[{"b": {"c": null}}, 2, "x"]']],
    )
    run = await client.get(f"/topics/workspaces/{workspace}/runs/{result['runId']}")
    assert run.status_code == 200
    arguments = run.json()["steps"][result["stepId"]]["arguments"]
    assert arguments == [
        {"type": "raw", "data": {"type": "dict", "items": ["a", 1]}, "references": []},
        {
            "type": "raw",
            "data": [
                {"type": "dict", "items": ["b", {"type": "dict", "items": ["c", None]}]},
                2,
                "x",
            ],
            "references": [],
        },
    ]


async def test_submit_rejects_an_argument_that_is_not_json(
    client: httpx.AsyncClient, workspace: str
) -> None:
    response = await client.post(
        "/api/submit_workflow",
        json={
            "workspaceId": workspace,
            "module": "app.flows",
            "target": "main",
            "arguments": [["json", "1"], ["json", "{bad"]],
        },
    )
    assert response.status_code == 400
    assert response.json() == {"error": "bad_request", "details": {"arguments.1": "not_json"}}


@pytest.mark.parametrize("argument", [["nonsense", "x"], "1", ["json"], ["json", 1]])
async def test_submit_rejects_an_argument_of_another_shape(
    client: httpx.AsyncClient, workspace: str, argument: object
) -> None:
    response = await client.post(
        "/api/submit_workflow",
        json={
            "workspaceId": workspace,
            "module": "app.flows",
            "target": "main",
            "arguments": [argument],
        },
    )
    assert response.status_code == 400
    assert response.json() == {"error": "bad_request", "details": {"arguments": "invalid"}}


async def test_submit_to_an_unknown_workspace_is_not_found(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/submit_workflow",
        json={"workspaceId": "Wzzzz", "module": "m", "target": "t", "arguments": []},
    )
    assert response.status_code == 404
    assert response.json() == {"error": "not_found"}


async def test_idempotency_key_returns_the_same_run_within_a_workspace(
    client: httpx.AsyncClient, workspace: str
) -> None:
    other = await new_workspace(client)
    first = await submit(client, workspace, idempotencyKey="nightly-1")
    again = await submit(client, workspace, idempotencyKey="nightly-1")
    elsewhere = await submit(client, other, idempotencyKey="nightly-1")
    different_key = await submit(client, workspace, idempotencyKey="nightly-2")
    assert again == first
    assert elsewhere["runId"] != first["runId"]
    assert different_key["runId"] != first["runId"]
    topic = (await client.get(f"/topics/workspaces/{workspace}/workflows/app.flows/main")).json()
    assert first["runId"] in topic["runs"]
    assert elsewhere["runId"] not in topic["runs"]


@pytest.mark.parametrize("execution_id", ["nonsense", "R:1", "Rxxx:1:x", "Rzzzz:1:1"])
async def test_cancel_execution_with_a_malformed_or_unknown_id_is_not_found(
    client: httpx.AsyncClient, workspace: str, execution_id: str
) -> None:
    response = await client.post(
        "/api/cancel_execution", json={"workspaceId": workspace, "executionId": execution_id}
    )
    assert response.status_code == 404
    assert response.json() == {"error": "not_found"}


async def test_cancel_execution_of_a_queued_run_records_cancelled(
    client: httpx.AsyncClient, workspace: str
) -> None:
    result = await submit(client, workspace)
    response = await client.post(
        "/api/cancel_execution",
        json={"workspaceId": workspace, "executionId": result["executionId"]},
    )
    assert response.status_code == 200
    assert response.json() == {}
    run = (await client.get(f"/topics/workspaces/{workspace}/runs/{result['runId']}")).json()
    execution = run["steps"][result["stepId"]]["executions"]["1"]
    assert execution["result"]["type"] == "cancelled"
    queue = (await client.get(f"/topics/workspaces/{workspace}/queue")).json()
    assert result["executionId"] not in queue


async def test_rerun_step_creates_the_next_attempt(
    client: httpx.AsyncClient, workspace: str
) -> None:
    result = await submit(client, workspace)
    response = await client.post(
        "/api/rerun_step", json={"workspaceId": workspace, "stepId": result["stepId"]}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"executionId": f"{result['stepId']}:2", "attempt": 2}
    run = (await client.get(f"/topics/workspaces/{workspace}/runs/{result['runId']}")).json()
    executions = run["steps"][result["stepId"]]["executions"]
    assert executions["1"]["result"]["type"] == "cancelled"
    assert executions["2"]["result"] is None


@pytest.mark.parametrize("step_id", ["nonsense", "R1", ":1", "Rabc:", "Rabc:x", "Rabc:1:1"])
async def test_rerun_step_with_a_malformed_step_id_is_a_bad_request(
    client: httpx.AsyncClient, workspace: str, step_id: str
) -> None:
    response = await client.post(
        "/api/rerun_step", json={"workspaceId": workspace, "stepId": step_id}
    )
    assert response.status_code == 400
    assert response.json() == {"error": "bad_request", "details": {"stepId": "invalid"}}


async def test_rerun_step_from_an_unrelated_workspace_is_not_found(
    client: httpx.AsyncClient, workspace: str
) -> None:
    result = await submit(client, workspace)
    unrelated = await new_workspace(client)
    response = await client.post(
        "/api/rerun_step", json={"workspaceId": unrelated, "stepId": result["stepId"]}
    )
    assert response.status_code == 404
    assert response.json() == {"error": "not_found"}
    unknown = await client.post(
        "/api/rerun_step", json={"workspaceId": workspace, "stepId": f"{result['runId']}:9"}
    )
    assert unknown.status_code == 404


async def test_rerun_step_from_a_child_workspace_is_allowed(
    client: httpx.AsyncClient, workspace: str
) -> None:
    result = await submit(client, workspace)
    child = await new_workspace(client, base_id=workspace)
    response = await client.post(
        "/api/rerun_step", json={"workspaceId": child, "stepId": result["stepId"]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["attempt"] == 2


# --- REST topics (80) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/topics/nonsense",
        "/topics/workspaces/Wzzzz/runs/Rzzzz",
        "/topics/workspaces/Wzzzz/queue",
        "/topics/workspaces/Wzzzz/sessions",
        "/topics/workspaces/Wzzzz/manifests",
        "/topics/workspaces/Wzzzz/workflows/m/t",
    ],
)
async def test_unknown_topic_is_not_found(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.json() == {"error": "not_found"}


async def test_unknown_run_in_a_known_workspace_is_not_found(
    client: httpx.AsyncClient, workspace: str
) -> None:
    response = await client.get(f"/topics/workspaces/{workspace}/runs/Rzzzz")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found"}


async def test_topics_only_answer_get(client: httpx.AsyncClient) -> None:
    response = await client.post("/topics/workspaces", json={})
    assert response.status_code == 405
    options = await client.options("/topics/workspaces")
    assert options.status_code == 204
