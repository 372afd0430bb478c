"""``coflux logs <run-id> [<step-id>:<attempt>]`` (cli.md §4.6)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import click

from pycoflux import errors
from pycoflux.cli import grammar, output, values
from pycoflux.cli.client import prefixed
from pycoflux.cli.commands.runs import get_run
from pycoflux.cli.context import Context
from pycoflux.cli.grammar import flag

LEVELS = ("DEBUG", "STDOUT", "INFO", "STDERR", "WARN", "ERROR")
_LEVEL_COLOURS = ("bright_black", "white", "blue", "magenta", "yellow", "red")
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
ENTRY_FIELDS = ("executionId", "workspaceId", "timestamp", "level", "template", "values")


def entry_json(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry with exactly the fields upstream prints (a null template becomes "")."""
    shaped = {key: entry.get(key) for key in ENTRY_FIELDS}
    shaped["template"] = shaped["template"] or ""
    return shaped


def format_message(entry: dict[str, Any]) -> str:
    """The template with placeholders filled, then unused values as ``name=value`` pairs."""
    given = entry.get("values") or {}
    used: set[str] = set()

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in given:
            return match.group(0)
        used.add(name)
        return values.format_value(given[name])

    message = _PLACEHOLDER.sub(fill, entry.get("template") or "")
    extras = " ".join(
        f"{name}={values.format_value(given[name])}" for name in sorted(given) if name not in used
    )
    return f"{message}  {extras}" if extras else message


def execution_labels(run: Any) -> dict[str, str]:
    labels: dict[str, str] = {}
    for step in ((run or {}).get("steps") or {}).values():
        for attempt, execution in (step.get("executions") or {}).items():
            if isinstance(execution, dict) and execution.get("executionId"):
                labels[str(execution["executionId"])] = (
                    f"{step.get('module')}/{step.get('target')} {step.get('stepNumber')}:{attempt}"
                )
    return labels


class TextLog:
    """Renders entries with date separators and per-execution headers."""

    def __init__(self, labels: dict[str, str], tty: bool) -> None:
        self.labels = labels
        self.tty = tty
        self.date: str | None = None
        self.execution: str | None = None

    def lines(self, entry: dict[str, Any]) -> list[str]:
        out: list[str] = []
        stamp = datetime.fromtimestamp((entry.get("timestamp") or 0) / 1000, UTC)
        date = stamp.strftime("%Y-%m-%d")
        if date != self.date:
            self.date = date
            self.execution = None
            out.append(
                click.style(f"── {date} UTC ──", dim=True) if self.tty else f"-- {date} UTC --"
            )
        execution_id = str(entry.get("executionId"))
        if execution_id != self.execution:
            self.execution = execution_id
            out.append(
                click.style(self.labels.get(execution_id, f"exec:{execution_id}"), bold=True)
            )
        level = entry.get("level")
        index = level if isinstance(level, int) and 0 <= level < len(LEVELS) else 2
        time_text = stamp.strftime("%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}"
        marker = click.style("•", fg=_LEVEL_COLOURS[index]) if self.tty else LEVELS[index].ljust(6)
        out.append(f"{time_text} {marker} {format_message(entry)}")
        return out


@click.command(
    "logs",
    cls=grammar.Command,
    arg_rule=grammar.Args(1, 2),
    help="Show the logs of a run (optionally one execution: <step-id>:<attempt>)",
)
@click.argument("run_id")
@click.argument("execution", required=False)
@flag("--follow", "-f", kind="bool", help="Keep streaming new entries")
@flag("--from", "from_", kind="int", help="Only entries from this time (unix ms)")
@click.pass_obj
def logs(
    obj: Context, run_id: str, execution: str | None, follow: bool, from_: int | None
) -> output.Rendered:
    workspace_id, run = get_run(obj, run_id)
    query = {"run": run_id, "workspaces": workspace_id}
    if execution:
        step_id, sep, attempt = execution.rpartition(":")
        if not sep or not step_id:
            raise errors.ConfigError(
                f'invalid step:attempt format "{execution}" (expected step-id:attempt)'
            )
        step = ((run or {}).get("steps") or {}).get(step_id)
        if not isinstance(step, dict):
            raise errors.ClientError(f'step "{step_id}" not found in run')
        found = (step.get("executions") or {}).get(attempt)
        if not isinstance(found, dict):
            raise errors.ClientError(f'attempt {attempt} not found for step "{step_id}"')
        query["execution"] = str(found.get("executionId"))
    if from_ and from_ > 0:
        query["from"] = str(from_)
    text = TextLog(execution_labels(run), output.stdout_is_tty())
    if follow:
        try:
            for batch in obj.client.follow_logs(query):
                for entry in batch:
                    if obj.json_output:
                        click.echo(output.compact(entry_json(entry)))
                    else:
                        for line in text.lines(entry):
                            click.echo(line)
        except KeyboardInterrupt:
            pass
        return None
    with prefixed("failed to fetch logs"):
        result = obj.client.get_logs(query) or {}
    entries = [e for e in result.get("logs") or [] if isinstance(e, dict)]
    if obj.json_output:
        return output.Json(
            {"logs": [entry_json(e) for e in entries], "cursor": str(result.get("cursor") or "")},
            sort_keys=False,
        )
    lines: list[str] = []
    for entry in entries:
        lines += text.lines(entry)
    return output.Text(lines)


def register(root: click.Group) -> None:
    root.add_command(logs)
