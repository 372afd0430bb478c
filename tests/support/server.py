"""The real pycoflux server in a subprocess on loopback, for integration tests.

``ServerProcess`` starts ``app.serve(config.from_env())`` with a tmp data directory,
waits until ``GET /api/discover`` answers, and can stop it gracefully, SIGKILL it and
start it again on the same data directory (and port). ``running_server`` is the
context-manager form that fixtures wrap.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

# The server binds all interfaces by default; tests keep it on loopback.
SERVE = (
    "import dataclasses; from pycoflux.server import app, config;"
    " app.serve(dataclasses.replace(config.from_env(), bind='127.0.0.1'))"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerStartError(RuntimeError):
    """The server process exited or never answered."""


class ServerProcess:
    """One server subprocess bound to a data directory; restartable."""

    def __init__(
        self,
        data_dir: Path,
        *,
        project: str | None = "test",
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.project = project
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-server-{self.starts}.log"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COFLUX_")}
        env.update(
            {
                "PORT": str(self.port),
                "COFLUX_DATA_DIR": str(self.data_dir),
                "COFLUX_REQUIRE_AUTH": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.project is not None:
            env["COFLUX_PROJECT"] = self.project
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        assert self.process is None, "already running"
        self.starts += 1
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", SERVE],
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while True:
                if self.process.poll() is not None:
                    self.process = None
                    raise ServerStartError(f"server exited during start-up:\n{self.log()}")
                try:
                    client.get(f"{self.url}/api/discover")
                    return  # any HTTP response means the server is up
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise ServerStartError(f"server did not answer:\n{self.log()}")
                time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tracebacks(self) -> list[str]:
        """Exceptions the server logged in any of its runs (each with the lines after it)."""
        found = []
        for number in range(1, self.starts + 1):
            path = self.data_dir.parent / f"{self.data_dir.name}-server-{number}.log"
            lines = path.read_text(errors="replace").splitlines() if path.exists() else []
            for index, line in enumerate(lines):
                if line.startswith("Traceback"):
                    found.append("\n".join(lines[max(index - 1, 0) : index + 30]))
        return found

    def stop(self) -> None:
        """Graceful stop (SIGTERM), escalating to SIGKILL."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or power loss of the process."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.kill()
        process.wait()

    def restart(self, *, kill: bool = True) -> None:
        """Stop (SIGKILL by default) and start again on the same data directory and port."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()


@contextlib.contextmanager
def running_server(
    data_dir: Path,
    *,
    project: str | None = "test",
    env: Mapping[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """A started server that is stopped on exit (killed if it will not stop)."""
    server = ServerProcess(data_dir, project=project, env=env)
    server.start()
    try:
        yield server
    finally:
        server.stop()
    # Only reached when the body succeeded: an internal error is a failure even if every
    # response looked right.
    assert not server.tracebacks(), "\n\n".join(server.tracebacks())
