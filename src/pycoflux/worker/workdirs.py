"""Per-execution working directories, recycled when an execution leaves its own empty.

Every execution gets an empty directory of its own (the SDK ``chdir``s into it). Creating
and removing one costs two journaled metadata updates, a sizeable share of the worker's
time per trivial task, so a directory that an execution left empty, as nearly all do, is
kept for a later execution instead. One that holds anything, or was made into anything but
a private directory (mode, type), is removed as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import tempfile

PREFIX = "coflux-exec-"
_MODE = 0o700  # what mkdtemp creates


class WorkDirs:
    """Hands out empty private directories; keeps up to ``keep`` returned ones for reuse."""

    def __init__(self, *, keep: int) -> None:
        self._keep = max(keep, 0)
        self._free: list[str] = []
        self._closed = False

    @property
    def idle(self) -> int:
        """Directories kept for reuse."""
        return len(self._free)

    def acquire(self) -> str:
        """An empty directory for one execution; raises ``OSError``."""
        if self._free:
            return self._free.pop()
        return tempfile.mkdtemp(prefix=PREFIX)

    async def release(self, path: str) -> None:
        """The execution is over: keep the directory if it is as it was handed out, else remove it."""
        if not self._closed and len(self._free) < self._keep and _pristine(path):
            self._free.append(path)
            return
        try:
            os.rmdir(path)  # usually empty: no need for a thread
        except FileNotFoundError:
            pass
        except OSError:
            await asyncio.to_thread(shutil.rmtree, path, True)

    def close(self) -> None:
        """Remove the kept directories (they are empty); later releases remove theirs."""
        self._closed = True
        free, self._free = self._free, []
        for path in free:
            with contextlib.suppress(OSError):
                os.rmdir(path)


def _pristine(path: str) -> bool:
    """A private, empty, real directory (not a symlink to one)."""
    try:
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or stat.S_IMODE(info.st_mode) != _MODE:
            return False
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except OSError:
        return False
