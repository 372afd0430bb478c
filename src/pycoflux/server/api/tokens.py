"""Service-token and management endpoints: create_token, revoke_token, rotate_epoch."""

from __future__ import annotations

import time
from typing import Any

from starlette.responses import JSONResponse, Response

from pycoflux.server import auth, tokens
from pycoflux.server.api import fields
from pycoflux.server.context import ApiError, Context, Handler
from pycoflux.storage import admin

TOKENS_TOPIC = frozenset({("tokens",)})
BROADER = "Cannot create token with broader access than your own"
NO_SECRET = "Service tokens require COFLUX_SECRET to be configured"


def _name(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 200:
        raise fields.Invalid()
    return value


def _patterns(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > 100:
        raise fields.Invalid()
    if not all(isinstance(p, str) and auth.valid_pattern(p) for p in value):
        raise fields.Invalid()
    return tuple(value)


async def create_token(context: Context) -> Response:
    secret = context.server.config.secret
    if not secret:
        raise ApiError(501, "not_configured", {"message": NO_SECRET})
    body = fields.Fields(await context.body())
    name = body.get("name", "name", _name)
    requested = body.get("workspaces", "workspaces", _patterns)
    body.check()
    access = context.access
    if requested is not None and not all(auth.covers(access.workspaces, p) for p in requested):
        raise ApiError(403, "forbidden", {"message": BROADER})
    if requested is None:
        requested = None if access.full else access.workspaces
    project_id = context.host.project_id
    new = tokens.generate(secret, project_id)
    workspaces: tuple[str, ...] | None = requested

    def store(store: admin.AdminStore) -> admin.Token:
        length = tokens.EXTERNAL_ID_LENGTH
        external_id = tokens.external_id(length)
        while store.token(external_id) is not None:
            length += 1  # ids grow on collision (server-api.md §0.2)
            external_id = tokens.external_id(length)
        return store.create_token(
            external_id=external_id,
            token_hash=new.token_hash,
            name=name,
            workspaces=workspaces,
            created_by=access.principal_id,
            now=int(time.time()),
        )

    token = await context.host.write_admin(store)
    context.host.publish(TOKENS_TOPIC)
    return JSONResponse({"token": new.token, "tokenId": token.id, "externalId": token.external_id})


async def revoke_token(context: Context) -> Response:
    body = fields.Fields(await context.body())
    external_id = body.get("externalId", "external_id", fields.string, required=True)
    body.check()
    store = context.host.admin
    token = store.token(external_id)
    if token is None:
        raise ApiError(404, "not_found")
    access = context.access
    # A principal-less caller (session, super via full access aside) never owns a token.
    if not access.full and (access.principal_id is None or access.principal_id != token.created_by):
        raise ApiError(403, "forbidden")
    now = int(time.time())
    await context.host.write_admin(lambda s: s.revoke(external_id, now))
    context.host.publish(TOKENS_TOPIC)
    return Response(status_code=204)


async def rotate_epoch(context: Context) -> Response:
    """Super token only: archive the project's orchestration database as an epoch now."""
    if context.access.kind != "super":
        raise ApiError(403, "forbidden")
    await context.host.rotate_epoch()
    return Response(status_code=204)


HANDLERS: dict[str, Handler] = {
    "create_token": create_token,
    "revoke_token": revoke_token,
    "rotate_epoch": rotate_epoch,
}
