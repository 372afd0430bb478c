"""Workspace, manifest and session endpoints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse, Response

from pycoflux.orchestration import commands
from pycoflux.server.api import fields
from pycoflux.server.context import ApiError, Context, Handler
from pycoflux.storage import views


async def create_workspace(context: Context) -> Response:
    body = fields.Fields(await context.body())
    name = body.get("name", "name", fields.string, required=True)
    base_id = body.get("baseId", "base_id", fields.string)
    body.check()
    result = await context.run(commands.CreateWorkspace(name=name, base_id=base_id))
    return JSONResponse(result)


async def update_workspace(context: Context) -> Response:
    body = fields.Fields(await context.body())
    workspace_id = body.get("workspaceId", "workspace_id", fields.string, required=True)
    name = body.get("name", "name", fields.string)
    base_id = body.get("baseId", "base_id", fields.string)
    body.check()
    # An explicit null clears the base (`workspaces update --no-base`).
    set_base = "baseId" in body.body
    await context.run(
        commands.UpdateWorkspace(
            workspace_id=workspace_id, name=name, base_id=base_id, set_base=set_base
        )
    )
    return Response(status_code=204)


def _workspace_action(
    make: Callable[[str], commands.Command],
) -> Handler:
    async def handler(context: Context) -> Response:
        body = fields.Fields(await context.body())
        workspace_id = body.get("workspaceId", "workspace_id", fields.string, required=True)
        body.check()
        await context.run(make(workspace_id))
        return Response(status_code=204)

    return handler


def _definition(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise fields.Invalid()
    parameters = value.get("parameters")
    if not isinstance(parameters, list) or len(parameters) > 20:
        raise fields.Invalid()
    cleaned = []
    for parameter in parameters:
        if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
            raise fields.Invalid()
        cleaned.append(
            {
                "name": parameter["name"],
                "default": parameter.get("default"),
                "annotation": parameter.get("annotation"),
            }
        )
    if "waitFor" not in value or "delay" not in value:
        raise fields.Invalid()
    instruction = value.get("instruction")
    if instruction is not None and (not isinstance(instruction, str) or len(instruction) > 5000):
        raise fields.Invalid()
    optional = {
        "cache": fields.cache,
        "defer": fields.defer,
        "requires": fields.tag_set,
        "streams": fields.streams,
    }
    definition: dict[str, Any] = {
        "parameters": cleaned,
        "waitFor": fields.index_list(value["waitFor"]),
        "delay": fields.integer(value["delay"]),
        "retries": fields.retries_json(
            None if value.get("retries") is None else fields.retries(value["retries"])
        ),
        "recurrent": bool(value.get("recurrent") or False),
        "timeout": fields.integer(value.get("timeout") or 0),
        "memo": None if value.get("memo") is None else fields.memo(value["memo"]),
        "instruction": instruction,
    }
    for key, parse in optional.items():
        definition[key] = None if value.get(key) is None else parse(value[key])
    return definition


def _manifests(value: Any) -> dict[str, dict[str, dict[str, Any]]]:
    if not isinstance(value, dict):
        raise fields.Invalid()
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for module, workflows in value.items():
        fields.module_name(module)
        if not isinstance(workflows, dict):
            raise fields.Invalid()
        result[module] = {fields.target_name(t): _definition(d) for t, d in workflows.items()}
    return result


async def register_manifests(context: Context) -> Response:
    body = fields.Fields(await context.body())
    workspace_id = body.get("workspaceId", "workspace_id", fields.string, required=True)
    manifests = body.get("manifests", "manifests", _manifests, required=True)
    body.check()
    await context.run(commands.RegisterManifests(workspace_id=workspace_id, manifests=manifests))
    return Response(status_code=204)


async def archive_module(context: Context) -> Response:
    body = fields.Fields(await context.body())
    workspace_id = body.get("workspaceId", "workspace_id", fields.string, required=True)
    module = body.get("moduleName", "module_name", fields.module_name, required=True)
    body.check()
    await context.run(commands.ArchiveModule(workspace_id=workspace_id, module=module))
    return Response(status_code=204)


async def create_session(context: Context) -> Response:
    body = fields.Fields(await context.body())
    workspace_id = body.get("workspaceId", "workspace_id", fields.string, required=True)
    provides = body.get("provides", "provides", fields.tag_set) or {}
    accepts = body.get("accepts", "accepts", fields.tag_set) or {}
    body.check()
    if context.access.kind == "session":
        raise ApiError(403, "forbidden")
    result = await context.run(
        commands.CreateSession(workspace_id=workspace_id, provides=provides, accepts=accepts)
    )
    return JSONResponse(result)


async def search(context: Context) -> Response:
    """``GET /api/search``: read access only; an unknown workspace cannot be searched."""
    workspace_id = context.request.query_params.get("workspaceId", "")
    query = context.request.query_params.get("query", "")
    if not query.split():
        return JSONResponse({"matches": []})
    matches = await context.host.read(lambda db, _: views.search(db, workspace_id, query))
    if matches is None:
        raise ApiError(500, "search_failed")
    return JSONResponse({"matches": matches})


HANDLERS: dict[str, Handler] = {
    "create_workspace": create_workspace,
    "update_workspace": update_workspace,
    "pause_workspace": _workspace_action(lambda w: commands.PauseWorkspace(workspace_id=w)),
    "resume_workspace": _workspace_action(lambda w: commands.ResumeWorkspace(workspace_id=w)),
    "archive_workspace": _workspace_action(lambda w: commands.ArchiveWorkspace(workspace_id=w)),
    "register_manifests": register_manifests,
    "archive_module": archive_module,
    "create_session": create_session,
}
