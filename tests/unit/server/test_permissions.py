"""The permission matrix (auth-and-config.md §13) route by route, and the exact failures of §14."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pytest

from tests.unit.server.conftest import HOST, SUPER, Harness, Serve

UNAUTHORIZED = {"error": "unauthorized"}
FORBIDDEN = {"error": "forbidden"}
RESTRICTED = {"error": "bad_request", "details": {"name": "restricted"}}
BLOB = b"hello blob"
BLOB_KEY = hashlib.sha256(BLOB).hexdigest()


@dataclass
class World:
    h: Harness
    dev: str  # workspace "dev/a"
    prod: str  # workspace "prod"
    callers: dict[str, str | None]  # name -> bearer token


async def make_world(h: Harness) -> World:
    dev = (await h.ok("create_workspace", {"name": "dev/a"}))["id"]
    prod = (await h.ok("create_workspace", {"name": "prod"}))["id"]
    full = (await h.ok("create_token", {"name": "full"}))["token"]
    scoped = (await h.ok("create_token", {"name": "dev", "workspaces": ["dev/*"]}))["token"]
    session = (await h.ok("create_session", {"workspaceId": dev}))["sessionId"]
    callers: dict[str, str | None] = {
        "super": SUPER,
        "token": full,
        "dev-token": scoped,
        "jwt": h.idp.studio_token("t1", HOST, sub="alice"),
        "dev-jwt": h.idp.studio_token("t1", HOST, sub="bob", workspaces=["dev/*"]),
        "session": session,
    }
    return World(h, dev, prod, callers)


RESTRICTED_CALLERS = ("dev-token", "dev-jwt", "session")


def scoped_calls(world: World, workspace: str) -> dict[str, dict[str, Any]]:
    """Every write endpoint that is checked against the workspace it names (W(ws))."""
    return {
        "register_manifests": {"workspaceId": workspace, "manifests": {}},
        "archive_module": {"workspaceId": workspace, "moduleName": "app.flows"},
        "submit_workflow": {
            "workspaceId": workspace,
            "module": "app.flows",
            "target": "main",
            "arguments": [],
        },
        "cancel_execution": {"workspaceId": workspace, "executionId": "Rnope:1:1"},
        "rerun_step": {"workspaceId": workspace, "stepId": "Rnope:1"},
        "create_session": {"workspaceId": workspace},
        "create_pool": {"workspaceId": workspace, "poolName": "p", "pool": {}},
        "update_pool": {"workspaceId": workspace, "poolName": "p", "pool": {"modules": ["a"]}},
        "disable_pool": {"workspaceId": workspace, "poolName": "p"},
        "enable_pool": {"workspaceId": workspace, "poolName": "p"},
        "update_pools": {"workspaceId": workspace, "pools": {}},
        "stop_worker": {"workspaceId": workspace, "workerId": "nope"},
        "resume_worker": {"workspaceId": workspace, "workerId": "nope"},
    }


async def test_matrix(serve: Serve) -> None:
    async with serve() as h:
        world = await make_world(h)
        for caller, token in world.callers.items():
            discover = await h.client.get("/api/discover", headers=h.bearer(token))
            assert discover.status_code == 200, (caller, discover.text)
            expected = {
                "dev-token": ["dev/*"],
                "dev-jwt": ["dev/*"],
                "session": ["dev/a"],
            }.get(caller, ["*"])
            assert discover.json()["access"] == {"workspaces": expected}, caller

            for name, body in scoped_calls(world, world.dev).items():
                if caller == "session" and name == "create_session":
                    continue  # api/workspaces.py refuses sessions outright (see report)
                response = await h.call(name, body, token)
                assert response.status_code not in (401, 403), (caller, name, response.text)
            for name, body in scoped_calls(world, world.prod).items():
                response = await h.call(name, body, token)
                if caller in RESTRICTED_CALLERS:
                    assert (response.status_code, response.json()) == (403, FORBIDDEN), (
                        caller,
                        name,
                    )
                else:
                    assert response.status_code not in (401, 403), (caller, name, response.text)

            response = await h.call("create_workspace", {"name": f"prod-{caller}"}, token)
            if caller in RESTRICTED_CALLERS:
                assert (response.status_code, response.json()) == (400, RESTRICTED), caller
            else:
                assert response.status_code == 200, (caller, response.text)

            for name in ("rotate_epoch", "rotate_logs"):
                response = await h.call(name, {}, token)
                if caller == "super":
                    assert response.status_code == 204, (name, response.text)
                else:
                    assert (response.status_code, response.json()) == (403, FORBIDDEN), caller

            # Reads are open to every principal of the project (checklist 75).
            headers = h.bearer(token)
            for path in (
                "/topics/workspaces",
                "/topics/tokens",
                f"/topics/workspaces/{world.prod}/queue",
            ):
                response = await h.client.get(path, headers=headers)
                assert response.status_code == 200, (caller, path, response.text)
            pools = await h.call("get_pools", {"workspaceId": world.prod}, token)
            assert pools.status_code == 200, (caller, pools.text)
            put = await h.client.put(f"/blobs/{BLOB_KEY}", content=BLOB, headers=headers)
            assert put.status_code == 204, (caller, put.text)
            get = await h.client.get(f"/blobs/{BLOB_KEY}", headers=headers)
            assert (get.status_code, get.content) == (200, BLOB), caller
            for path in ("/logs?run=Rnope", "/metrics?run=Rnope"):
                response = await h.client.get(path, headers=headers)
                assert response.status_code == 200, (caller, path, response.text)
            logs = await h.client.post("/logs", json={"messages": []}, headers=headers)
            metrics = await h.client.post("/metrics", json={"entries": []}, headers=headers)
            assert (logs.status_code, metrics.status_code) == (200, 200), caller


async def test_workspace_creation_by_a_subtree_token(serve: Serve) -> None:
    async with serve() as h:
        token = (await h.ok("create_token", {"workspaces": ["dev/*"]}))["token"]
        assert (await h.call("create_workspace", {"name": "dev/x"}, token)).status_code == 200
        denied = await h.call("create_workspace", {"name": "dev"}, token)
        assert (denied.status_code, denied.json()) == (400, RESTRICTED)


async def test_existence_and_validation_come_before_permission(serve: Serve) -> None:
    async with serve() as h:
        world = await make_world(h)
        scoped = world.callers["dev-token"]
        unknown = await h.call(
            "submit_workflow", scoped_calls(world, "Wnope")["submit_workflow"], scoped
        )
        assert unknown.status_code == 404
        invalid = await h.call("submit_workflow", {"workspaceId": world.prod}, scoped)
        assert invalid.status_code == 400 and invalid.json()["error"] == "bad_request"


async def test_anonymous_callers_when_auth_is_off(serve: Serve) -> None:
    async with serve(COFLUX_REQUIRE_AUTH="false") as h:
        discover = await h.client.get("/api/discover")
        assert discover.json()["access"] == {"workspaces": ["*"]}
        workspace = (await h.ok("create_workspace", {"name": "w"}, None))["id"]
        run = await h.ok(
            "submit_workflow",
            {"workspaceId": workspace, "module": "m", "target": "t", "arguments": []},
            None,
        )
        topic = await h.client.get(f"/topics/workspaces/{workspace}/runs/{run['runId']}")
        assert topic.json()["createdBy"] is None
        for name in ("rotate_epoch", "rotate_logs"):
            refused = await h.call(name, {}, None)
            assert (refused.status_code, refused.json()) == (403, FORBIDDEN)
            assert (await h.call(name, {}, SUPER)).status_code == 204
        # A presented token is still verified: a bad one is refused, not ignored.
        bad = await h.client.get("/api/discover", headers=h.bearer("wrong"))
        assert (bad.status_code, bad.json()) == (401, UNAUTHORIZED)
        basic = await h.client.get("/api/discover", headers={"Authorization": "Basic eDp5"})
        assert basic.status_code == 200
        empty = await h.client.get("/api/discover", headers={"Authorization": "Bearer "})
        assert empty.status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/discover",
        f"/blobs/{BLOB_KEY}",
        "/logs?run=R1",
        "/metrics?run=R1",
        "/topics/workspaces",
    ],
)
async def test_no_credentials_are_refused_everywhere(serve: Serve, path: str) -> None:
    async with serve() as h:
        response = await h.client.get(path)
        assert (response.status_code, response.json()) == (401, UNAUTHORIZED)
        assert response.headers["content-type"] == "application/json"
        assert response.headers["access-control-allow-methods"]


async def test_principals_are_recorded_on_runs(serve: Serve) -> None:
    async with serve() as h:
        workspace = (await h.ok("create_workspace", {"name": "w"}))["id"]
        created = await h.ok("create_token", {"name": "ci"})
        token_principal = {"type": "token", "externalId": created["externalId"]}
        jwt = h.idp.studio_token("t1", HOST, sub="alice")
        body = {"workspaceId": workspace, "module": "m", "target": "t", "arguments": []}
        expectations = [(SUPER, None), (created["token"], token_principal)]
        expectations += [(jwt, {"type": "user", "externalId": "alice"})] * 2
        for token, principal in expectations:
            run = await h.ok("submit_workflow", body, token)
            topic = await h.client.get(
                f"/topics/workspaces/{workspace}/runs/{run['runId']}", headers=h.bearer(SUPER)
            )
            view = topic.json()
            assert view["createdBy"] == principal
            [step] = [s for s in view["steps"].values()]
            assert step["executions"]["1"]["createdBy"] == principal
        host = await h.server.projects.get("acme")
        assert host.admin.user("alice") is not None  # one principal, reused
        users = [p for p in host.admin._principals.values() if p.kind == "user"]
        assert len(users) == 1
