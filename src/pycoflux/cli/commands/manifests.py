"""``coflux manifests discover|register|archive|inspect`` (cli.md §4.8)."""

from __future__ import annotations

from typing import Any

import click

from pycoflux import errors
from pycoflux.cli import discovery, grammar, output
from pycoflux.cli.client import prefixed
from pycoflux.cli.context import Context
from pycoflux.cli.grammar import flag

NO_MODULES = "no modules specified; pass them as arguments or set 'worker.modules' in coflux.toml"


@click.group("manifests", cls=grammar.Group, help="Discover, register and inspect manifests")
@flag(
    "--adapter",
    kind="slice",
    persistent=True,
    help="Adapter command (comma-separated argv), replaces worker.adapter",
)
@click.pass_context
def manifests(ctx: click.Context, adapter: tuple[str, ...]) -> None:
    ctx.meta["manifests.adapter"] = list(adapter)


def _targets(obj: Context, modules: tuple[str, ...]) -> list[dict[str, Any]]:
    obj.check_config()
    adapter = click.get_current_context().meta.get("manifests.adapter") or obj.strings(
        "worker.adapter"
    )
    if not adapter:
        raise errors.ConfigError(
            "no adapter configured; use --adapter or add 'worker.adapter' to coflux.toml"
        )
    names = list(modules) or obj.strings("worker.modules")
    if not names:
        raise errors.ConfigError(NO_MODULES)
    return discovery.discover(adapter, names)


@manifests.command("discover", cls=grammar.Command, help="List the workflows in modules")
@click.argument("modules", nargs=-1)
@click.pass_obj
def discover(obj: Context, modules: tuple[str, ...]) -> output.Rendered:
    targets = _targets(obj, modules)
    if obj.json_output:
        listed = [discovery.discovered(t) for t in targets] or None
        return output.Json({"targets": listed}, sort_keys=False)
    if not targets:
        return output.Text.of("No workflows discovered.")
    return output.Text([f"{t.get('module')}/{t.get('name')}" for t in targets])


@manifests.command("register", cls=grammar.Command, help="Register the workflows in modules")
@click.argument("modules", nargs=-1)
@click.pass_obj
def register_(obj: Context, modules: tuple[str, ...]) -> output.Rendered:
    workspace = obj.require_workspace()
    targets = _targets(obj, modules)
    workspace_id = obj.client.ensure_workspace(workspace)
    with prefixed("failed to register manifests"):
        obj.client.call(
            "register_manifests",
            {"workspaceId": workspace_id, "manifests": discovery.manifests(targets)},
        )
    return output.Text.of("Manifest(s) registered.")


@manifests.command(
    "archive", cls=grammar.Command, arg_rule=grammar.exact(1), help="Archive a module"
)
@click.argument("module")
@click.pass_obj
def archive(obj: Context, module: str) -> output.Rendered:
    workspace_id = obj.client.resolve_workspace(obj.require_workspace())
    with prefixed("failed to archive module"):
        obj.client.call("archive_module", {"workspaceId": workspace_id, "moduleName": module})
    return output.Text.of(f"Archived module '{module}'.")


def manifest_lines(found: dict[str, Any]) -> list[str]:
    if not found:
        return ["No modules registered."]
    lines: list[str] = []
    for module in sorted(found):
        if lines:
            lines.append("")
        lines.append(click.style(module, bold=True))
        workflows = found[module] if isinstance(found[module], dict) else {}
        for name in sorted(workflows):
            parameters = (workflows[name] or {}).get("parameters") or []
            names = ", ".join(str(p.get("name")) for p in parameters if isinstance(p, dict))
            lines.append(f"  {name}" + (f"  ({names})" if names else ""))
    return lines


@manifests.command("inspect", cls=grammar.Command, help="Show the registered manifests")
@flag("--watch", kind="bool", help="Keep watching for changes")
@click.pass_obj
def inspect(obj: Context, watch: bool) -> output.Rendered:
    workspace_id = obj.client.resolve_workspace(obj.require_workspace())
    path = f"workspaces/{workspace_id}/manifests"
    with prefixed("failed to get manifests"):
        found = obj.client.topic(path)
    if obj.json_output:
        return output.Json(found)
    if not watch:
        return output.Text(manifest_lines(found or {}))
    from pycoflux.cli import watching

    return watching.redraw(lambda: manifest_lines(obj.client.topic(path) or {}))


def register(root: click.Group) -> None:
    root.add_command(manifests)
