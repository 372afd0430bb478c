"""A real server, a real ``coflux worker`` (official SDK adapter) and the CLI, in a directory."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.support.eventually import eventually
from tests.support.server import ServerProcess

COFLUX = Path(sys.executable).parent / "coflux"


@dataclass
class WorkerStack:
    server: ServerProcess
    directory: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    concurrency: int = 2
    worker_args: tuple[str, ...] = ()  # extra `coflux worker` flags, e.g. ("--executor", "fork")
    worker: subprocess.Popen[bytes] | None = None
    worker_log: IO[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "COFLUX_HOST": f"localhost:{self.server.port}",
            "COFLUX_PROJECT": "test",
            "COFLUX_LOGS_FLUSH_INTERVAL": "0",
            **self.extra_env,
        }

    def start_worker(self, module: str = "flows") -> None:
        self.worker_log = open(self.directory / "worker.log", "ab")  # noqa: SIM115 - closed in stop
        self.worker = subprocess.Popen(
            [
                str(COFLUX),
                "worker",
                "--register",
                "--concurrency",
                str(self.concurrency),
                *self.worker_args,
                "--adapter",
                f"{sys.executable},-m,coflux",
                module,
            ],
            cwd=self.directory,
            env=self.env,
            stdout=self.worker_log,
            stderr=subprocess.STDOUT,
        )
        eventually(
            lambda: (
                module in json.loads(self.cli("manifests", "inspect", "-o", "json").stdout or "{}")
            ),
            timeout=30,
            interval=0.1,
        )

    def stop(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(10)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
        if self.worker_log is not None:
            self.worker_log.close()

    def worker_output(self) -> str:
        return (self.directory / "worker.log").read_text(errors="replace")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(COFLUX), *args],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def submit(self, target: str, *arguments: Any) -> str:
        done = self.cli(
            "submit", "--no-wait", "-o", "json", f"flows/{target}", *map(json.dumps, arguments)
        )
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout)["runId"])

    def result(self, run_id: str, step: str = "", timeout: float = 30) -> dict[str, Any]:
        """The result of a run (or of one of its steps), once there is one."""
        target = f"{run_id}:{step}" if step else run_id

        def finished() -> dict[str, Any] | None:
            done = self.cli("runs", "result", "-o", "json", target)
            if done.returncode != 0:
                assert "no result yet" in done.stderr, done.stderr
                return None
            return dict(json.loads(done.stdout))

        try:
            return eventually(finished, timeout=timeout, interval=0.1)
        except AssertionError:
            raise AssertionError(
                f"{target} did not finish; worker log:\n{self.worker_output()}"
            ) from None

    def run(self, target: str, *arguments: Any) -> Any:
        """Submit a workflow and return its value."""
        return value(self.result(self.submit(target, *arguments)))


def value(result: dict[str, Any]) -> Any:
    assert result["type"] == "value", result
    return result["value"]["data"]


@contextlib.contextmanager
def worker_stack(
    directory: Path,
    flows: str,
    *,
    env: Mapping[str, str] | None = None,
    concurrency: int = 2,
) -> Iterator[WorkerStack]:
    """A server with its own data directory and a worker on ``flows`` (written to flows.py)."""
    (directory / "flows.py").write_text(flows)
    server = ServerProcess(directory / "data")
    server.start()
    stack = WorkerStack(
        server=server, directory=directory, extra_env=dict(env or {}), concurrency=concurrency
    )
    try:
        stack.start_worker()
        yield stack
    finally:
        stack.stop()
        server.stop()
    assert not server.tracebacks(), "\n\n".join(server.tracebacks())
