"""Waiting for a run: completion rules, polling, and the live step tree (cli.md §4.4.2-4.4.4).

Upstream subscribes to the run topic over WebSocket; we poll the REST snapshot instead
(allowed by cli.md §3.4). Each poll yields the full run value, exactly like a topic update.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeGuard

import click

from pycoflux import errors
from pycoflux.cli import output, values
from pycoflux.cli.client import Client

POLL_INTERVAL = 0.15
POLL_PACE = 4  # the next poll waits at least this many times the last one's duration
OK_RESULTS = frozenset({"value", "cached", "spawned"})
DETACHED = "Detached. Workflow still running."


def _attempt_key(key: str) -> tuple[int, str]:
    # Upstream compares attempt keys as strings; numeric order only differs past 9 attempts.
    return (int(key), key) if key.isdigit() else (-1, key)


def latest_execution(step: Any) -> tuple[str, dict[str, Any]] | None:
    executions = step.get("executions") if isinstance(step, dict) else None
    if not isinstance(executions, dict) or not executions:
        return None
    key = max(executions, key=_attempt_key)
    execution = executions[key]
    return (key, execution) if isinstance(execution, dict) else None


def root_step(run: Any) -> tuple[str, dict[str, Any]] | None:
    steps = run.get("steps") if isinstance(run, dict) else None
    if not isinstance(steps, dict):
        return None
    for step_id, step in steps.items():
        if isinstance(step, dict) and step.get("parentId") is None:
            return step_id, step
    return None


def effective_result(result: Any) -> Any:
    """Unwrap ``spawned`` to the spawned run's result (``None`` while it is unresolved)."""
    if isinstance(result, dict) and result.get("type") == "spawned":
        return result.get("result")
    return result


def execution_status(execution: dict[str, Any]) -> str:
    result = execution.get("result")
    if isinstance(result, dict) and result.get("type") == "spawned":
        result = result.get("result")
        if result is None:
            return "running"
    if not isinstance(result, dict):
        return "running" if execution.get("assignedAt") else "pending"
    kind = str(result.get("type"))
    return "completed" if kind == "value" else kind


def _settled(result: Any) -> TypeGuard[dict[str, Any]]:
    """A result is final unless it announces a follow-up attempt of the same step."""
    if not isinstance(result, dict):
        return False
    return result.get("retry") is None and result.get("successor") is None


def root_outcome(run: Any) -> bool | None:
    """``None`` while the root step runs, else whether it succeeded."""
    root = root_step(run)
    latest = latest_execution(root[1]) if root else None
    if latest is None:
        return None
    result = latest[1].get("result")
    if not _settled(result):
        return None
    return result.get("type") in OK_RESULTS


def all_outcome(run: Any) -> bool | None:
    """``None`` while any step's latest execution is unfinished, else whether all succeeded."""
    ok = True
    for step in (run.get("steps") or {}).values():
        latest = latest_execution(step)
        if latest is None:
            return None
        result = latest[1].get("result")
        if not _settled(result):
            return None
        ok = ok and result.get("type") in OK_RESULTS
    return ok


def poll(client: Client, workspace_id: str, run_id: str) -> Iterator[Any]:
    """Yield successive snapshots of the run; transient connection failures are retried.

    A snapshot of a run of thousands of steps costs the server a build of all of them, so
    the next poll waits at least ``POLL_PACE`` times as long as the last one took.
    """
    path = f"workspaces/{workspace_id}/runs/{run_id}"
    while True:
        started = time.monotonic()
        try:
            snapshot = client.topic(path)
        except errors.ServerUnreachableError:
            time.sleep(POLL_INTERVAL)
            continue
        took = time.monotonic() - started
        yield snapshot
        time.sleep(max(POLL_INTERVAL, took * POLL_PACE))


def wait(
    client: Client,
    workspace_id: str,
    run_id: str,
    *,
    json_output: bool,
    tty: bool,
    announce: str | None,
) -> output.Rendered:
    """Wait for the run in the mode the output calls for (cli.md §4.4.2)."""
    try:
        if json_output:
            for run in poll(client, workspace_id, run_id):
                outcome = root_outcome(run)
                if outcome is not None:
                    return output.Json(run, exit_code=0 if outcome else 1)
        if tty:
            return _live(client, workspace_id, run_id)
        if announce is not None:
            click.echo(announce)
        for run in poll(client, workspace_id, run_id):
            outcome = root_outcome(run)
            if outcome is not None:
                return output.Text(exit_code=0 if outcome else 1)
    except KeyboardInterrupt:
        output.echo_err(DETACHED)
        return None
    raise AssertionError("unreachable")


# --- live tree (TTY only; cosmetic) -------------------------------------------------------

