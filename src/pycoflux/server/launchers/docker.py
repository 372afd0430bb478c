"""The Docker launcher: one container per worker, through the Docker Engine API.

The container runs the pool's ``image`` with the module list as its command, on the
host's network (so ``localhost`` reaches the server as it does for a process worker),
with the worker environment. ``dockerHost`` picks the engine (default: the usual
``DOCKER_HOST`` / local socket). Calls use the ``docker`` SDK, in a thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

import docker  # type: ignore[import-untyped]
from docker import errors as docker_errors

from pycoflux.server.launchers import LaunchError, LaunchRequest, PollResult, tail

STOP_TIMEOUT = 60  # seconds the engine waits after SIGTERM before it kills
LABEL = "io.coflux.worker"


def _client(launcher: dict[str, Any]) -> Any:
    host = launcher.get("dockerHost")
    if host:
        return docker.DockerClient(base_url=host, version="auto")
    return docker.from_env()


class DockerLauncher:
    def __init__(self) -> None:
        self._stopped: set[str] = set()

    async def launch(self, request: LaunchRequest) -> dict[str, Any]:
        return await asyncio.to_thread(self._launch, request)

    def _launch(self, request: LaunchRequest) -> dict[str, Any]:
        client = _client(request.launcher)
        try:
            container = client.containers.run(
                request.launcher["image"],
                command=list(request.modules),
                environment=request.env,
                network_mode="host",
                labels={LABEL: request.worker_id},
                detach=True,
            )
        except (docker_errors.ImageNotFound, docker_errors.NotFound):
            # run() pulls a missing image; this is the pull failing too.
            raise LaunchError("launch_image_not_found") from None
        finally:
            client.close()
        return {"containerId": container.id}

    async def poll(self, launcher: dict[str, Any], data: dict[str, Any]) -> PollResult:
        return await asyncio.to_thread(self._poll, launcher, data)

    def _poll(self, launcher: dict[str, Any], data: dict[str, Any]) -> PollResult:
        client = _client(launcher)
        container_id = str(data["containerId"])
        try:
            try:
                container = client.containers.get(container_id)
            except docker_errors.NotFound:
                stopped = container_id in self._stopped
                return PollResult(running=False, error=None if stopped else "process_lost")
            state = container.attrs.get("State") or {}
            if container.status not in ("exited", "dead"):
                return PollResult(running=True)
            if state.get("OOMKilled"):
                error: str | None = "oom_killed"
            else:
                code = int(state.get("ExitCode") or 0)
                error = None if code == 0 else f"exit_code:{code}"
            logs = container.logs(tail=20).decode(errors="replace")
            container.remove()
            self._stopped.discard(container_id)
            return PollResult(running=False, error=error, logs=tail(logs))
        finally:
            client.close()

    async def stop(self, launcher: dict[str, Any], data: dict[str, Any]) -> None:
        await asyncio.to_thread(self._stop, launcher, data)

    def _stop(self, launcher: dict[str, Any], data: dict[str, Any]) -> None:
        client = _client(launcher)
        container_id = str(data["containerId"])
        try:
            client.containers.get(container_id).stop(timeout=STOP_TIMEOUT)
            self._stopped.add(container_id)
        except docker_errors.NotFound:
            pass
        finally:
            client.close()
