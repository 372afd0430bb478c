"""Watch mode: notice writes to ``.py`` files under the working directory."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

_SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "venv", ".venv"})


def snapshot(root: Path) -> dict[str, int]:
    """Modification times of every ``.py`` file below ``root`` (blocking: use a thread)."""
    result: dict[str, int] = {}
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [
            d for d in subdirectories if not d.startswith(".") and d not in _SKIPPED_DIRS
        ]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                try:
                    result[path] = os.stat(path).st_mtime_ns
                except OSError:
                    continue
    return result


class SourceWatcher:
    """Polls for created or modified ``.py`` files (deletions are not a reload trigger)."""

    def __init__(self, root: Path, interval: float) -> None:
        self._root = root
        self._interval = interval
        self._baseline: dict[str, int] | None = None

    async def prime(self) -> None:
        self._baseline = await asyncio.to_thread(snapshot, self._root)

    async def wait_for_change(self) -> list[str]:
        if self._baseline is None:
            await self.prime()
        while True:
            await asyncio.sleep(self._interval)
            current = await asyncio.to_thread(snapshot, self._root)
            baseline = self._baseline or {}
            changed = [path for path, mtime in current.items() if baseline.get(path) != mtime]
            self._baseline = current
            if changed:
                return changed