_COLOURS = {
    "completed": "green",
    "cached": "green",
    "spawned": "green",
    "running": "blue",
    "pending": "bright_black",
    "error": "red",
    "crashed": "red",
    "timeout": "red",
    "abandoned": "yellow",
    "cancelled": "yellow",
    "suspended": "cyan",
    "deferred": "cyan",
}


def _annotation(status: str, execution: dict[str, Any]) -> str:
    result = effective_result(execution.get("result"))
    if status == "running":
        return "Running..."
    if status == "pending":
        return click.style("Pending", dim=True)
    if status == "error" and isinstance(result, dict):
        error = result.get("error") or {}
        text = f"{error.get('type') or 'Error'}: {error.get('message') or ''}".rstrip()
        return click.style(text.splitlines()[0] if text else "", fg="red")
    if status == "completed" and isinstance(result, dict):
        rendered = " ".join(values.format_value(result.get("value")).split())
        return click.style(rendered if len(rendered) <= 60 else rendered[:57] + "...", dim=True)
    return click.style(f"({status})", dim=True)


def tree_lines(run: dict[str, Any], run_id: str) -> list[str]:
    """One line per step, children nested under the step that created them."""
    steps: dict[str, Any] = run.get("steps") or {}
    lines: list[str] = []

    def line(step_id: str, prefix: str, connector: str) -> None:
        step = steps.get(step_id)
        if not isinstance(step, dict):
            return
        latest = latest_execution(step)
        attempt, execution = latest if latest else ("-", {})
        status = execution_status(execution) if latest else "pending"
        dot = click.style("●", fg=_COLOURS.get(status, "white"))
        label = f"{step.get('module')}/{step.get('target')}"
        tag = f" [{run_id}]" if step.get("parentId") is None else ""
        ident = click.style(f"{step.get('stepNumber')}:{attempt}", dim=True)
        annotation = _annotation(status, execution) if latest else ""
        lines.append(f"{prefix}{connector}{dot} {ident} {label}{tag}  {annotation}".rstrip())
        children = _children(step)
        child_prefix = prefix + ("" if not connector else ("   " if connector == "└─ " else "│  "))
        groups = execution.get("groups") or {} if latest else {}
        rendered: list[tuple[str, str | None]] = []
        seen_groups: set[str] = set()
        for child_id, group_id in children:
            if group_id is not None and str(group_id) in groups:
                members = [c for c, g in children if g == group_id]
                if len(members) > 1:
                    if str(group_id) not in seen_groups:
                        seen_groups.add(str(group_id))
                        rendered.append((child_id, str(group_id)))
                    continue
            rendered.append((child_id, None))
        for n, (child_id, group_id) in enumerate(rendered):
            last = n == len(rendered) - 1
            conn = "└─ " if last else "├─ "
            if group_id is None:
                line(child_id, child_prefix, conn)
                continue
            members = [c for c, g in children if str(g) == group_id]
            counts: dict[str, int] = {}
            for member in members:
                found = latest_execution(steps.get(member) or {})
                status = execution_status(found[1]) if found else "pending"
                counts[status] = counts.get(status, 0) + 1
            summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            name = groups.get(group_id) or "group"
            lines.append(f"{child_prefix}{conn}{name} 1 of {len(members)} ({summary})")
            line(members[0], child_prefix + ("   " if last else "│  "), "└─ ")

    root = root_step(run)
    if root:
        line(root[0], "", "")
    return lines


def _children(step: dict[str, Any]) -> list[tuple[str, Any]]:
    found: dict[str, Any] = {}
    for key in sorted((step.get("executions") or {}), key=_attempt_key):
        for child in step["executions"][key].get("children") or []:
            if isinstance(child, dict) and child.get("stepId") not in found:
                found[str(child["stepId"])] = child.get("groupId")
    return list(found.items())


def _live(client: Client, workspace_id: str, run_id: str) -> output.Rendered:
    drawn = 0
    write: Callable[[str], object] = sys.stdout.write
    for run in poll(client, workspace_id, run_id):
        lines = tree_lines(run, run_id) if isinstance(run, dict) else []
        height = max(shutil.get_terminal_size().lines - 1, 3)
        if len(lines) > height:
            hidden = len(lines) - (height - 1)
            lines = [*lines[: height - 1], f"… {hidden} more steps ({len(run['steps'])} total)"]
        if drawn:
            write(f"\x1b[{drawn}F")
        write("".join(f"\x1b[2K{text}\n" for text in lines))
        if drawn > len(lines):
            write("\x1b[J")
        sys.stdout.flush()
        drawn = len(lines)
        outcome = all_outcome(run)
        if outcome is not None:
            return output.Text(exit_code=0 if outcome else 1)
    raise AssertionError("unreachable")
