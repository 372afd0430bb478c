"""Run endpoints: submit a workflow, cancel an execution, re-run a step."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse, Response

from pycoflux.orchestration import commands, model
from pycoflux.server.api import fields
from pycoflux.server.context import Context, Handler


def dict_form(data: Any) -> Any:
    """JSON objects become the SDK's tagged dict form, recursively."""
    if isinstance(data, dict):
        items: list[Any] = []
        for key, value in data.items():
            items.extend([key, dict_form(value)])
        return {"type": "dict", "items": items}
    if isinstance(data, list):
        return [dict_form(item) for item in data]
    return data


class _Arguments:
    """Parses ``[["json", "<text>"], ...]``, naming the index of a bad argument."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def __call__(self, value: Any) -> list[model.Value]:
        if not isinstance(value, list):
            raise fields.Invalid()
        arguments: list[model.Value] = []
        for index, argument in enumerate(value):
            if (
                not isinstance(argument, list)
                or len(argument) != 2
                or argument[0] != "json"
                or not isinstance(argument[1], str)
            ):
                raise fields.Invalid()
            try:
                data = json.loads(argument[1])
            except ValueError:
                self.errors[f"arguments.{index}"] = "not_json"
                continue
            arguments.append(["raw", dict_form(data), []])
        return arguments


async def submit_workflow(context: Context) -> Response:
    body = fields.Fields(await context.body())
    workspace_id = body.get("workspaceId", "workspace_id", fields.string, required=True)
    module = body.get("module", "module", fields.module_name, required=True)
    target = body.get("target", "target", fields.target_name, required=True)
    parse_arguments = _Arguments()
    arguments = body.get("arguments", "arguments", parse_arguments, required=True) or []
    if "arguments" in body.body and body.body["arguments"] is None:
        body.errors.pop("arguments", None)
    body.errors.update(parse_arguments.errors)
    memo = body.get("memo", "memo", fields.memo)
    options = model.StepOptions(
        wait_for=body.get("waitFor", "wait_for", fields.index_list) or [],
        cache=body.get("cache", "cache", fields.cache),
        defer=body.get("defer", "defer", fields.defer),
        memo=memo,
        delay=body.get("delay", "delay", fields.integer) or 0,
        retries=body.get("retries", "retries", fields.retries),
        recurrent=bool(body.get("recurrent", "recurrent", fields.boolean)),
        requires=body.get("requires", "requires", fields.tag_set) or {},
        timeout=body.get("timeout", "timeout", fields.integer) or 0,
        streams=body.get("streams", "streams", fields.streams),
    )
    key = body.get("idempotencyKey", "idempotency_key", fields.string)
    body.check()
    result = await context.run(
        commands.SubmitWorkflow(
            workspace_id=workspace_id,
            module=module,
            target=target,
            arguments=arguments,
            options=options,
            idempotency_key=key,
            principal=context.access.principal,
        )
    )
    return JSONResponse(result)


async def cancel_execution(context: Context) -> Response:
    body = fields.Fields(await context.body())
    workspace_id = body.get("workspaceId", "workspace_id", fields.string, required=True)
    execution_id = body.get("executionId", "execution_id", fields.string, required=True)
    body.check()
    result = await context.run(
        commands.CancelExecution(
            workspace_id=workspace_id,
            execution_id=execution_id,
            principal=context.access.principal,
        )
    )
    return JSONResponse(result)


async def rerun_step(context: Context) -> Response:
    body = fields.Fields(await context.body())
    workspace_id = body.get("workspaceId", "workspace_id", fields.string, required=True)
    step_id = body.get("stepId", "step_id", fields.string, required=True)
    body.check()
    result = await context.run(
        commands.RerunStep(
            workspace_id=workspace_id, step_id=step_id, principal=context.access.principal
        )
    )
    return JSONResponse(result)


HANDLERS: dict[str, Handler] = {
    "submit_workflow": submit_workflow,
    "cancel_execution": cancel_execution,
    "rerun_step": rerun_step,
}
