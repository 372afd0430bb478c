"""``coflux inputs list|inspect|respond|dismiss`` (cli.md §4.13)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from pycoflux import errors
from pycoflux.cli import grammar, output
from pycoflux.cli.context import Context
from pycoflux.cli.grammar import flag


@click.group("inputs", cls=grammar.Group, help="Respond to inputs requested by runs")
def inputs() -> None:
    pass


def when(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def tags(requires: Any) -> str:
    if not isinstance(requires, dict) or not requires:
        return ""
    return " ".join(f"{k}:{','.join(map(str, v))}" for k, v in sorted(requires.items()))


@inputs.command("list", cls=grammar.Command, help="List pending inputs")
@flag("--run", help="Only inputs of this run")
@click.pass_obj
def list_(obj: Context, run: str | None) -> output.Rendered:
    workspace_id = obj.client.resolve_workspace(obj.require_workspace())
    found = obj.client.topic(f"workspaces/{workspace_id}/inputs") or {}
    if run:
        found = {k: v for k, v in found.items() if isinstance(v, dict) and v.get("runId") == run}
    if obj.json_output:
        return output.Json(found)
    rows = [
        [
            input_id,
            str(entry.get("runId") or ""),
            str(entry.get("executionId") or ""),
            str(entry.get("key") or "-"),
            tags(entry.get("requires")),
            when(entry.get("createdAt")),
        ]
        for input_id, entry in sorted(found.items())
        if isinstance(entry, dict)
    ]
    return output.Table(
        ["ID", "Run", "Execution", "Key", "Requires", "Created"], rows, empty="No pending inputs."
    )


@inputs.command("inspect", cls=grammar.Command, arg_rule=grammar.exact(1), help="Show an input")
@click.argument("input_id")
@click.pass_obj
def inspect(obj: Context, input_id: str) -> output.Rendered:
    found = obj.client.call("get_input", {"inputId": input_id}) or {}
    if obj.json_output:
        return output.Json(found)
    lines = [f"Input: {input_id}"]
    if found.get("key"):
        lines.append(f"Key: {found['key']}")
    lines.append(f"Created: {when(found.get('createdAt'))}")
    if found.get("requires"):
        lines.append(f"Requires: {tags(found['requires'])}")
    lines.append(f"Prompt: {found.get('template') or ''}")
    schema = found.get("schema")
    if schema:
        try:
            pretty = json.dumps(json.loads(schema) if isinstance(schema, str) else schema, indent=2)
        except ValueError:
            pretty = str(schema)
        lines.append("Schema:")
        lines += [f"  {line}" for line in pretty.splitlines()]
    response = found.get("response")
    if isinstance(response, dict):
        lines.append(f"Status: {response.get('type')}")
        lines.append(f"Responded: {when(response.get('createdAt'))}")
        if "value" in response:
            lines.append(f"Value: {json.dumps(response['value'])}")
    else:
        lines.append("Status: pending")
    return output.Text(lines)


@inputs.command(
    "respond",
    cls=grammar.Command,
    arg_rule=grammar.exact(2),
    help="Respond to an input with a JSON value",
)
@click.argument("input_id")
@click.argument("value")
@click.pass_obj
def respond(obj: Context, input_id: str, value: str) -> output.Rendered:
    try:
        parsed = json.loads(value)
    except ValueError as e:
        raise errors.ConfigError(f"invalid JSON value: {e}") from None
    obj.client.call("respond_input", {"inputId": input_id, "value": parsed})
    if obj.json_output:
        return output.Json({"responded": True})
    return output.Text.of(f"Input '{input_id}' responded.")


@inputs.command("dismiss", cls=grammar.Command, arg_rule=grammar.exact(1), help="Dismiss an input")
@click.argument("input_id")
@click.pass_obj
def dismiss(obj: Context, input_id: str) -> output.Rendered:
    obj.client.call("dismiss_input", {"inputId": input_id})
    if obj.json_output:
        return output.Json({"dismissed": True})
    return output.Text.of(f"Input '{input_id}' dismissed.")


def register(root: click.Group) -> None:
    root.add_command(inputs)
