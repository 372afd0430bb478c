"""Input endpoints: read, respond to and dismiss the human inputs runs ask for (§4.7)."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from pycoflux.orchestration import commands
from pycoflux.server.api import fields
from pycoflux.server.context import ApiError, Context, Handler
from pycoflux.storage import views


async def get_input(context: Context) -> Response:
    body = fields.Fields(await context.body())
    input_id = body.get("inputId", "input_id", fields.string, required=True)
    body.check()
    found = await context.host.read(lambda db, _: views.input_view(db, input_id))
    if found is None:
        raise ApiError(404, "not_found")
    found.pop("active", None)
    return JSONResponse(found)


async def respond_input(context: Context) -> Response:
    body = fields.Fields(await context.body())
    input_id = body.get("inputId", "input_id", fields.string, required=True)
    body.check()
    result = await context.run(
        commands.RespondInput(
            input_id=input_id,
            value=body.body.get("value"),
            principal=context.access.principal,
        )
    )
    return JSONResponse(result)


async def dismiss_input(context: Context) -> Response:
    body = fields.Fields(await context.body())
    input_id = body.get("inputId", "input_id", fields.string, required=True)
    body.check()
    result = await context.run(
        commands.DismissInput(input_id=input_id, principal=context.access.principal)
    )
    return JSONResponse(result)


HANDLERS: dict[str, Handler] = {
    "get_input": get_input,
    "respond_input": respond_input,
    "dismiss_input": dismiss_input,
}
