"""``coflux queue`` (cli.md §4.15)."""

from __future__ import annotations

import time
from typing import Any

import click

from pycoflux.cli import grammar, output
from pycoflux.cli.context import Context
from pycoflux.cli.grammar import flag


def _satisfies(requires: dict[str, Any], provides: dict[str, Any]) -> bool:
    return all(
        any(v in (provides.get(key) or []) for v in wanted)
        for key, wanted in requires.items()
        if wanted
    )


def queue_status(
    entry: dict[str, Any], sessions: dict[str, Any] | None, paused: bool, now_ms: float
) -> str:
    if entry.get("assignedAt"):
        return "assigned"
    execute_after = entry.get("executeAfter")
    if isinstance(execute_after, int | float) and execute_after > now_ms:
        return "scheduled"
    if paused:
        return "paused"
    if entry.get("dependencies"):
        return "waiting"
    if sessions is None:
        return "unknown"
    module, target = entry.get("module"), entry.get("target")
    for session in sessions.values():
        if not isinstance(session, dict) or not session.get("connected"):
            continue
        if session.get("workerState") in ("draining", "paused"):
            continue
        concurrency = session.get("concurrency")
        if (
            isinstance(concurrency, int)
            and concurrency
            and session.get("executing", 0) >= concurrency
        ):
            continue
        if target not in ((session.get("targets") or {}).get(module) or []):
            continue
        if _satisfies(entry.get("requires") or {}, session.get("provides") or {}):
            return "unknown"
    return "no session"


def _dependency(dep: Any) -> str:
    # Newer servers describe dependencies as objects; older ones as execution ids.
    if isinstance(dep, dict):
        return str(dep.get("executionId") or dep.get("inputId") or dep.get("type"))
    return str(dep)


def queue_lines(found: dict[str, Any], sessions: dict[str, Any] | None, paused: bool) -> list[str]:
    if not found:
        return ["Queue is empty."]
    now_ms = time.time() * 1000
    rows = []
    for execution_id in sorted(found):
        entry = found[execution_id] if isinstance(found[execution_id], dict) else {}
        requires = " ".join(
            f"{k}:{','.join(map(str, v))}" for k, v in sorted((entry.get("requires") or {}).items())
        )
        rows.append(
            [
                execution_id,
                f"{entry.get('module')}/{entry.get('target')}",
                requires,
                ", ".join(_dependency(d) for d in entry.get("dependencies") or []),
                queue_status(entry, sessions, paused, now_ms),
            ]
        )
    return output.format_table(["Execution", "Target", "Requires", "Dependencies", "Status"], rows)


@click.command("queue", cls=grammar.Command, help="Show the workspace's execution queue")
@flag("--no-watch", kind="bool", help="Print a snapshot instead of a live view")
@click.pass_obj
def queue(obj: Context, no_watch: bool) -> output.Rendered:
    client = obj.client
    workspace_id = client.resolve_workspace(obj.require_workspace())
    path = f"workspaces/{workspace_id}/queue"
    found = client.topic(path) or {}
    if obj.json_output:
        return output.Json(found)

    def render() -> list[str]:
        entries = client.topic(path) or {}
        sessions = client.topic(f"workspaces/{workspace_id}/sessions") or {}
        state = (client.workspaces(refresh=True).get(workspace_id) or {}).get("state")
        return queue_lines(entries, sessions, state == "paused")

    if no_watch:
        sessions = client.topic(f"workspaces/{workspace_id}/sessions") or {}
        return output.Text(queue_lines(found, sessions, False))
    from pycoflux.cli import watching

    return watching.redraw(render)


def register(root: click.Group) -> None:
    root.add_command(queue)
