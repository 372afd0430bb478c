"""``coflux workspaces list|create|update|archive|pause|resume`` (cli.md §4.7)."""

from __future__ import annotations

from typing import Any

import click

from pycoflux import errors
from pycoflux.cli import grammar, output
from pycoflux.cli.context import Context
from pycoflux.cli.grammar import flag


@click.group("workspaces", cls=grammar.Group, help="Manage workspaces")
def workspaces() -> None:
    pass


@workspaces.command("list", cls=grammar.Command, help="List workspaces")
@click.pass_obj
def list_(obj: Context) -> output.Rendered:
    found = obj.client.workspaces()
    if obj.json_output:
        return output.Json(found)
    live = {k: v for k, v in found.items() if isinstance(v, dict) and v.get("state") != "archived"}
    rows = []
    for ws in sorted(live.values(), key=lambda w: str(w.get("name"))):
        base = found.get(ws.get("baseId") or "")
        rows.append([str(ws.get("name")), str(base.get("name")) if base else "(None)"])
    return output.Table(["Name", "Base"], rows, empty="No workspaces found.")


@workspaces.command(
    "create", cls=grammar.Command, arg_rule=grammar.exact(1), help="Create a workspace"
)
@click.argument("name")
@flag("--base", help="Name of the base workspace to inherit from")
@click.pass_obj
def create(obj: Context, name: str, base: str | None) -> output.Rendered:
    body: dict[str, Any] = {"name": name}
    if base:
        try:
            body["baseId"] = obj.client.resolve_workspace(base)
        except errors.ClientError as e:
            if str(e).startswith("failed to get workspaces"):
                raise
            raise errors.ClientError(f"base workspace not found: {base}") from None
    obj.client.call("create_workspace", body)
    return output.Text.of(f"Created workspace '{name}'.")


@workspaces.command("update", cls=grammar.Command, help="Rename or rebase the current workspace")
@flag("--name", help="New name")
@flag("--base", help="New base workspace name")
@flag("--no-base", kind="bool", help="Remove the base workspace")
@click.pass_obj
def update(obj: Context, name: str | None, base: str | None, no_base: bool) -> output.Rendered:
    current = obj.require_workspace()
    workspace_id = obj.client.resolve_workspace(current)
    body: dict[str, Any] = {"workspaceId": workspace_id}
    if name:
        body["name"] = name
    if base:
        try:
            body["baseId"] = obj.client.resolve_workspace(base)
        except errors.ClientError:
            raise errors.ClientError(f"base workspace not found: {base}") from None
    elif no_base:
        body["baseId"] = None
    obj.client.call("update_workspace", body)
    return output.Text.of(f"Updated workspace '{name or current}'.")


def _simple(action: str, endpoint: str, past: str, help_text: str) -> click.Command:
    @click.pass_obj
    def command(obj: Context) -> output.Rendered:
        current = obj.require_workspace()
        workspace_id = obj.client.resolve_workspace(current)
        obj.client.call(endpoint, {"workspaceId": workspace_id})
        return output.Text.of(f"{past} workspace '{current}'.")

    return grammar.Command(action, callback=command, help=help_text)


workspaces.add_command(
    _simple("archive", "archive_workspace", "Archived", "Archive the current workspace")
)
workspaces.add_command(_simple("pause", "pause_workspace", "Paused", "Pause the current workspace"))
workspaces.add_command(
    _simple("resume", "resume_workspace", "Resumed", "Resume the current workspace")
)


def register(root: click.Group) -> None:
    root.add_command(workspaces)
