"""Rendering: commands return one of these values and the root group prints it."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import click


@dataclass(frozen=True, slots=True)
class Json:
    """A JSON document. Server pass-through objects are sorted; CLI-built ones keep order."""

    value: Any
    sort_keys: bool = True
    exit_code: int = 0


@dataclass(frozen=True, slots=True)
class Text:
    """Plain text (one or more lines)."""

    lines: Sequence[str] = ()
    exit_code: int = 0

    @classmethod
    def of(cls, *lines: str, exit_code: int = 0) -> Text:
        return cls(lines, exit_code)


@dataclass(frozen=True, slots=True)
class Table:
    """Rows under a header; ``empty`` is printed instead when there are no rows."""

    headers: Sequence[str]
    rows: Sequence[Sequence[str]] = field(default_factory=list)
    empty: str | None = None
    exit_code: int = 0


Rendered = Json | Text | Table | None


def dumps(value: Any, *, sort_keys: bool = True) -> str:
    """2-space indented JSON, non-ASCII kept as UTF-8 (like the Go encoder)."""
    return json.dumps(value, indent=2, sort_keys=sort_keys, ensure_ascii=False)


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns, each padded to its widest cell plus two spaces (tabwriter style)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    return [
        "".join(cell.ljust(widths[i] + 2) for i, cell in enumerate(line))
        for line in [list(headers), *[list(r) for r in rows]]
    ]


def render(result: Rendered) -> int:
    """Print ``result`` to stdout and return the exit code it carries."""
    if result is None:
        return 0
    if isinstance(result, Json):
        click.echo(dumps(result.value, sort_keys=result.sort_keys))
    elif isinstance(result, Text):
        for line in result.lines:
            click.echo(line)
    elif not result.rows:
        if result.empty is not None:
            click.echo(result.empty)
    else:
        for line in format_table(result.headers, result.rows):
            click.echo(line)
    return result.exit_code


def stdout_is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def echo_err(message: str) -> None:
    click.echo(message, err=True)
