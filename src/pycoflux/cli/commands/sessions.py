"""``coflux sessions list`` (cli.md §4.14)."""

from __future__ import annotations

from typing import Any

import click

from pycoflux.cli import grammar, output
from pycoflux.cli.context import Context
from pycoflux.cli.grammar import flag


@click.group("sessions", cls=grammar.Group, help="Inspect worker sessions")
def sessions() -> None:
    pass


def session_lines(found: dict[str, Any]) -> list[str]:
    if not found:
        return ["No active sessions."]
    rows = []
    for session_id in sorted(found):
        session = found[session_id] if isinstance(found[session_id], dict) else {}
        if not session.get("connected"):
            colour = "bright_black"
        elif session.get("workerState") in ("draining", "paused"):
            colour = "yellow"
        else:
            colour = "green"
        targets = session.get("targets") or {}
        count = sum(len(v) for v in targets.values() if isinstance(v, list))
        provides = "; ".join(
            f"{k}={','.join(map(str, v))}"
            for k, v in sorted((session.get("provides") or {}).items())
        )
        executing = session.get("executing", session.get("executions", 0))
        rows.append(
            [
                f"{click.style('●', fg=colour)} {session_id}",
                str(session.get("poolName") or "(none)"),
                str(count),
                provides,
                f"{executing}/{session.get('concurrency', '?')}",
            ]
        )
    return output.format_table(["Session", "Pool", "Targets", "Provides", "Load"], rows)


@sessions.command("list", cls=grammar.Command, help="List the workspace's worker sessions")
@flag("--watch", kind="bool", help="Keep watching for changes")
@click.pass_obj
def list_(obj: Context, watch: bool) -> output.Rendered:
    workspace_id = obj.client.resolve_workspace(obj.require_workspace())
    path = f"workspaces/{workspace_id}/sessions"
    found = obj.client.topic(path) or {}
    if obj.json_output:
        return output.Json(found)
    if not watch:
        return output.Text(session_lines(found))
    from pycoflux.cli import watching

    return watching.redraw(lambda: session_lines(obj.client.topic(path) or {}))


def register(root: click.Group) -> None:
    root.add_command(sessions)
