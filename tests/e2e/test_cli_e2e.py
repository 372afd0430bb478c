"""The CLI against a real ``coflux server`` and ``coflux worker`` (SDK adapter), as users run it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "coflux"
FLOWS = """
import coflux as cf

@cf.task()
def add(a: int, b: int) -> int:
    print("adding", a, b)
    return a + b

@cf.workflow()
def main(x: int = 2) -> dict:
    return {"sum": add.submit(x, 40).result()}
"""


def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    if not SCRIPT.exists():
        pytest.skip("console script not installed")
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    (tmp_path / "flows.py").write_text(FLOWS)
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(*args: str) -> None:
        procs.append(
            subprocess.Popen(
                [str(SCRIPT), *args],
                cwd=tmp_path,
                env={**env, "COFLUX_HOST": f"localhost:{port}"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), "--host", f"localhost:{port}", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    spawn("server", "--no-auth", "-p", str(port), "-d", str(tmp_path / "data"))
    try:
        eventually(lambda: cli("workspaces", "list").returncode == 0)
        spawn("worker", "--register", "--adapter", f"{sys.executable},-m,coflux", "flows")
        eventually(
            lambda: any(
                s.get("connected")
                for s in json.loads(cli("-o", "json", "sessions", "list").stdout or "{}").values()
            )
        )
        yield cli
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_submit_wait_result_and_logs(
    stack: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    cli = stack
    waited = cli("-o", "json", "submit", "flows/main", "5")
    assert waited.returncode == 0, waited.stderr
    run = json.loads(waited.stdout)
    run_id = next(k for k, s in run["steps"].items() if s["parentId"] is None).split(":")[0]

    result = cli("-o", "json", "runs", "result", run_id)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["type"] == "value"
    assert cli("runs", "result", run_id).stdout == '{\n  "sum" ↦ 45\n}\n'
    assert cli("runs", "result", f"{run_id}:2").stdout == "45\n"

    logs = eventually(lambda: json.loads(cli("-o", "json", "logs", run_id).stdout)["logs"])
    assert any("adding" in (entry["template"] or "") for entry in logs)

    submitted = cli("submit", "--no-wait", "-o", "json", "flows/main")
    assert list(json.loads(submitted.stdout)) == ["runId", "stepId", "executionId"]
