"""``coflux assets inspect|download`` (cli.md §4.11)."""

from __future__ import annotations

import fnmatch
import os
import shutil
from pathlib import Path
from typing import Any

import click

from pycoflux import errors
from pycoflux.cli import blobstore, grammar, output, values
from pycoflux.cli.context import Context
from pycoflux.cli.grammar import flag


@click.group("assets", cls=grammar.Group, help="Inspect and download assets")
def assets() -> None:
    pass


def matches(pattern: str, path: str) -> bool:
    """Shell glob on the whole path, plus ``prefix/**/name`` matching at any depth."""
    if fnmatch.fnmatchcase(path, pattern):
        return True
    if pattern.count("**") == 1:
        before, after = pattern.split("**")
        after = after.strip("/")
        if path.startswith(before) and (
            not after or fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], after)
        ):
            return True
    return False


def get_asset(obj: Context, asset_id: str) -> dict[str, Any]:
    try:
        found = obj.client.topic(f"asset/{asset_id}")
    except errors.ClientError:
        raise errors.ClientError(f"asset '{asset_id}' not found") from None
    if not isinstance(found, dict):
        raise errors.ClientError(f"asset '{asset_id}' not found")
    return found


def selected(asset: dict[str, Any], match: str | None) -> dict[str, dict[str, Any]]:
    entries = asset.get("entries") or {}
    return {
        path: entry
        for path, entry in sorted(entries.items())
        if isinstance(entry, dict) and (not match or matches(match, path))
    }


@assets.command(
    "inspect", cls=grammar.Command, arg_rule=grammar.exact(1), help="Show an asset's entries"
)
@click.argument("asset_id")
@flag("--match", help="Only entries whose path matches this glob")
@click.pass_obj
def inspect(obj: Context, asset_id: str, match: str | None) -> output.Rendered:
    asset = get_asset(obj, asset_id)
    if obj.json_output:
        return output.Json(asset)
    entries = selected(asset, match)
    lines = [f"Name: {asset.get('name') or '(untitled)'}"]
    if match:
        lines.append(f"Matched {len(entries)} of {len(asset.get('entries') or {})} entries.")
    if not entries:
        lines.append("No entries to display." if match else "No entries found.")
        return output.Text(lines)
    rows = [
        [
            path,
            values.human_size(entry.get("size") or 0),
            str((entry.get("metadata") or {}).get("type") or "(unknown)"),
            str(entry.get("blobKey")),
        ]
        for path, entry in entries.items()
    ]
    lines += output.format_table(["Path", "Size", "Type", "Blob key"], rows)
    return output.Text(lines)


@assets.command(
    "download", cls=grammar.Command, arg_rule=grammar.exact(1), help="Download an asset's files"
)
@click.argument("asset_id")
@flag("--to", default=".", help="Destination directory")
@flag("--force", kind="bool", help="Overwrite existing files")
@flag("--match", help="Only entries whose path matches this glob")
@click.pass_obj
def download(
    obj: Context, asset_id: str, to: str | None, force: bool, match: str | None
) -> output.Rendered:
    asset = get_asset(obj, asset_id)
    entries = selected(asset, match)
    if not entries:
        return output.Text.of("Nothing to download")
    root = Path(to or ".")
    targets = {path: root / path for path in entries}
    for path, target in targets.items():
        # Entry paths come from the server; never let one escape the destination.
        if not target.resolve().is_relative_to(root.resolve()):
            raise errors.ClientError(f"invalid path in asset: {path}")
        if os.path.lexists(target):
            if not target.is_file() or target.is_symlink():
                raise errors.ClientError(f"cannot overwrite non-file: {target}")
            if not force:
                raise errors.ClientError(
                    f"file already exists at path: {target} (use --force to overwrite)"
                )
    total = sum(int(e.get("size") or 0) for e in entries.values())
    click.echo(f"Downloading {len(entries)} files ({values.human_size(total)})...")
    for path, entry in entries.items():
        target = targets[path]
        try:
            data = blobstore.fetch(obj, str(entry.get("blobKey")))
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.part")
            tmp.write_bytes(data)
            shutil.move(tmp, target)
        except (errors.CofluxError, OSError) as e:
            raise errors.ClientError(f"failed to download {path}: {e}") from None
        click.echo(f"  {path}")
    return output.Text.of("Download complete.")


def register(root: click.Group) -> None:
    root.add_command(assets)
