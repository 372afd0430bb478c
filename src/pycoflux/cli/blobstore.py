"""Blob reads through the configured stores, with the shared on-disk cache (cli.md §3.5)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from pycoflux.cli.context import Context

_KEY = re.compile(r"^[0-9a-f]{8,128}$")


def cache_path(key: str) -> Path | None:
    if not _KEY.match(key):
        return None  # never build paths from keys we didn't expect
    return Path(tempfile.gettempdir()) / "coflux-cache" / "blobs" / key[:2] / key[2:4] / key


def stores(ctx: Context) -> list[dict[str, Any]]:
    configured = ctx.raw("blobs.stores")
    if isinstance(configured, list):
        return [s for s in configured if isinstance(s, dict)]
    return []


def fetch(ctx: Context, key: str) -> bytes:
    """The blob's bytes; raises ``ClientError`` when no store has it."""
    path = cache_path(key)
    if path is not None and path.is_file():
        return path.read_bytes()
    data = ctx.client.get_blob(key, stores(ctx) or None)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError:
            pass  # the cache is an optimisation only
    return data
