"""Cobra-style command-line grammar on top of click.

The upstream CLI is a Cobra program, and scripts (including the upstream test-suite) rely on
its grammar: global flags anywhere on the line, ``--flag=true`` for booleans, comma-split
"slice" flags, values that start with ``-``, and Cobra's exact error texts. click parses
differently, so the root group rewrites argv first: it finds the command path, parses every
flag against the flags visible to that command (local flags shadow persistent ones), applies
Cobra's checks, and hands click a canonical argv in which each option sits right after the
command that owns it and all positionals follow ``--``. click never sees an unknown flag.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import click

FC = TypeVar("FC", bound=Callable[..., Any] | click.Command)
Kind = Literal["string", "bool", "int", "float", "duration", "slice", "array"]

_BOOL_WORDS = {
    "1": True,
    "t": True,
    "T": True,
    "true": True,
    "TRUE": True,
    "True": True,
    "0": False,
    "f": False,
    "F": False,
    "false": False,
    "FALSE": False,
    "False": False,
}
_NEGATIVE_NUMBER = re.compile(r"^-\d[\d.eE+-]*$")


class UsageFailure(click.ClickException):
    """A command-line error: the message on stderr, optionally followed by the usage text."""

    exit_code = 1

    def __init__(self, message: str, usage: str | None = None) -> None:
        super().__init__(message)
        self.usage = usage

    def show(self, file: Any = None) -> None:
        click.echo(self.message, err=True)
        if self.usage:
            click.echo(self.usage, err=True)


class Flag(click.Option):
    """A click option that also knows its Cobra kind and whether subcommands inherit it."""

    def __init__(
        self,
        param_decls: Sequence[str],
        *,
        kind: Kind = "string",
        persistent: bool = False,
        **attrs: Any,
    ) -> None:
        self.kind: Kind = kind
        self.persistent = persistent
        if kind == "bool":
            attrs.setdefault("is_flag", True)
            attrs.setdefault("default", False)
        elif kind in ("slice", "array"):
            attrs.setdefault("multiple", True)
        elif kind == "int":
            attrs.setdefault("type", int)
        elif kind == "float":
            attrs.setdefault("type", float)
        super().__init__(param_decls, **attrs)

    @property
    def long_name(self) -> str:
        return next(o[2:] for o in self.opts if o.startswith("--"))

    @property
    def short_name(self) -> str | None:
        return next((o[1:] for o in self.opts if not o.startswith("--")), None)

    @property
    def takes_value(self) -> bool:
        return self.kind != "bool"


def flag(
    *decls: str, kind: Kind = "string", persistent: bool = False, **attrs: Any
) -> Callable[[FC], FC]:
    """Declare a Cobra-style flag (see ``Flag``)."""
    return click.option(*decls, cls=Flag, kind=kind, persistent=persistent, **attrs)


@dataclass(frozen=True, slots=True)
class Args:
    """A Cobra positional-argument rule (``None`` bounds are open)."""

    min: int = 0
    max: int | None = None

    def check(self, count: int) -> str | None:
        lo, hi = self.min, self.max
        if hi is not None and lo == hi and count != lo:
            return f"accepts {lo} arg(s), received {count}"
        if hi is not None and lo > 0 and lo != hi and not lo <= count <= hi:
            return f"accepts between {lo} and {hi} arg(s), received {count}"
        if hi is None and count < lo:
            return f"requires at least {lo} arg(s), only received {count}"
        if lo == 0 and hi is not None and count > hi:
            return f"accepts at most {hi} arg(s), received {count}"
        return None


def exact(n: int) -> Args:
    return Args(n, n)


class Command(click.Command):
    """A leaf command with Cobra's argument rule, required flags and exclusive flag groups."""

    def __init__(
        self,
        *args: Any,
        arg_rule: Args | None = None,
        required_flags: Sequence[str] = (),
        exclusive: Sequence[Sequence[str]] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.arg_rule = arg_rule
        self.required_flags = tuple(required_flags)
        self.exclusive = tuple(tuple(g) for g in exclusive)


class Group(click.Group):
    """A command group; ``coflux runs`` alone (or with an unknown word) prints its help."""

    command_class = Command
    group_class = type


@dataclass
class _Parsed:
    path: list[click.Command]
    names: list[str]
    values: dict[int, Any] = field(default_factory=dict)  # id(Flag) -> parsed value
    owners: dict[int, tuple[int, Flag]] = field(default_factory=dict)  # id -> (path index, flag)
    order: list[int] = field(default_factory=list)
    positionals: list[str] = field(default_factory=list)
    occurrences: list[str] = field(default_factory=list)  # long names, in command-line order
    help: bool = False


def _visible(path: Sequence[click.Command]) -> list[tuple[int, Flag]]:
    """Flags usable at the end of ``path``: local ones first, then inherited, nearest first."""
    found: list[tuple[int, Flag]] = []
    last = len(path) - 1
    for index in range(last, -1, -1):
        for param in path[index].params:
            if isinstance(param, Flag) and (index == last or param.persistent):
                found.append((index, param))
    return found


def _lookup(
    flags: Sequence[tuple[int, Flag]], *, long: str | None = None, short: str | None = None
) -> tuple[int, Flag] | None:
    for entry in flags:
        f = entry[1]
        if (long is not None and f.long_name == long) or (
            short is not None and f.short_name == short
        ):
            return entry
    return None


def _is_flag_token(token: str) -> bool:
    return token.startswith("-") and token != "-" and not _NEGATIVE_NUMBER.match(token)


def _subcommand(node: click.Command, name: str) -> click.Command | None:
    if isinstance(node, click.Group):
        return node.commands.get(name)
    return None


def _find_path(
    root: click.Group, argv: Sequence[str]
) -> tuple[list[click.Command], list[str], set[int]]:
    """Locate the command path, skipping flags (and the values they consume)."""
    path: list[click.Command] = [root]
    names = ["coflux"]
    used: set[int] = set()
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            break
        if _is_flag_token(token):
            flags = _visible(path)
            if token.startswith("--"):
                name, eq, _ = token[2:].partition("=")
                entry = _lookup(flags, long=name)
                consumes = not eq and entry is not None and entry[1].takes_value
            else:
                consumes = False
                for pos, char in enumerate(token[1:], start=1):
                    entry = _lookup(flags, short=char)
                    if entry is not None and entry[1].takes_value:
                        consumes = pos == len(token) - 1
                        break
            i += 2 if consumes else 1
            continue
        child = _subcommand(path[-1], token)
        if child is None:
            break
        path.append(child)
        names.append(token)
        used.add(i)
        i += 1
    return path, names, used


def _flag_label(f: Flag) -> str:
    short = f.short_name
    return f"-{short}, --{f.long_name}" if short else f"--{f.long_name}"


def _convert(f: Flag, raw: str) -> Any:
    def bad(reason: str) -> UsageFailure:
        return UsageFailure(f'invalid argument "{raw}" for "{_flag_label(f)}" flag: {reason}')

    if f.kind == "bool":
        if raw not in _BOOL_WORDS:
            raise bad(f'strconv.ParseBool: parsing "{raw}": invalid syntax')
        return _BOOL_WORDS[raw]
    if f.kind == "int":
        try:
            return int(raw, 10)
        except ValueError:
            raise bad(f'strconv.ParseInt: parsing "{raw}": invalid syntax') from None
    if f.kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise bad(f'strconv.ParseFloat: parsing "{raw}": invalid syntax') from None
    if f.kind == "duration":
        try:
            parse_duration(raw)
        except ValueError as e:
            raise bad(str(e)) from None
    return raw


def split_csv(raw: str) -> list[str]:
    """Split one slice-flag occurrence as a CSV record (quotes may protect commas)."""
    if raw == "":
        return []
    import csv

    try:
        return next(csv.reader([raw], strict=True))
    except (csv.Error, StopIteration) as e:
        raise UsageFailure(f'invalid argument "{raw}": {e}') from None


class _Parser:
    def __init__(self, root: click.Group, argv: Sequence[str]) -> None:
        self.root = root
        self.argv = list(argv)

    def usage(self, parsed: _Parsed) -> str:
        ctx: click.Context | None = None
        for name, cmd in zip(parsed.names, parsed.path, strict=True):
            ctx = cmd.make_context(name, [], parent=ctx, resilient_parsing=True)
        assert ctx is not None
        return parsed.path[-1].get_help(ctx)

    def set_value(self, parsed: _Parsed, entry: tuple[int, Flag], raw: str | None) -> None:
        f = entry[1]
        key = id(f)
        parsed.occurrences.append(f.long_name)
        parsed.owners[key] = entry
        if key not in parsed.order:
            parsed.order.append(key)
        if f.kind == "bool":
            parsed.values[key] = True if raw is None else _convert(f, raw)
        elif f.kind == "slice":
            assert raw is not None
            parsed.values.setdefault(key, []).extend(split_csv(raw))
        elif f.kind == "array":
            assert raw is not None
            parsed.values.setdefault(key, []).append(raw)
        else:
            assert raw is not None
            parsed.values[key] = _convert(f, raw)

    def parse(self) -> _Parsed:
        path, names, used = _find_path(self.root, self.argv)
        parsed = _Parsed(path=path, names=names)
        flags = _visible(path)
        tokens = [t for i, t in enumerate(self.argv) if i not in used]
        i = 0
        while i < len(tokens):
            token = tokens[i]
            i += 1
            if token == "--":
                parsed.positionals.extend(tokens[i:])
                break
            if not _is_flag_token(token):
                parsed.positionals.append(token)
                continue
            if token.startswith("--"):
                name, eq, inline = token[2:].partition("=")
                if name == "help":
                    parsed.help = True
                    continue
                entry = _lookup(flags, long=name)
                if entry is None:
                    raise UsageFailure(f"unknown flag: --{name}", self.usage(parsed))
                if eq:
                    self.set_value(parsed, entry, inline)
                elif entry[1].takes_value:
                    if i >= len(tokens):
                        raise UsageFailure(f"flag needs an argument: --{name}", self.usage(parsed))
                    self.set_value(parsed, entry, tokens[i])
                    i += 1
                else:
                    self.set_value(parsed, entry, None)
                continue
            cluster = token[1:]
            pos = 0
            while pos < len(cluster):
                char = cluster[pos]
                pos += 1
                if char == "h":
                    parsed.help = True
                    continue
                entry = _lookup(flags, short=char)
                if entry is None:
                    raise UsageFailure(
                        f"unknown shorthand flag: '{char}' in {token}", self.usage(parsed)
                    )
                rest = cluster[pos:]
                if entry[1].takes_value:
                    if rest:
                        self.set_value(parsed, entry, rest.removeprefix("="))
                    elif i < len(tokens):
                        self.set_value(parsed, entry, tokens[i])
                        i += 1
                    else:
                        raise UsageFailure(
                            f"flag needs an argument: '{char}' in -{char}", self.usage(parsed)
                        )
                    break
                if rest.startswith("="):
                    self.set_value(parsed, entry, rest[1:])
                    break
                self.set_value(parsed, entry, None)
        return parsed

    def canonical(self, parsed: _Parsed) -> list[str]:
        leaf = parsed.path[-1]
        out: list[str] = []
        for index, cmd in enumerate(parsed.path):
            if index:
                out.append(parsed.names[index])
            for key in parsed.order:
                owner, f = parsed.owners[key]
                if owner != index:
                    continue
                value = parsed.values[key]
                if f.kind == "bool":
                    if value:
                        out.append(f"--{f.long_name}")
                elif isinstance(value, list):
                    out.extend(f"--{f.long_name}={v}" for v in value)
                else:
                    out.append(f"--{f.long_name}={value}")
            if cmd is leaf:
                break
        out.append("--")
        out.extend(parsed.positionals[: _accepted(leaf, len(parsed.positionals))])
        return out


def _accepted(cmd: click.Command, count: int) -> int:
    """How many positionals click should see: extras are dropped when there is no rule."""
    limit = 0
    for param in cmd.params:
        if isinstance(param, click.Argument):
            if param.nargs < 0:
                return count
            limit += param.nargs
    return min(limit, count)


ORDER_KEY = "pycoflux.grammar.order"


def option_order() -> list[str]:
    """Long names of the flags given to the running command, in command-line order.

    click groups repeated options by name; commands whose semantics depend on the
    interleaving (``pools create --set ... --modules ...``) read the order from here.
    """
    ctx = click.get_current_context(silent=True)
    return list(ctx.meta.get(ORDER_KEY, ())) if ctx is not None else []


def normalise(
    root: click.Group, argv: Sequence[str], meta: dict[str, Any] | None = None
) -> list[str]:
    """Rewrite a Cobra-style argv into the canonical form click parses."""
    parser = _Parser(root, argv)
    parsed = parser.parse()
    if meta is not None:
        meta[ORDER_KEY] = tuple(parsed.occurrences)
    leaf = parsed.path[-1]
    if len(parsed.path) >= 2 and parsed.names[1] == "help" and not parsed.help:
        # `coflux help runs result` == `coflux runs result --help`
        target, names, _ = _find_path(root, parsed.positionals)
        return [*names[1:], "--help"] if len(target) > 1 else ["--help"]
    if parsed.help:
        return [*parsed.names[1:], "--help"]
    if isinstance(leaf, click.Group):
        version = _lookup(_visible(parsed.path), long="version")
        if version is not None and parsed.values.get(id(version[1])):
            return ["--version"]
        if len(parsed.path) == 1 and parsed.positionals:
            raise UsageFailure(f'unknown command "{parsed.positionals[0]}" for "coflux"')
        return [*parsed.names[1:], "--help"]
    assert isinstance(leaf, Command)
    missing = [n for n in leaf.required_flags if not _is_set(parsed, n)]
    if missing:
        quoted = " ".join(f'"{n}"' for n in missing)
        raise UsageFailure(f"required flag(s) {quoted} not set")
    for group in leaf.exclusive:
        given = [n for n in group if _is_set(parsed, n)]
        if len(given) > 1:
            listed = " ".join(group)
            raise UsageFailure(
                f"if any flags in the group [{listed}] are set none of the others can be; "
                f"[{' '.join(given)}] were all set"
            )
    if leaf.arg_rule is not None:
        problem = leaf.arg_rule.check(len(parsed.positionals))
        if problem:
            raise UsageFailure(problem, parser.usage(parsed))
    return parser.canonical(parsed)


def _is_set(parsed: _Parsed, long_name: str) -> bool:
    return any(f.long_name == long_name for _, f in parsed.owners.values())


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """Parse a Go duration (``2m``, ``1m30s``, ``0``) into seconds."""
    body = text
    sign = 1.0
    if body[:1] in "+-" and body:
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            if re.match(r"(\d+(?:\.\d*)?|\.\d+)", body[pos:]):
                unit = re.sub(r"^[\d.]+", "", body[pos:])
                if unit:
                    raise ValueError(f'time: unknown unit "{unit}" in duration "{text}"')
                raise ValueError(f'time: missing unit in duration "{text}"')
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return sign * total
