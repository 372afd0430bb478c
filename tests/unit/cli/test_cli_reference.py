"""docs/cli.md's command reference is generated from the click tree and must stay current.

Regenerate with: PYCOFLUX_UPDATE_DOCS=1 .venv/bin/pytest tests/unit/cli/test_cli_reference.py
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from pycoflux.cli import grammar
from pycoflux.cli.main import cli

DOC = Path(__file__).resolve().parents[3] / "docs" / "cli.md"
BEGIN = "<!-- BEGIN GENERATED REFERENCE -->"
END = "<!-- END GENERATED REFERENCE -->"


def _flag_rows(params: list[click.Parameter], *, persistent_only: bool = False) -> list[str]:
    rows = []
    for param in params:
        if not isinstance(param, grammar.Flag) or param.hidden:
            continue
        if persistent_only and not param.persistent:
            continue
        names = f"`--{param.long_name}`" + (f", `-{param.short_name}`" if param.short_name else "")
        shown = isinstance(param.default, str | int | float) and param.default is not False
        default = f"`{param.default}`" if shown else ""
        scope = " (inherited by subcommands)" if param.persistent else ""
        rows.append(f"| {names} | {param.kind} | {default} | {param.help or ''}{scope} |")
    return rows


def _arguments(command: click.Command) -> str:
    parts = []
    for param in command.params:
        if isinstance(param, click.Argument):
            name = param.human_readable_name.lower()
            text = f"<{name}>" + ("..." if param.nargs < 0 else "")
            parts.append(text if param.required else f"[{text}]")
    return " ".join(parts)


def _section(path: list[str], command: click.Command, out: list[str]) -> None:
    if command.hidden or path[-1] == "help":
        return
    if isinstance(command, click.Group):
        if len(path) > 1:
            out += [f"### `{' '.join(path)}`", "", command.help or "", ""]
            rows = _flag_rows(command.params, persistent_only=True)
            if rows:
                out += ["| Flag | Type | Default | Meaning |", "|---|---|---|---|", *rows, ""]
        for name in sorted(command.commands):
            _section([*path, name], command.commands[name], out)
        return
    usage = " ".join([*path, "[flags]", _arguments(command)]).strip()
    out += [f"#### `{' '.join(path)}`" if len(path) > 2 else f"### `{' '.join(path)}`", ""]
    out += [command.help or "", "", f"Usage: `{usage}`", ""]
    rule = getattr(command, "arg_rule", None)
    if isinstance(rule, grammar.Args):
        bounds = f"{rule.min}" if rule.max == rule.min else f"{rule.min}..{rule.max or 'n'}"
        out += [f"Positional arguments: {bounds}.", ""]
    for flags in getattr(command, "exclusive", ()):
        out += ["Mutually exclusive: " + ", ".join(f"`--{f}`" for f in flags) + ".", ""]
    for required in getattr(command, "required_flags", ()):
        out += [f"Required flag: `--{required}`.", ""]
    rows = _flag_rows(command.params)
    if rows:
        out += ["| Flag | Type | Default | Meaning |", "|---|---|---|---|", *rows, ""]


def render_reference() -> str:
    out = ["## Global flags", "", "Accepted anywhere on the command line.", ""]
    out += ["| Flag | Type | Default | Meaning |", "|---|---|---|---|", *_flag_rows(cli.params), ""]
    out += ["## Commands", ""]
    _section(["coflux"], cli, out)
    return "\n".join(out).rstrip() + "\n"


def test_reference_is_current() -> None:
    text = DOC.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    expected = f"{head}{BEGIN}\n{render_reference()}{END}{tail}"
    if os.environ.get("PYCOFLUX_UPDATE_DOCS"):
        DOC.write_text(expected)
    assert text == expected, "docs/cli.md is stale; regenerate it (see module docstring)"


def test_every_command_is_documented() -> None:
    text = DOC.read_text()

    def walk(path: list[str], command: click.Command) -> None:
        if command.hidden or path[-1] == "help":
            return
        assert f"`{' '.join(path)}" in text, path
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk([*path, name], sub)

    walk(["coflux"], cli)
