"""A real server, a real ``coflux worker`` (official SDK adapter) and the CLI, in a directory.

Also a moto S3 server on loopback for the S3 blob store tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from tests.support.eventually import eventually
from tests.support.server import ServerProcess, free_port

COFLUX = Path(sys.executable).parent / "coflux"


@dataclass
class WorkerStack:
    server: ServerProcess
    directory: Path
    extra_env: dict[str, str] = field(default_factory=dict)
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
                "2",
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

    def result(self, run_id: str, timeout: float = 30) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            done = self.cli("runs", "result", "-o", "json", run_id)
            if done.returncode != 0:
                assert "no result yet" in done.stderr, done.stderr
                return None
            return dict(json.loads(done.stdout))

        try:
            return eventually(finished, timeout=timeout, interval=0.1)
        except AssertionError:
            raise AssertionError(
                f"run {run_id} did not finish; worker log:\n{self.worker_output()}"
            ) from None


@contextlib.contextmanager
def worker_stack(
    directory: Path, flows: str, *, env: Mapping[str, str] | None = None
) -> Iterator[WorkerStack]:
    """A server with its own data directory and a worker on ``flows`` (written to flows.py)."""
    (directory / "flows.py").write_text(flows)
    server = ServerProcess(directory / "data")
    server.start()
    stack = WorkerStack(server=server, directory=directory, extra_env=dict(env or {}))
    try:
        stack.start_worker()
        yield stack
    finally:
        stack.stop()
        server.stop()
    assert not server.tracebacks(), "\n\n".join(server.tracebacks())


class S3Server:
    """``moto``'s S3 in server mode on loopback, and the environment that points boto3 at it."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def answering() -> bool:
            assert self.process.poll() is None, "moto server exited"
            try:
                httpx.get(self.url, timeout=1.0, trust_env=False)
            except httpx.TransportError:
                return False
            return True

        eventually(answering, timeout=30, interval=0.05)

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.url,
            # Never read a developer's real AWS configuration.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def client(self) -> Any:
        import boto3

        return boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        ).client("s3", endpoint_url=self.url)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
