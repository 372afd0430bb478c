"""``coflux submit``: start a workflow run (cli.md §4.4)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from pycoflux import errors
from pycoflux.cli import grammar, output, progress, tagsets
from pycoflux.cli.client import ApiError, prefixed
from pycoflux.cli.context import Context
from pycoflux.cli.grammar import flag


def split_target(target: str) -> tuple[str, str]:
    module, sep, name = target.rpartition("/")
    if not sep:
        raise errors.ConfigError(f"invalid target format: expected 'module/target', got '{target}'")
    return module, name


def workflow_options(workflow: dict[str, Any]) -> dict[str, Any]:
    """The run options copied from the workflow topic (``configuration`` flattened)."""
    flat = dict(workflow)
    configuration = workflow.get("configuration")
    if isinstance(configuration, dict):
        flat.update(configuration)
    options: dict[str, Any] = {}
    for key in ("waitFor", "cache", "defer", "retries", "requires", "memo"):
        if key in flat:
            options[key] = flat[key]
    for key in ("delay", "timeout"):
        value = flat.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            options[key] = int(value)
    if flat.get("recurrent") is True:
        options["recurrent"] = True
    if isinstance(flat.get("streams"), dict):
        options["streams"] = flat["streams"]
    return options


def padded_arguments(arguments: tuple[str, ...], parameters: Any) -> list[list[str]]:
    """Encode arguments verbatim, padding missing trailing ones with registered defaults."""
    encoded = [["json", text] for text in arguments]
    if isinstance(parameters, list):
        for parameter in parameters[len(arguments) :]:
            default = parameter.get("default") if isinstance(parameter, dict) else None
            if not isinstance(default, str):
                break
            encoded.append(["json", default])
    return encoded


def check_arity(target: str, arguments: tuple[str, ...], parameters: Any) -> None:
    """Refuse a call that the workflow's registered signature cannot accept."""
    if not isinstance(parameters, list):
        return
    names = [str(p.get("name")) if isinstance(p, dict) else "?" for p in parameters]
    if len(arguments) > len(names):
        raise errors.ClientError(
            f"{target} takes {len(names)} argument(s) ({', '.join(names) or 'none'}), "
            f"{len(arguments)} given"
        )
    missing = [
        name
        for name, parameter in zip(
            names[len(arguments) :], parameters[len(arguments) :], strict=True
        )
        if not (isinstance(parameter, dict) and isinstance(parameter.get("default"), str))
    ]
    if missing:
        raise errors.ClientError(
            f"{target} is missing argument(s) without a default: {', '.join(missing)}"
        )


@click.command(
    "submit",
    cls=grammar.Command,
    arg_rule=grammar.Args(1),
    exclusive=[("requires", "no-requires"), ("memo", "no-memo")],
    help="Submit a workflow run: coflux submit <module/target> [arguments...] "
    "(each argument is JSON text).",
)
@click.argument("target")
@click.argument("arguments", nargs=-1)
@flag("--no-wait", kind="bool", help="Submit and return immediately")
@flag("--idempotency-key", help="Reuse the run created with this key in the last 24 hours")
@flag("--requires", kind="slice", help="Replace the workflow's requires (key:value, repeatable)")
@flag("--no-requires", kind="bool", help="Clear the workflow's requires")
@flag("--memo", kind="bool", help="Force memoisation on")
@flag("--no-memo", kind="bool", help="Force memoisation off")
@flag("--delay", kind="float", help="Delay before the run starts (seconds)")
@flag("--retries", kind="int", help="Retry limit (0 = no retries)")
@flag("--catalog", hidden=True, help="Catalog version to run against (post-0.12)")
@click.pass_obj
def submit(
    obj: Context,
    target: str,
    arguments: tuple[str, ...],
    no_wait: bool,
    idempotency_key: str | None,
    requires: tuple[str, ...],
    no_requires: bool,
    memo: bool,
    no_memo: bool,
    delay: float | None,
    retries: int | None,
    catalog: str | None,
) -> output.Rendered:
    workspace = obj.require_workspace()
    module, name = split_target(target)
    client = obj.client
    workspace_id = client.ensure_workspace(workspace)
    tty = output.stdout_is_tty()
    workflow: dict[str, Any] = {}
    try:
        with prefixed("failed to get workflow"):
            found = client.topic(
                f"workspaces/{workspace_id}/workflows/{quote(module)}/{quote(name)}"
            )
        workflow = found if isinstance(found, dict) else {}
    except errors.ClientError as e:
        cause = e.__cause__
        if not (isinstance(cause, ApiError) and cause.status == 404):
            raise
        # Like upstream, an unknown workflow is an error; say how to make it known.
        raise errors.ClientError(
            f"failed to get workflow: not_found: no workflow '{target}' is registered in "
            f"workspace '{workspace}' (start a worker with --register, or run "
            "'coflux manifests register')"
        ) from e

    check_arity(target, arguments, workflow.get("parameters"))
    body: dict[str, Any] = {
        "workspaceId": workspace_id,
        "module": module,
        "target": name,
        "arguments": padded_arguments(arguments, workflow.get("parameters")),
        **workflow_options(workflow),
    }
    if requires:
        body["requires"] = tagsets.parse_tag_set(requires)
    if no_requires:
        body["requires"] = {}
    if memo:
        body["memo"] = True
    if no_memo:
        body["memo"] = False
    if delay is not None:
        body["delay"] = int(delay * 1000)
    if retries is not None:
        body["retries"] = (
            None if retries <= 0 else {"limit": retries, "backoffMin": 0, "backoffMax": 0}
        )
    if idempotency_key:
        body["idempotencyKey"] = idempotency_key
    if catalog:
        body["catalog"] = catalog

    with prefixed("failed to submit workflow"):
        response = client.call("submit_workflow", body)
    run_id = str(response["runId"])
    if no_wait:
        if obj.json_output:
            return output.Json(
                {
                    "runId": run_id,
                    "stepId": response.get("stepId"),
                    "executionId": response.get("executionId"),
                },
                sort_keys=False,
            )
        return output.Text.of(f"Workflow submitted (run: {run_id}).")
    return progress.wait(
        client, workspace_id, run_id, json_output=obj.json_output, tty=tty, announce=run_id
    )


def register(root: click.Group) -> None:
    root.add_command(submit)
