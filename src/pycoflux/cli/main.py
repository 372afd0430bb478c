"""The ``coflux`` command: the root group, its global flags, and the process entry point."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

import pycoflux
from pycoflux import errors
from pycoflux.cli import grammar, output
from pycoflux.cli.commands import (
    assets,
    blobs,
    inputs,
    login,
    logs,
    manifests,
    pools,
    queue,
    runs,
    server,
    sessions,
    submit,
    tokens,
    worker,
    workspaces,
)
from pycoflux.cli.context import Context, GlobalFlags


class CommandFailed(click.ClickException):
    """A command error: exactly the message on stderr, exit status 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(self.message, err=True)


class Root(grammar.Group):
    """Rewrites Cobra-style argv before click sees it; maps our errors to one stderr line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None and not ctx.resilient_parsing:
            args = grammar.normalise(self, args, ctx.meta)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.CofluxError as e:
            raise CommandFailed(str(e)) from e
        finally:
            if isinstance(ctx.obj, Context):
                ctx.obj.close()


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"coflux version {pycoflux.__version__}")
        ctx.exit(0)


@click.group(
    cls=Root,
    name="coflux",
    help="Coflux: workflow orchestration. Run workers, submit workflows and inspect runs.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@grammar.flag("--config", "-c", persistent=True, help="Config file path (default coflux.toml)")
@grammar.flag("--host", persistent=True, help="Server host[:port] (default localhost:7777)")
@grammar.flag("--project", persistent=True, help="Project (sent as X-Project)")
@grammar.flag("--token", persistent=True, help="Authentication token")
@grammar.flag("--team", "-t", persistent=True, help="Studio team (exchanges a Studio login)")
@grammar.flag("--workspace", "-w", persistent=True, help="Workspace name (default 'default')")
@grammar.flag("--log-level", persistent=True, help="Log level: debug, info, warn, error")
@grammar.flag("--output", "-o", persistent=True, help="Output format ('json' for JSON)")
@grammar.flag(
    "--version",
    "-v",
    kind="bool",
    is_eager=True,
    expose_value=False,
    callback=_print_version,
    help="Print the version",
)
@click.pass_context
def cli(ctx: click.Context, /, **flags: str | None) -> None:
    ctx.obj = Context(GlobalFlags(**flags))


@cli.result_callback()
def _render(result: output.Rendered, **_: Any) -> None:
    code = output.render(result)
    if code:
        click.get_current_context().exit(code)


@cli.command("help", cls=grammar.Command, help="Help about any command")
def _help() -> None:  # the grammar turns `coflux help X` into `coflux X --help`
    click.echo(click.get_current_context().find_root().get_help())


for _module in (
    worker,
    submit,
    runs,
    server,
    workspaces,
    manifests,
    pools,
    tokens,
    assets,
    blobs,
    logs,
    sessions,
    queue,
    inputs,
    login,
):
    _module.register(cli)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=list(sys.argv[1:] if argv is None else argv), prog_name="coflux")
