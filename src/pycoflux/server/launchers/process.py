"""The process launcher: ``<cli> worker <modules...>`` as a child of the server.

The command runs through ``/bin/sh -c "exec ..."`` (arguments shell-quoted) in the
pool's directory, in a session of its own so a stop reaches the whole process group.
Its output goes to ``<project>/workers/<worker id>.log``; the tail of that file is what
a deactivated worker shows. The child inherits the server's environment minus every
``COFLUX_*`` variable (the server's secrets must not reach workers) and ``PORT``.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from pycoflux.server.launchers import LaunchError, LaunchRequest, PollResult, tail

STRIPPED = ("PORT",)


def executable(cli_path: str) -> str:
    """The CLI to run: the configured path, looked up on PATH; for the default, also the
    ``coflux`` next to the running interpreter (a virtual environment not on PATH)."""
    found = shutil.which(cli_path)
    if found:
        return found
    sibling = Path(sys.executable).parent / "coflux"
    if cli_path == "coflux" and sibling.exists():
        return str(sibling)
    return cli_path


def inherited_env() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith("COFLUX_") and key not in STRIPPED
    }


class ProcessLauncher:
    def __init__(self, cli_path: str, log_dir: Path) -> None:
        self._cli_path = cli_path
        self._log_dir = log_dir
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    async def launch(self, request: LaunchRequest) -> dict[str, Any]:
        return await asyncio.to_thread(self._launch, request)

    def _launch(self, request: LaunchRequest) -> dict[str, Any]:
        directory = Path(str(request.launcher.get("directory") or "."))
        if not directory.is_dir():
            raise LaunchError("launch_process_failed")
        command = "exec " + shlex.join([executable(self._cli_path), "worker", *request.modules])
        self._log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self._log_dir / f"{request.worker_id}.log"
        try:
            with open(log_path, "ab") as log:
                child = subprocess.Popen(
                    ["/bin/sh", "-c", command],
                    cwd=directory,
                    env={**inherited_env(), **request.env},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError:
            raise LaunchError("launch_process_failed") from None
        self._children[child.pid] = child
        return {"pid": child.pid, "log": str(log_path)}

    async def poll(self, launcher: dict[str, Any], data: dict[str, Any]) -> PollResult:
        return await asyncio.to_thread(self._poll, data)

    def _poll(self, data: dict[str, Any]) -> PollResult:
        pid = int(data["pid"])
        child = self._children.get(pid)
        if child is None:
            # Started by an earlier run of the server: all we can tell is whether it lives.
            if _alive(pid):
                return PollResult(running=True)
            return PollResult(running=False, error="process_lost", logs=_log_tail(data))
        code = child.poll()
        if code is None:
            return PollResult(running=True)
        del self._children[pid]
        return PollResult(
            running=False, error=None if code == 0 else f"exit_code:{code}", logs=_log_tail(data)
        )

    async def stop(self, launcher: dict[str, Any], data: dict[str, Any]) -> None:
        try:
            os.killpg(int(data["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass  # already gone


def _alive(pid: int) -> bool:
    """Whether a process we did not start (an earlier server's child) still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # An exited child nobody reaped (no init in a container) still answers signal 0.
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _log_tail(data: dict[str, Any]) -> str | None:
    try:
        with open(str(data["log"]), "rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - 16 * 1024))
            return tail(log.read().decode(errors="replace"))
    except (OSError, KeyError):
        return None
