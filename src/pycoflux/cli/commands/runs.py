"""``coflux runs inspect|result|rerun|cancel`` (cli.md §4.5)."""

from __future__ import annotations

import json
from typing import Any

import click

from pycoflux import errors
from pycoflux.cli import blobstore, grammar, output, progress, values
from pycoflux.cli.client import prefixed
from pycoflux.cli.context import Context
from pycoflux.cli.grammar import flag


@click.group("runs", cls=grammar.Group, help="Inspect and manage runs")
def runs() -> None:
    pass


def get_run(obj: Context, run_id: str) -> tuple[str, Any]:
    """Resolve the workspace and fetch the run topic (``failed to get run: ...``)."""
    workspace_id = obj.client.resolve_workspace(obj.require_workspace())
    with prefixed("failed to get run"):
        return workspace_id, obj.client.topic(f"workspaces/{workspace_id}/runs/{run_id}")


def select_execution(run: Any, target: str) -> dict[str, Any]:
    """``run``, ``run:step`` or ``run:step:attempt`` -> the execution (cli.md §4.5.2)."""
    run_id, _, rest = target.partition(":")
    step_part, _, attempt = rest.partition(":")
    steps = run.get("steps") if isinstance(run, dict) else None
    steps = steps if isinstance(steps, dict) else {}
    if not step_part:
        root = progress.root_step(run)
        latest = progress.latest_execution(root[1]) if root else None
        if latest is None:
            raise errors.ClientError(f"no execution found for run {run_id}")
        return latest[1]
    step = next(
        (
            s
            for s in steps.values()
            if isinstance(s, dict) and str(s.get("stepNumber")) == step_part
        ),
        None,
    )
    if step is None:
        raise errors.ClientError(f"step {step_part} not found in run {run_id}")
    if attempt:
        execution = (step.get("executions") or {}).get(attempt)
        if not isinstance(execution, dict):
            raise errors.ClientError(
                f"execution attempt {attempt} not found for step {step_part} in run {run_id}"
            )
        return execution
    latest = progress.latest_execution(step)
    if latest is None:
        raise errors.ClientError(f"no execution found for step {step_part} in run {run_id}")
    return latest[1]


def result_text(obj: Context, result: dict[str, Any]) -> list[str]:
    kind = result.get("type")
    if kind == "value":
        value = result.get("value") or {}
        if value.get("type") == "blob":
            try:
                data = json.loads(blobstore.fetch(obj, str(value.get("key"))))
            except (errors.CofluxError, ValueError, OSError):
                return [f"<blob ({values.human_size(value.get('size') or 0)})>"]
            return [values.format_data(data, value.get("references") or [])]
        return [values.format_value(value)]
    if kind == "error":
        return values.format_error(result.get("error"))
    if kind == "cancelled":
        return ["Cancelled"]
    if kind == "abandoned":
        return ["Abandoned"]
    return [str(kind)]


@runs.command(
    "inspect",
    cls=grammar.Command,
    arg_rule=grammar.exact(1),
    help="Show a run (waits for it to finish unless --no-wait)",
)
@click.argument("run_id")
@flag("--no-wait", kind="bool", help="Print the current state and return")
@click.pass_obj
def inspect(obj: Context, run_id: str, no_wait: bool) -> output.Rendered:
    workspace_id, run = get_run(obj, run_id)
    if no_wait:
        return output.Json(run)
    return progress.wait(
        obj.client,
        workspace_id,
        run_id,
        json_output=obj.json_output,
        tty=output.stdout_is_tty(),
        announce=None,
    )


@runs.command(
    "result",
    cls=grammar.Command,
    arg_rule=grammar.exact(1),
    help="Show the result of a run, step (run:step) or attempt (run:step:attempt)",
)
@click.argument("target")
@click.pass_obj
def result(obj: Context, target: str) -> output.Rendered:
    _, run = get_run(obj, target.partition(":")[0])
    execution = select_execution(run, target)
    found = execution.get("result")
    if not isinstance(found, dict):
        raise errors.ClientError("no result yet")
    if obj.json_output:
        return output.Json(found)
    return output.Text(result_text(obj, found))


@runs.command(
    "rerun",
    cls=grammar.Command,
    arg_rule=grammar.exact(1),
    help="Re-run a step (<run-id>:<step-number>)",
)
@click.argument("step_id")
@flag("--no-wait", kind="bool", help="Return once the step is re-submitted")
@flag("--catalog", hidden=True, help="Catalog version to run against (post-0.12)")
@click.pass_obj
def rerun(obj: Context, step_id: str, no_wait: bool, catalog: str | None) -> output.Rendered:
    if ":" not in step_id:
        raise errors.ConfigError(
            f"invalid step ID format: expected 'run-id:step-number', got '{step_id}'"
        )
    workspace_id = obj.client.resolve_workspace(obj.require_workspace())
    body: dict[str, Any] = {"workspaceId": workspace_id, "stepId": step_id}
    if catalog:
        body["catalog"] = catalog
    with prefixed("failed to rerun step"):
        response = obj.client.call("rerun_step", body)
    execution_id, attempt = response.get("executionId"), response.get("attempt")
    if no_wait:
        if obj.json_output:
            return output.Json({"executionId": execution_id, "attempt": attempt}, sort_keys=False)
        return output.Text.of(f"Step re-run (execution: {execution_id}, attempt: {attempt}).")
    return progress.wait(
        obj.client,
        workspace_id,
        step_id.partition(":")[0],
        json_output=obj.json_output,
        tty=output.stdout_is_tty(),
        announce=f"{execution_id}:{attempt}",
    )


@runs.command("cancel", cls=grammar.Command, arg_rule=grammar.exact(1), help="Cancel an execution")
@click.argument("execution_id")
@click.pass_obj
def cancel(obj: Context, execution_id: str) -> output.Rendered:
    workspace_id = obj.client.resolve_workspace(obj.require_workspace())
    with prefixed("failed to cancel execution"):
        obj.client.call(
            "cancel_execution", {"workspaceId": workspace_id, "executionId": execution_id}
        )
    if obj.json_output:
        return output.Json({"cancelled": True})
    return output.Text.of("Execution cancelled.")


def register(root: click.Group) -> None:
    root.add_command(runs)
