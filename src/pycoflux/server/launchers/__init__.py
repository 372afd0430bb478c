"""Launchers: how the server starts, watches and stops the workers of pools.

The core decides when to launch, poll or stop (``orchestration/handlers/pools.py``); the
project host performs those effects with the launcher of the pool's type, off the
writer thread, and hands the outcome back as a command. A launcher call that raises
is reported as ``launch_crashed`` (launch), a poll error (poll) or a stop error (stop).

Environment of a launched worker (``auth-and-config.md`` §11): ``COFLUX_HOST``,
``COFLUX_PROJECT``, ``COFLUX_WORKSPACE`` (the workspace's name), ``COFLUX_SESSION``,
then ``COFLUX_WORKER_ADAPTER``, ``COFLUX_WORKER_CONCURRENCY`` and ``COFLUX_SECURE`` when
the launcher sets them, then the launcher's own ``env``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pycoflux.orchestration import commands, effects
from pycoflux.server import config as config_module

log = logging.getLogger("pycoflux.server.launchers")

LOG_LINES = 20
LOG_BYTES = 1024


class LaunchError(Exception):
    """A launch that failed in an expected way; the message is the worker's error."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchRequest:
    worker_id: str
    launcher: dict[str, Any]  # the pool's launcher object (camelCase fields)
    modules: tuple[str, ...]
    env: dict[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class PollResult:
    """Running, or exited with an error (None for a clean exit) and the end of its log."""

    running: bool
    error: str | None = None
    logs: str | None = None


class Launcher(Protocol):
    async def launch(self, request: LaunchRequest) -> dict[str, Any]:
        """Start the worker; returns the handle data later calls get. Raises LaunchError."""
        ...

    async def poll(self, launcher: dict[str, Any], data: dict[str, Any]) -> PollResult: ...

    async def stop(self, launcher: dict[str, Any], data: dict[str, Any]) -> None: ...


def tail(text: str) -> str | None:
    """The last lines of a worker's output, as much as fits the stored limit."""
    lines = text.splitlines()[-LOG_LINES:]
    kept = "\n".join(lines).encode()[-LOG_BYTES:].decode(errors="ignore")
    return kept or None


def server_host(config: config_module.ServerConfig, project: str) -> str:
    """The host launched workers connect to when the launcher does not name one."""
    public = config.public_host
    if public:
        return public.replace("%", project) if public.startswith("%") else public
    return "localhost" if config.port in (80, 443) else f"localhost:{config.port}"


def worker_env(
    *,
    launcher: Mapping[str, Any],
    host: str,
    project: str,
    workspace: str,
    session: str,
) -> dict[str, str]:
    env = {
        "COFLUX_HOST": str(launcher.get("serverHost") or host),
        "COFLUX_PROJECT": project,
        "COFLUX_WORKSPACE": workspace,
        "COFLUX_SESSION": session,
    }
    if launcher.get("adapter"):
        env["COFLUX_WORKER_ADAPTER"] = ",".join(launcher["adapter"])
    if launcher.get("concurrency") is not None:
        env["COFLUX_WORKER_CONCURRENCY"] = str(launcher["concurrency"])
    if isinstance(launcher.get("serverSecure"), bool):
        env["COFLUX_SECURE"] = "true" if launcher["serverSecure"] else "false"
    env.update(launcher.get("env") or {})
    return env


class Launchers:
    """The launchers of one server, by type, created on first use."""

    def __init__(self, config: config_module.ServerConfig, log_dir: Path) -> None:
        self.config = config
        self._log_dir = log_dir
        self._launchers: dict[str, Launcher] = {}

    def get(self, launcher_type: str) -> Launcher:
        found = self._launchers.get(launcher_type)
        if found is None:
            found = self._launchers[launcher_type] = self._create(launcher_type)
        return found

    def _create(self, launcher_type: str) -> Launcher:
        if launcher_type == "process":
            from pycoflux.server.launchers import process

            return process.ProcessLauncher(self.config.cli_path, self._log_dir)
        if launcher_type == "docker":
            from pycoflux.server.launchers.docker import DockerLauncher

            return DockerLauncher()
        if launcher_type == "kubernetes":
            try:
                from pycoflux.server.launchers.kubernetes import KubernetesLauncher
            except ImportError:
                log.error("the kubernetes launcher needs: pip install 'pycoflux[kubernetes]'")
                raise LaunchError("launch_unavailable") from None
            return KubernetesLauncher()
        raise LaunchError(f"unknown launcher type {launcher_type!r}")


async def perform(
    launchers: Launchers | None,
    project: str,
    effect: effects.Launch | effects.PollWorker | effects.HaltWorker,
) -> commands.Command:
    """Carry out a launcher effect; returns the command that reports its outcome."""
    worker_id = effect.worker_id
    if isinstance(effect, effects.Launch):
        try:
            if launchers is None:
                raise LaunchError("launch_unavailable")
            request = LaunchRequest(
                worker_id=worker_id,
                launcher=effect.launcher,
                modules=effect.modules,
                env=worker_env(
                    launcher=effect.launcher,
                    host=server_host(launchers.config, project),
                    project=project,
                    workspace=effect.workspace,
                    session=effect.session,
                ),
            )
            data = await launchers.get(str(effect.launcher["type"])).launch(request)
        except LaunchError as e:
            return commands.LaunchFailed(worker_id=worker_id, error=str(e))
        except Exception:
            log.exception("launching worker %s failed", worker_id)
            return commands.LaunchFailed(worker_id=worker_id, error="launch_crashed")
        return commands.LaunchSucceeded(worker_id=worker_id, data=data)
    if isinstance(effect, effects.PollWorker):
        try:
            if launchers is None:
                raise LaunchError("launch_unavailable")
            found = await launchers.get(str(effect.launcher["type"])).poll(
                effect.launcher, effect.data
            )
        except Exception:
            log.exception("polling worker %s failed", worker_id)
            return commands.WorkerPolled(worker_id=worker_id, running=False, poll_error=True)
        return commands.WorkerPolled(
            worker_id=worker_id, running=found.running, error=found.error, logs=found.logs
        )
    try:
        if launchers is None:
            raise LaunchError("launch_unavailable")
        await launchers.get(str(effect.launcher["type"])).stop(effect.launcher, effect.data)
    except Exception as e:
        log.warning("stopping worker %s failed: %s", worker_id, e)
        return commands.WorkerStopped(worker_id=worker_id, error=str(e) or type(e).__name__)
    return commands.WorkerStopped(worker_id=worker_id)
