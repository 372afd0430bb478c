"""auth-and-config.md checklist items that no other test checked: launcher types gating
pools, default origins, the data directory layout, project isolation, and the rows of the
permission matrix (§13) that ``test_permissions.py`` does not walk."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tests.unit.server.conftest import HOST, SUPER, Harness, Serve

FORBIDDEN = {"error": "forbidden"}
RESTRICTED = {"error": "bad_request", "details": {"name": "restricted"}}
POOL_INVALID = {"error": "bad_request", "details": {"pool": "invalid"}}
LAUNCHERS: dict[str, dict[str, Any]] = {
    "docker": {"type": "docker", "image": "acme/worker:1"},
    "process": {"type": "process", "directory": "/tmp"},
    "kubernetes": {"type": "kubernetes", "image": "acme/worker:1"},
}


async def create_pool(h: Harness, workspace: str, name: str, pool: dict[str, Any]) -> Any:
    body = {"workspaceId": workspace, "poolName": name, "pool": pool}
    return await h.call("create_pool", body)


async def test_item_9_launcher_types_gate_launcher_pools(serve: Serve) -> None:
    async with serve(COFLUX_LAUNCHER_TYPES="docker,process,foo") as h:
        workspace = (await h.ok("create_workspace", {"name": "w"}))["id"]
        for kind in ("docker", "process"):
            created = await create_pool(h, workspace, kind, {"launcher": LAUNCHERS[kind]})
            assert created.status_code == 204, (kind, created.text)
        refused = await create_pool(h, workspace, "k", {"launcher": LAUNCHERS["kubernetes"]})
        assert (refused.status_code, refused.json()) == (400, POOL_INVALID)
    async with serve(COFLUX_LAUNCHER_TYPES="<unset>") as h:
        workspace = (await h.ok("create_workspace", {"name": "w2"}))["id"]
        for kind, launcher in LAUNCHERS.items():
            refused = await create_pool(h, workspace, kind, {"launcher": launcher})
            assert (refused.status_code, refused.json()) == (400, POOL_INVALID), kind
        plain = await create_pool(h, workspace, "plain", {"modules": ["app"]})
        assert plain.status_code == 204, plain.text


async def test_item_10_unset_origins_allow_only_studio(serve: Serve) -> None:
    async with serve(COFLUX_ALLOW_ORIGINS="<unset>") as h:
        for origin in ("https://evil.example", "http://studio.coflux.com", "https://coflux.com"):
            response = await h.client.get("/api/discover", headers={"Origin": origin})
            assert "access-control-allow-origin" not in response.headers, origin
        studio = await h.client.get(
            "/api/discover", headers={"Origin": "https://studio.coflux.com"}
        )
        assert studio.headers["access-control-allow-origin"] == "https://studio.coflux.com"


async def test_item_3_item_13_files_appear_under_the_data_dir_on_first_use(
    serve: Serve, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    project = data / "projects" / "acme"
    async with serve() as h:
        assert (await h.client.get("/api/discover", headers=h.bearer(SUPER))).status_code == 200
        assert (project / "orchestration.sqlite").is_file()
        run = "Rfiles"
        log = {
            "runId": run,
            "executionId": f"{run}:1:1",
            "workspaceId": "W1",
            "timestamp": 1,
            "level": 2,
            "template": "hello",
            "values": {},
        }
        posted = await h.client.post("/logs", json={"messages": [log]}, headers=h.bearer(SUPER))
        assert posted.status_code == 200, posted.text
        assert (project / "logs.sqlite").is_file()
        metric = {
            "runId": run,
            "executionId": f"{run}:1:1",
            "workspaceId": "W1",
            "key": "loss",
            "value": 0.5,
            "at": 1.0,
        }
        posted = await h.client.post(
            "/metrics", json={"entries": [metric]}, headers=h.bearer(SUPER)
        )
        assert posted.status_code == 200, posted.text
        assert (project / "metrics.sqlite").is_file()
        assert not (project / "admin.sqlite").exists()
        await h.ok("create_token", {"name": "first"})
        assert (project / "admin.sqlite").is_file()
        blob = b"layout"
        key = hashlib.sha256(blob).hexdigest()
        put = await h.client.put(f"/blobs/{key}", content=blob, headers=h.bearer(SUPER))
        assert put.status_code == 204
        assert (data / "blobs" / key[:2] / key[2:4] / key[4:]).read_bytes() == blob


async def test_item_17_item_18_projects_are_isolated_but_share_blobs(serve: Serve) -> None:
    other = {"Host": "other.localhost:7777"}
    async with serve() as h:
        workspace = (await h.ok("create_workspace", {"name": "w"}))["id"]
        run = await h.ok(
            "submit_workflow",
            {"workspaceId": workspace, "module": "m", "target": "t", "arguments": []},
        )
        token = await h.ok("create_token", {"name": "acme-only"})
        log = {
            "runId": run["runId"],
            "executionId": run["executionId"],
            "workspaceId": workspace,
            "timestamp": 1,
            "level": 2,
            "template": "acme log",
            "values": {},
        }
        assert (
            await h.client.post("/logs", json={"messages": [log]}, headers=h.bearer(SUPER))
        ).status_code == 200
        blob = b"shared between projects"
        key = hashlib.sha256(blob).hexdigest()
        assert (
            await h.client.put(f"/blobs/{key}", content=blob, headers=h.bearer(SUPER))
        ).status_code == 204

        own = h.bearer(SUPER)
        seen = await h.client.get(f"/logs?run={run['runId']}", headers=own)
        assert [entry["template"] for entry in seen.json()["logs"]] == ["acme log"]
        assert token["externalId"] in (await h.client.get("/topics/tokens", headers=own)).json()

        elsewhere = {**other, **h.bearer(SUPER)}
        workspaces = await h.client.get("/topics/workspaces", headers=elsewhere)
        assert workspaces.status_code == 200 and workspace not in workspaces.json()
        run_topic = await h.client.get(
            f"/topics/workspaces/{workspace}/runs/{run['runId']}", headers=elsewhere
        )
        assert run_topic.status_code == 404
        tokens = await h.client.get("/topics/tokens", headers=elsewhere)
        assert token["externalId"] not in tokens.json()
        logs = await h.client.get(f"/logs?run={run['runId']}", headers=elsewhere)
        assert logs.json()["logs"] == []
        shared = await h.client.get(f"/blobs/{key}", headers=elsewhere)
        assert (shared.status_code, shared.content) == (200, blob)


async def test_item_74_workspace_lifecycle_rows_for_every_caller(serve: Serve) -> None:
    """§13 rows update/pause/resume/archive_workspace and get/respond/dismiss_input."""
    async with serve() as h:
        session_workspace = (await h.ok("create_workspace", {"name": "dev/a"}))["id"]
        callers: dict[str, str] = {
            "super": SUPER,
            "token": (await h.ok("create_token", {"name": "full"}))["token"],
            "dev-token": (await h.ok("create_token", {"workspaces": ["dev/*"]}))["token"],
            "jwt": h.idp.studio_token("t1", HOST, sub="alice"),
            "dev-jwt": h.idp.studio_token("t1", HOST, sub="bob", workspaces=["dev/*"]),
            "session": (await h.ok("create_session", {"workspaceId": session_workspace}))[
                "sessionId"
            ],
        }
        for caller, token in callers.items():
            restricted = caller in ("dev-token", "dev-jwt", "session")
            # A session may only act on its own workspace; the others on all of dev/*.
            mine_name = "dev/a" if caller == "session" else f"dev/{caller}"
            mine = (
                session_workspace
                if caller == "session"
                else (await h.ok("create_workspace", {"name": mine_name}))["id"]
            )
            theirs = (await h.ok("create_workspace", {"name": f"prod-{caller}"}))["id"]

            for name in ("pause_workspace", "resume_workspace"):
                allowed = await h.call(name, {"workspaceId": mine}, token)
                assert allowed.status_code == 204, (caller, name, allowed.text)
                other = await h.call(name, {"workspaceId": theirs}, token)
                if restricted:
                    assert (other.status_code, other.json()) == (403, FORBIDDEN), (caller, name)
                else:
                    assert other.status_code == 204, (caller, name, other.text)

            rename = await h.call(
                "update_workspace", {"workspaceId": theirs, "name": f"prod-{caller}-2"}, token
            )
            escape = await h.call(
                "update_workspace", {"workspaceId": mine, "name": f"prod-{caller}-3"}, token
            )
            if restricted:
                assert (rename.status_code, rename.json()) == (400, RESTRICTED), caller
                assert (escape.status_code, escape.json()) == (400, RESTRICTED), caller
            else:
                assert rename.status_code == 204, (caller, rename.text)
                assert escape.status_code == 204, (caller, escape.text)
            if caller in ("dev-token", "dev-jwt"):
                inside = await h.call(
                    "update_workspace", {"workspaceId": mine, "name": f"dev/{caller}-b"}, token
                )
                assert inside.status_code == 204, (caller, inside.text)

            # Inputs are checked against no workspace: an unknown one is 404, never 403.
            for name in ("get_input", "respond_input", "dismiss_input"):
                response = await h.call(name, {"inputId": "Rnope/i1", "value": 1}, token)
                assert response.status_code == 404, (caller, name, response.text)

            archived = await h.call("archive_workspace", {"workspaceId": theirs}, token)
            if restricted:
                assert (archived.status_code, archived.json()) == (403, FORBIDDEN), caller
            else:
                assert archived.status_code == 204, (caller, archived.text)
            if caller in ("dev-token", "dev-jwt"):
                own = await h.call("archive_workspace", {"workspaceId": mine}, token)
                assert own.status_code == 204, (caller, own.text)
