"""Pool and launched-worker endpoints (``server-api.md`` §4.4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse, Response

from pycoflux.orchestration import commands
from pycoflux.orchestration import pools as pool_model
from pycoflux.server.api import fields
from pycoflux.server.context import ApiError, Context, Handler
from pycoflux.storage import views


def _pool_name(value: Any) -> str:
    if not pool_model.valid_name(value):
        raise fields.Invalid()
    return str(value)


def _parser(context: Context, parse: Callable[[Any, tuple[str, ...]], Any]) -> Any:
    """A field parser applying ``parse`` with the server's enabled launcher types."""
    enabled = context.server.config.launcher_types

    def check(value: Any) -> Any:
        try:
            return parse(value, enabled)
        except pool_model.InvalidPoolError:
            raise fields.Invalid() from None

    return check


def _pool_set(value: Any, enabled: tuple[str, ...]) -> dict[str, pool_model.Pool]:
    if not isinstance(value, dict):
        raise pool_model.InvalidPoolError()
    result = {}
    for name, pool in value.items():
        if not pool_model.valid_name(name) or pool is None:
            raise pool_model.InvalidPoolError()
        result[name] = pool_model.parse_pool(pool, enabled)
    return result


async def create_pool(context: Context) -> Response:
    body = fields.Fields(await context.body())
    workspace_id = body.get("workspaceId", "workspace_id", fields.string, required=True)
    name = body.get("poolName", "pool_name", _pool_name, required=True)
    pool = body.get("pool", "pool", _parser(context, pool_model.parse_pool), required=True)
    body.check()
    await context.run(
        commands.CreatePool(
            workspace_id=workspace_id, name=name, pool=pool, principal=context.access.principal
        )
    )
    return Response(status_code=204)


async def update_pool(context: Context) -> Response:
    data = await context.body()
    body = fields.Fields(data)
    workspace_id = body.get("workspaceId", "workspace_id", fields.string, required=True)
    name = body.get("poolName", "pool_name", _pool_name, required=True)
    if "pool" not in data:
        body.errors["pool"] = "required"
    patch = None
    if data.get("pool") is not None:
        patch = body.get("pool", "pool", _parser(context, pool_model.check_patch))
    body.check()
    await context.run(
        commands.UpdatePool(
            workspace_id=workspace_id, name=name, patch=patch, principal=context.access.principal
        )
    )
    return Response(status_code=204)


async def update_pools(context: Context) -> Response:
    body = fields.Fields(await context.body())
    workspace_id = body.get("workspaceId", "workspace_id", fields.string, required=True)
    pools = body.get("pools", "pools", _parser(context, _pool_set), required=True)
    body.check()
    expected = context.request.headers.get("if-match")
    await context.run(
        commands.ReplacePools(
            workspace_id=workspace_id,
            pools=pools,
            expected=expected.strip().strip('"') if expected else None,
            principal=context.access.principal,
        )
    )
    return Response(status_code=204)


async def get_pools(context: Context) -> Response:
    body = fields.Fields(await context.body())
    workspace_id = body.get("workspaceId", "workspace_id", fields.string, required=True)
    body.check()
    found = await context.host.read(lambda db, _: views.pools_export(db, workspace_id))
    if found is None:
        raise ApiError(404, "not_found")
    pools, etag = found
    return JSONResponse(pools, headers={"etag": f'"{etag}"'})


def _pool_action(make: Callable[[str, str, commands.Principal], commands.Command]) -> Handler:
    async def handler(context: Context) -> Response:
        body = fields.Fields(await context.body())
        workspace_id = body.get("workspaceId", "workspace_id", fields.string, required=True)
        name = body.get("poolName", "pool_name", fields.string, required=True)
        body.check()
        await context.run(make(workspace_id, name, context.access.principal))
        return Response(status_code=204)

    return handler


def _worker_action(make: Callable[[str, str, commands.Principal], commands.Command]) -> Handler:
    async def handler(context: Context) -> Response:
        body = fields.Fields(await context.body())
        workspace_id = body.get("workspaceId", "workspace_id", fields.string, required=True)
        worker_id = body.get("workerId", "worker_id", fields.string, required=True)
        body.check()
        await context.run(make(workspace_id, worker_id, context.access.principal))
        return Response(status_code=204)

    return handler


HANDLERS: dict[str, Handler] = {
    "create_pool": create_pool,
    "update_pool": update_pool,
    "update_pools": update_pools,
    "get_pools": get_pools,
    "disable_pool": _pool_action(
        lambda w, n, p: commands.DisablePool(workspace_id=w, name=n, principal=p)
    ),
    "enable_pool": _pool_action(
        lambda w, n, p: commands.EnablePool(workspace_id=w, name=n, principal=p)
    ),
    "stop_worker": _worker_action(
        lambda w, i, p: commands.StopWorker(workspace_id=w, worker_id=i, principal=p)
    ),
    "resume_worker": _worker_action(
        lambda w, i, p: commands.ResumeWorker(workspace_id=w, worker_id=i, principal=p)
    ),
}
