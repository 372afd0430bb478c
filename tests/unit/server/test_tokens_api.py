"""Service tokens over the API (auth-and-config.md §7, checklist 37-49) and session tokens."""

from __future__ import annotations

import hashlib
import re
import time

import httpx

from pycoflux.server import tokens
from tests.unit.server.conftest import SUPER, Harness, Serve

UNAUTHORIZED = {"error": "unauthorized"}
FORBIDDEN = {"error": "forbidden"}
BROADER = {
    "error": "forbidden",
    "details": {"message": "Cannot create token with broader access than your own"},
}


async def discover(h: Harness, token: str | None, project: str | None = None) -> httpx.Response:
    headers = h.bearer(token)
    if project is not None:
        headers["Host"] = f"{project}.localhost:7777"
    return await h.client.get("/api/discover", headers=headers)


async def test_without_a_secret_tokens_cannot_be_made_or_used(serve: Serve) -> None:
    async with serve(COFLUX_SECRET="<unset>") as h:
        response = await h.call("create_token", {"name": "x"})
        assert (response.status_code, response.json()) == (
            501,
            {
                "error": "not_configured",
                "details": {"message": "Service tokens require COFLUX_SECRET to be configured"},
            },
        )
        forged = "cflx_" + "0" * 40
        assert (await discover(h, forged)).status_code == 401


async def test_create_use_and_scope(serve: Serve, tmp_path: object) -> None:
    async with serve() as h:
        created = await h.ok("create_token", {"name": "CI"})
        assert re.fullmatch(r"cflx_[0-9a-f]{40}", created["token"])
        assert isinstance(created["tokenId"], int) and len(created["externalId"]) == 13
        host = await h.server.projects.get("acme")
        assert host.admin.path.exists()  # admin.sqlite after the first token
        token = created["token"]
        assert (await discover(h, token)).json()["access"] == {"workspaces": ["*"]}
        other = await discover(h, token, project="other")
        assert (other.status_code, other.json()) == (401, UNAUTHORIZED)
        tampered = token[:-1] + ("0" if token[-1] != "0" else "1")
        assert (await discover(h, tampered)).status_code == 401
        # The bare random part is looked up by its hash (upstream quirk, §5.2 step 5).
        assert (await discover(h, token[5:37])).status_code == 200
        # The super token works in every project.
        assert (await discover(h, SUPER, project="other")).status_code == 200


async def test_the_documented_test_vector_authenticates_once_stored(serve: Serve) -> None:
    async with serve(COFLUX_SECRET="test-secret") as h:
        token = "cflx_00112233445566778899aabbccddeeff0b386c7a"
        assert (await discover(h, token)).status_code == 401
        host = await h.server.projects.get("acme")
        await host.write_admin(
            lambda admin: admin.create_token(
                external_id=tokens.external_id(),
                token_hash=hashlib.sha256(b"00112233445566778899aabbccddeeff").hexdigest(),
                name=None,
                workspaces=None,
                created_by=None,
                now=int(time.time()),
            )
        )
        assert (await discover(h, token)).status_code == 200


async def test_restricted_tokens(serve: Serve) -> None:
    async with serve() as h:
        production = (await h.ok("create_workspace", {"name": "production"}))["id"]
        staging = (await h.ok("create_token", {"workspaces": ["staging"]}))["token"]
        assert (await discover(h, staging)).json()["access"] == {"workspaces": ["staging"]}
        refused = await h.call(
            "register_manifests", {"workspaceId": production, "manifests": {}}, staging
        )
        assert (refused.status_code, refused.json()) == (403, FORBIDDEN)
        session = await h.call("create_session", {"workspaceId": production}, staging)
        assert (session.status_code, session.json()) == (403, FORBIDDEN)

        dev = (await h.ok("create_token", {"workspaces": ["development/*"]}))["token"]
        for granted in (["development/*"], ["development/joe"], ["development/joe/*"]):
            assert (await h.call("create_token", {"workspaces": granted}, dev)).status_code == 200
        for broader in (["*"], ["development"], ["production"], ["development-2/*"]):
            response = await h.call("create_token", {"workspaces": broader}, dev)
            assert (response.status_code, response.json()) == (403, BROADER), broader
        for invalid in ([""], ["a//b"], "dev", [1], ["a/*/b"]):
            response = await h.call("create_token", {"workspaces": invalid}, dev)
            assert (response.status_code, response.json()) == (
                400,
                {"error": "bad_request", "details": {"workspaces": "invalid"}},
            ), invalid
        # Omitting workspaces gives the caller's own patterns, never more.
        child = await h.ok("create_token", {"name": "child"}, dev)
        assert (await discover(h, child["token"])).json()["access"] == {
            "workspaces": ["development/*"]
        }


async def test_revocation_and_the_tokens_topic(serve: Serve) -> None:
    async with serve() as h:
        parent = await h.ok("create_token", {"name": "parent", "workspaces": ["a/*"]})
        child = await h.ok(
            "create_token", {"name": "child", "workspaces": ["a/b"]}, parent["token"]
        )
        unrelated = await h.ok("create_token", {"workspaces": ["z"]})
        topic = (await h.client.get("/topics/tokens", headers=h.bearer(SUPER))).json()
        entry = topic[child["externalId"]]
        assert entry == {
            "id": child["tokenId"],
            "externalId": child["externalId"],
            "name": "child",
            "workspaces": ["a/b"],
            "createdAt": entry["createdAt"],
            "expiresAt": None,
            "createdBy": {"type": "token", "externalId": parent["externalId"]},
        }
        assert abs(entry["createdAt"] - time.time()) < 3600  # seconds, not milliseconds
        assert topic[parent["externalId"]]["createdBy"] is None

        body = {"externalId": child["externalId"]}
        denied = await h.call("revoke_token", body, unrelated["token"])
        assert (denied.status_code, denied.json()) == (403, FORBIDDEN)
        session_workspace = (await h.ok("create_workspace", {"name": "a/b"}))["id"]
        session = (await h.ok("create_session", {"workspaceId": session_workspace}))["sessionId"]
        assert (await h.call("revoke_token", body, session)).status_code == 403
        missing = await h.call("revoke_token", {"externalId": "nope"}, parent["token"])
        assert (missing.status_code, missing.json()) == (404, {"error": "not_found"})
        assert (await discover(h, child["token"])).status_code == 200
        assert (await h.call("revoke_token", body, parent["token"])).status_code == 204
        assert (await h.call("revoke_token", body, parent["token"])).status_code == 204
        assert (await discover(h, child["token"])).json() == UNAUTHORIZED
        assert (
            await h.client.get("/topics/workspaces", headers=h.bearer(child["token"]))
        ).status_code == 401
        topic = (await h.client.get("/topics/tokens", headers=h.bearer(SUPER))).json()
        assert child["externalId"] not in topic
        # The super token may revoke anything.
        assert (
            await h.call("revoke_token", {"externalId": unrelated["externalId"]})
        ).status_code == 204
        assert (await discover(h, unrelated["token"])).status_code == 401


async def test_session_tokens(serve: Serve) -> None:
    async with serve() as h:
        workspace = (await h.ok("create_workspace", {"name": "w"}))["id"]
        session = (await h.ok("create_session", {"workspaceId": workspace}))["sessionId"]
        external_id, secret = session.split(".")
        assert len(secret) == 24
        assert (await discover(h, session)).json()["access"] == {"workspaces": ["w"]}
        wrong = f"{external_id}.{'x' * 24}"
        assert (await discover(h, wrong)).json() == UNAUTHORIZED
        assert (await discover(h, f"nope.{secret}")).json() == UNAUTHORIZED
