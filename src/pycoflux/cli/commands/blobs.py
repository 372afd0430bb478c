"""``coflux blobs get`` (cli.md §4.12)."""

from __future__ import annotations

import sys

import click

from pycoflux import errors
from pycoflux.cli import blobstore, grammar, output
from pycoflux.cli.context import Context
from pycoflux.cli.grammar import flag


@click.group("blobs", cls=grammar.Group, help="Read blobs")
def blobs() -> None:
    pass


@blobs.command("get", cls=grammar.Command, arg_rule=grammar.exact(1), help="Download a blob")
@click.argument("key")
# Shadows the global --output/-o: here it names a file (as upstream).
@flag("--output", "-o", "path", help="File to write (default: stdout)")
@click.pass_obj
def get(obj: Context, key: str, path: str | None) -> output.Rendered:
    try:
        data = blobstore.fetch(obj, key)
    except errors.CofluxError:
        raise errors.ClientError(f"blob not found: {key}") from None
    if path:
        with open(path, "wb") as fh:
            fh.write(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return None


def register(root: click.Group) -> None:
    root.add_command(blobs)
