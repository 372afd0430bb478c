"""``coflux pools ...`` (cli.md §4.9)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from pycoflux import errors
from pycoflux.cli import grammar, output, tagsets
from pycoflux.cli.client import prefixed
from pycoflux.cli.context import Context
from pycoflux.cli.grammar import FC, flag

POOL_FIELDS = {"modules", "provides", "accepts"}
LAUNCHER_FIELDS = {
    "image",
    "dockerHost",
    "directory",
    "namespace",
    "serviceAccount",
    "apiServer",
    "token",
    "caCert",
    "insecure",
    "imagePullPolicy",
    "nodeSelector",
    "tolerations",
    "imagePullSecrets",
    "hostAliases",
    "resources",
    "labels",
    "annotations",
    "activeDeadlineSeconds",
    "volumes",
    "volumeMounts",
    "serverHost",
    "serverSecure",
    "adapter",
    "concurrency",
    "env",
    # post-0.12 fields, accepted for forward compatibility (cli.md §4.9.3)
    "idleTimeout",
    "networkMode",
    "tokenSecret",
    "cluster",
    "taskDefinition",
    "region",
    "containerName",
    "launchType",
    "capacityProvider",
    "subnets",
    "securityGroups",
    "assignPublicIp",
    "platformVersion",
    "credentialsSecret",
    "roleArn",
    "roleExternalId",
    "endpoint",
}
MAP_FIELDS = {"env", "labels", "annotations", "nodeSelector", "resources", "envSecrets"}


@click.group("pools", cls=grammar.Group, help="Manage worker pools")
def pools() -> None:
    pass


def _tags(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    return " ".join(f"{k}:{','.join(map(str, v))}" for k, v in sorted(value.items()))


def _set_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def build_pool(ops: list[tuple[str, str, Any]]) -> tuple[dict[str, Any], bool]:
    """Apply ``(op, key, value)`` in command-line order; returns the pool and launcher-touched."""
    pool: dict[str, Any] = {}
    launcher: dict[str, Any] = {}
    touched = False
    for op, key, value in ops:
        head, dot, sub = key.partition(".")
        if key in POOL_FIELDS:
            pool[key] = value if op == "set" else None
        elif dot and head in MAP_FIELDS:
            target = launcher.get(head)
            if not isinstance(target, dict):
                target = launcher[head] = {}
            target[sub] = value if op == "set" else None
            touched = True
        elif key in LAUNCHER_FIELDS:
            launcher[key] = value if op == "set" else None
            touched = True
        else:
            raise errors.ConfigError(f'unknown field "{key}"')
    if touched:
        pool["launcher"] = launcher
    return pool, touched


def pool_edit_flags(update: bool) -> Callable[[FC], FC]:
    def decorate(fn: FC) -> FC:
        decorators = [
            flag("--set", "set_", kind="array", help="Set a field (key=value; JSON values)"),
            flag("--modules", kind="slice", help="Module patterns"),
            flag("--provides", kind="slice", help="Provided tags (key:value)"),
            flag("--accepts", kind="slice", help="Accepted tags (key:value)"),
        ]
        if update:
            decorators += [
                flag("--unset", kind="array", help="Clear a field"),
                flag("--no-provides", kind="bool", help="Clear provides"),
                flag("--no-accepts", kind="bool", help="Clear accepts"),
            ]
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return decorate


def edit_ops(
    set_: tuple[str, ...],
    modules: tuple[str, ...],
    provides: tuple[str, ...],
    accepts: tuple[str, ...],
    unset: tuple[str, ...] = (),
    no_provides: bool = False,
    no_accepts: bool = False,
) -> list[tuple[str, str, Any]]:
    """The edit operations in command-line order (a later op on the same key wins)."""
    order = grammar.option_order()
    ops: list[tuple[str, str, Any]] = []
    queues: dict[str, list[Any]] = {
        "set": list(set_),
        "unset": list(unset),
    }
    emitted_lists = {"modules": False, "provides": False, "accepts": False}
    for name in order:
        if name == "set" and queues["set"]:
            value = queues["set"].pop(0)
            key, eq, text = value.partition("=")
            if not eq:
                raise errors.ConfigError(f'invalid --set value "{value}": must be key=value')
            ops.append(("set", key, _set_value(text)))
        elif name == "unset" and queues["unset"]:
            ops.append(("unset", queues["unset"].pop(0), None))
        elif name in emitted_lists and not emitted_lists[name]:
            emitted_lists[name] = True
            if name == "modules":
                ops.append(("set", "modules", list(modules)))
            elif name == "provides":
                ops.append(("set", "provides", tagsets.parse_tag_set(provides)))
            else:
                ops.append(("set", "accepts", tagsets.parse_tag_set(accepts)))
        elif name == "no-provides" and no_provides:
            ops.append(("unset", "provides", None))
        elif name == "no-accepts" and no_accepts:
            ops.append(("unset", "accepts", None))
    return ops


@pools.command("list", cls=grammar.Command, help="List pools")
@click.pass_obj
def list_(obj: Context) -> output.Rendered:
    workspace_id = obj.client.resolve_workspace(obj.require_workspace())
    found = obj.client.topic(f"workspaces/{workspace_id}/pools") or {}
    if obj.json_output:
        return output.Json(found)
    rows = []
    for name in sorted(found):
        pool = found[name] if isinstance(found[name], dict) else {}
        launcher = pool.get("launcher") or {}
        rows.append(
            [
                name,
                str(launcher.get("type") or "-"),
                ",".join(pool.get("modules") or []),
                _tags(pool.get("provides")),
                _tags(pool.get("accepts")),
            ]
        )
    return output.Table(
        ["Name", "Launcher", "Modules", "Provides", "Accepts"], rows, empty="No pools found."
    )


def pool_lines(pool: dict[str, Any]) -> list[str]:
    launcher = pool.get("launcher") or {}
    lines = [
        f"Modules: {', '.join(pool.get('modules') or []) or '(none)'}",
        f"Provides: {_tags(pool.get('provides')) or '(none)'}",
        f"Accepts: {_tags(pool.get('accepts')) or '(none)'}",
        f"Launcher: {launcher.get('type') or '(none)'}",
    ]
    for key, label in (
        ("image", "Image"),
        ("directory", "Directory"),
        ("dockerHost", "Docker host"),
        ("namespace", "Namespace"),
        ("serviceAccount", "Service account"),
        ("imagePullPolicy", "Image pull policy"),
    ):
        if launcher.get(key):
            lines.append(f"{label}: {launcher[key]}")
    if launcher.get("apiServer"):
        suffix = " (no verify)" if launcher.get("insecure") else ""
        lines.append(f"API server: {launcher['apiServer']}{suffix}")
    if "serverHost" in launcher or "serverSecure" in launcher:
        scheme = ""
        if isinstance(launcher.get("serverSecure"), bool):
            scheme = " (https)" if launcher["serverSecure"] else " (http)"
        lines.append(f"Server host: {launcher.get('serverHost') or '(default)'}{scheme}")
    if launcher.get("adapter"):
        lines.append(f"Adapter: {' '.join(map(str, launcher['adapter']))}")
    if launcher.get("concurrency"):
        lines.append(f"Concurrency: {launcher['concurrency']}")
    if launcher.get("env"):
        lines.append("Environment:")
        lines += [f"  {k}={v}" for k, v in sorted(launcher["env"].items())]
    return lines


@pools.command("get", cls=grammar.Command, arg_rule=grammar.exact(1), help="Show a pool")
@click.argument("name")
@click.pass_obj
def get(obj: Context, name: str) -> output.Rendered:
    workspace_id = obj.client.resolve_workspace(obj.require_workspace())
    with prefixed(f"failed to get pool '{name}'"):
        found = obj.client.topic(f"workspaces/{workspace_id}/pools/{name}")
    pool = found.get("pool", found) if isinstance(found, dict) else found
    if obj.json_output:
        return output.Json(pool)
    return output.Text(pool_lines(pool if isinstance(pool, dict) else {}))


@pools.command(
    "create",
    cls=grammar.Command,
    arg_rule=grammar.exact(1),
    required_flags=["type"],
    help="Create a pool",
)
@click.argument("name")
@flag("--type", "type_", help="Launcher type: docker, process, kubernetes")
@pool_edit_flags(update=False)
@click.pass_obj
def create(obj: Context, /, name: str, type_: str, **edits: Any) -> output.Rendered:
    pool, _ = build_pool(edit_ops(**edits))
    launcher = pool.get("launcher") or {}
    pool["launcher"] = {**launcher, "type": type_}
    workspace_id = obj.client.ensure_workspace(obj.require_workspace())
    obj.client.call("create_pool", {"workspaceId": workspace_id, "poolName": name, "pool": pool})
    return output.Text.of(f"Created pool '{name}'.")


@pools.command("update", cls=grammar.Command, arg_rule=grammar.exact(1), help="Update a pool")
@click.argument("name")
@pool_edit_flags(update=True)
@click.pass_obj
def update(obj: Context, /, name: str, **edits: Any) -> output.Rendered:
    ops = edit_ops(**edits)
    if not ops:
        raise errors.ConfigError("no changes specified; use --set, --unset, or convenience flags")
    pool, _ = build_pool(ops)
    workspace_id = obj.client.ensure_workspace(obj.require_workspace())
    obj.client.call("update_pool", {"workspaceId": workspace_id, "poolName": name, "pool": pool})
    return output.Text.of(f"Updated pool '{name}'.")


@pools.command("delete", cls=grammar.Command, arg_rule=grammar.exact(1), help="Delete a pool")
@click.argument("name")
@click.pass_obj
def delete(obj: Context, name: str) -> output.Rendered:
    workspace_id = obj.client.resolve_workspace(obj.require_workspace())
    obj.client.call("update_pool", {"workspaceId": workspace_id, "poolName": name, "pool": None})
    return output.Text.of(f"Deleted pool '{name}'.")


def _toggle(action: str, past: str) -> click.Command:
    @click.argument("name")
    @click.pass_obj
    def command(obj: Context, name: str) -> output.Rendered:
        workspace_id = obj.client.resolve_workspace(obj.require_workspace())
        obj.client.call(f"{action}_pool", {"workspaceId": workspace_id, "poolName": name})
        return output.Text.of(f"{past} pool '{name}'.")

    return grammar.Command(
        action,
        callback=command,
        params=list(getattr(command, "__click_params__", [])),
        arg_rule=grammar.exact(1),
        help=f"{action.capitalize()} a pool",
    )


pools.add_command(_toggle("disable", "Disabled"))
pools.add_command(_toggle("enable", "Enabled"))


def _ms(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def worker_status(worker: dict[str, Any]) -> str:
    if worker.get("deactivatedAt"):
        return "failed" if worker.get("error") or worker.get("startError") else "stopped"
    if worker.get("stoppingAt"):
        return "stopping"
    if worker.get("startedAt"):
        return "running" if worker.get("connected") or worker.get("sessionId") else "started"
    if worker.get("startError"):
        return "failed"
    if worker.get("startingAt"):
        return "starting"
    return "unknown"


def launch_lines(workers: dict[str, Any]) -> list[str]:
    if not workers:
        return ["No launches."]
    ordered = sorted(
        workers.items(), key=lambda kv: (kv[1] or {}).get("startingAt") or 0, reverse=True
    )
    lines = []
    for worker_id, worker in ordered:
        worker = worker if isinstance(worker, dict) else {}
        error = worker.get("error") or worker.get("startError")
        line = f"{_ms(worker.get('startingAt'))}  {worker_id}  {worker_status(worker)}"
        lines.append(f"{line}  {error}" if error else line)
    return lines


@pools.command(
    "launches",
    cls=grammar.Command,
    arg_rule=grammar.Args(1, 2),
    help="Show a pool's launched workers",
)
@click.argument("pool")
@click.argument("worker_id", required=False)
@flag("--watch", kind="bool", help="Keep watching for changes")
@click.pass_obj
def launches(obj: Context, pool: str, worker_id: str | None, watch: bool) -> output.Rendered:
    workspace_id = obj.client.resolve_workspace(obj.require_workspace())
    path = f"workspaces/{workspace_id}/pools/{pool}"
    try:
        found = obj.client.topic(path)
    except errors.ClientError:
        raise errors.ClientError(f"pool '{pool}' not found") from None
    workers = found.get("workers") if isinstance(found, dict) else None
    if worker_id is None:
        if watch:
            from pycoflux.cli import watching

            return watching.redraw(
                lambda: launch_lines((obj.client.topic(path) or {}).get("workers") or {})
            )
        if obj.json_output:
            return output.Json(workers)
        return output.Text(launch_lines(workers or {}))
    worker = (workers or {}).get(worker_id)
    if not isinstance(worker, dict):
        raise errors.ClientError(f"worker '{worker_id}' not found")
    if obj.json_output:
        return output.Json(worker)
    lines = [f"Status: {worker_status(worker)}"]
    for key, label in (
        ("startingAt", "Starting at"),
        ("startedAt", "Started at"),
        ("stoppingAt", "Stopping at"),
        ("stoppedAt", "Stopped at"),
        ("deactivatedAt", "Deactivated at"),
    ):
        if worker.get(key):
            lines.append(f"{label}: {_ms(worker[key])}")
    lines.append(f"Connected: {'yes' if worker.get('sessionId') else 'no'}")
    if worker.get("logs"):
        lines += ["Logs:", *[f"  {line}" for line in str(worker["logs"]).splitlines()]]
    return output.Text(lines)


def _get_pools(obj: Context, workspace_id: str) -> tuple[dict[str, Any], str | None]:
    response = obj.client.call_raw("get_pools", {"workspaceId": workspace_id})
    body = obj.client.decode(response) or {}
    return body, response.headers.get("etag")


@pools.command("export", cls=grammar.Command, help="Export the pools as TOML")
# Shadows the global --output/-o: here it names a file (as upstream).
@flag("--output", "-o", "path", help="File to write (default: stdout)")
@flag("--only", kind="slice", help="Only these pools")
@click.pass_obj
def export(obj: Context, path: str | None, only: tuple[str, ...]) -> output.Rendered:
    from pycoflux.cli import poolfiles

    workspace_id = obj.client.resolve_workspace(obj.require_workspace())
    found, _ = _get_pools(obj, workspace_id)
    if only:
        found = {k: v for k, v in found.items() if k in only}
    text = poolfiles.dump(found)
    if not path:
        click.echo(text, nl=False)
        return None
    with open(path, "w") as fh:
        fh.write(text)
    output.echo_err(f"Exported {len(found)} pool(s) to {path}")
    return None


@pools.command(
    "import",
    cls=grammar.Command,
    arg_rule=grammar.Args(0, 1),
    help="Apply pools from a TOML file (or stdin)",
)
@click.argument("file", required=False)
@flag("--dry-run", kind="bool", help="Only show the plan")
@flag("--yes", kind="bool", help="Apply without asking")
@flag("--only", kind="slice", help="Only these pools")
@click.pass_obj
def import_(
    obj: Context, file: str | None, dry_run: bool, yes: bool, only: tuple[str, ...]
) -> output.Rendered:
    import sys

    from pycoflux.cli import poolfiles

    if file is None:
        if not (yes or dry_run):
            raise errors.ConfigError("--yes or --dry-run is required when reading from stdin")
        text = sys.stdin.read()
    else:
        try:
            with open(file) as fh:
                text = fh.read()
        except OSError as e:
            raise errors.ConfigError(f"failed to read file: {e}") from None
    wanted = poolfiles.load(text)
    workspace_id = obj.client.resolve_workspace(obj.require_workspace())
    current, etag = _get_pools(obj, workspace_id)
    if only:
        desired = {k: v for k, v in current.items() if k not in only}
        desired.update({k: v for k, v in wanted.items() if k in only})
    else:
        desired = wanted
    lines, counts = poolfiles.plan(current, desired)
    if not lines:
        return output.Text.of("No changes.")
    for line in lines:
        click.echo(line)
    if dry_run:
        return None
    if not yes:
        answer = click.prompt("Apply these changes? [y/N]", default="", show_default=False)
        if answer.strip().lower() not in ("y", "yes"):
            return output.Text.of("Cancelled.")
    response = obj.client.call_raw(
        "update_pools",
        {"workspaceId": workspace_id, "pools": desired},
        headers={"If-Match": etag} if etag else None,
    )
    if response.status_code == 412:
        raise errors.ClientError(
            "pool configuration has changed since plan was generated, re-run to see updated plan"
        )
    obj.client.decode(response)
    parts = [f"{n} {k}" for k, n in counts.items() if n]
    return output.Text.of(f"Applied: {', '.join(parts)}.")


def register(root: click.Group) -> None:
    root.add_command(pools)
