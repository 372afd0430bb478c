"""``coflux logs`` against a real server and a real worker running the official SDK.

The workflows log through the SDK (templates with values, levels, plain ``print``), the
worker posts the entries, and the CLI renders them as a user sees them (``cli.md`` §4.6).
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.eventually import eventually
from tests.support.worker_stack import COFLUX, WorkerStack, worker_stack

pytestmark = pytest.mark.integration

FLOWS = textwrap.dedent(
    """
    import os
    import time

    import coflux as cf


    @cf.task()
    def load(n: int) -> int:
        cf.log_info("Loaded {count} rows from {source}", count=n, source="db")
        cf.log_warning("slow query")
        print("plain stdout line")
        cf.log_debug("details", payload=[1, 2])
        cf.log_error("payload {blob}", blob="y" * 500)
        cf.Metric("loss").record(0.5)
        cf.Metric("loss").record(0.25)
        return n


    @cf.workflow()
    def pipeline(n: int) -> int:
        cf.log_info("starting {n}", n=n)
        return load(n) + 1


    @cf.workflow()
    def gated(path: str) -> str:
        cf.log_info("before the gate")
        while not os.path.exists(path):
            time.sleep(0.02)
        cf.log_info("after the gate")
        return "done"
    """
)

TIME = r"\d\d:\d\d:\d\d\.\d\d\d"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerStack]:
    with worker_stack(tmp_path_factory.mktemp("logs-e2e"), FLOWS) as stack:
        yield stack


@pytest.fixture(scope="module")
def pipeline_run(stack: WorkerStack) -> str:
    run_id = stack.submit("pipeline", 3)
    assert stack.result(run_id)["value"]["data"] == 4
    return run_id


def logs_json(stack: WorkerStack, *args: str) -> dict[str, Any]:
    done = stack.cli("logs", "-o", "json", *args)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def settled_logs(stack: WorkerStack, run_id: str) -> dict[str, Any]:
    """The run's logs once all of them have arrived (the worker posts asynchronously)."""

    def complete() -> dict[str, Any] | None:
        body = logs_json(stack, run_id)
        return body if len(body["logs"]) >= 6 else None

    return eventually(complete)


def test_logs_of_a_run_keep_templates_values_and_levels(
    stack: WorkerStack, pipeline_run: str
) -> None:
    body = settled_logs(stack, pipeline_run)
    assert list(body) == ["logs", "cursor"]
    assert isinstance(body["cursor"], str) and body["cursor"]
    by_template = {entry["template"]: entry for entry in body["logs"]}
    loaded = by_template["Loaded {count} rows from {source}"]
    assert list(loaded) == [
        "executionId",
        "workspaceId",
        "timestamp",
        "level",
        "template",
        "values",
    ]
    assert loaded["level"] == 2
    assert loaded["executionId"] == f"{pipeline_run}:2:1"
    assert loaded["values"]["count"] == {"type": "raw", "data": 3, "references": []}
    assert by_template["slow query"]["level"] == 4
    assert by_template["details"]["level"] == 0
    blob = by_template["payload {blob}"]["values"]["blob"]
    assert blob["type"] == "blob" and blob["size"] > 500
    assert by_template["starting {n}"]["executionId"] == f"{pipeline_run}:1:1"
    stdout = [entry for entry in body["logs"] if entry["level"] == 1]
    assert any("plain stdout line" in entry["template"] for entry in stdout)


def test_text_rendering_fills_placeholders_and_groups_by_execution(
    stack: WorkerStack, pipeline_run: str
) -> None:
    settled_logs(stack, pipeline_run)
    done = stack.cli("logs", pipeline_run)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"-- \d{4}-\d\d-\d\d UTC --", lines[0])
    assert lines[1] == "flows/pipeline 1:1"
    assert re.fullmatch(rf"{TIME} INFO   starting 3", lines[2])
    assert lines[3] == "flows/load 2:1"
    text = "\n".join(lines[4:])
    assert re.search(rf"^{TIME} INFO   Loaded 3 rows from \"db\"$", text, re.M)
    assert re.search(rf"^{TIME} WARN   slow query$", text, re.M)
    assert re.search(rf"^{TIME} STDOUT plain stdout line", text, re.M)
    assert re.search(rf"^{TIME} DEBUG  details  payload=\[1, 2\]$", text, re.M)
    assert re.search(rf"^{TIME} ERROR  payload <blob \(\d+ bytes\)>$", text, re.M)


def test_logs_of_one_step_attempt(stack: WorkerStack, pipeline_run: str) -> None:
    settled_logs(stack, pipeline_run)
    body = logs_json(stack, pipeline_run, f"{pipeline_run}:2:1")
    assert {entry["executionId"] for entry in body["logs"]} == {f"{pipeline_run}:2:1"}
    assert len(body["logs"]) == 5
    missing = stack.cli("logs", pipeline_run, f"{pipeline_run}:2:7")
    assert missing.returncode == 1
    assert missing.stderr == f'attempt 7 not found for step "{pipeline_run}:2"\n'


def test_metrics_reach_the_metric_store(stack: WorkerStack, pipeline_run: str) -> None:
    def points() -> list[dict[str, Any]]:
        response = httpx.get(
            f"{stack.server.url}/metrics",
            params={"run": pipeline_run, "keys": "loss"},
            trust_env=False,
        )
        assert response.status_code == 200
        found: list[dict[str, Any]] = response.json()["metrics"]
        return found

    found = eventually(lambda: points() if len(points()) == 2 else None)
    assert [point["value"] for point in found] == [0.5, 0.25]
    assert {point["executionId"] for point in found} == {f"{pipeline_run}:2:1"}


class Lines:
    """A subprocess's stdout lines, collected by a thread so the test can poll them."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self._queue: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))

    def collected(self) -> list[str]:
        while not self._queue.empty():
            self.seen.append(self._queue.get_nowait())
        return self.seen


def test_follow_streams_entries_as_they_are_logged(stack: WorkerStack, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    run_id = stack.submit("gated", str(gate))
    follower = subprocess.Popen(
        [str(COFLUX), "logs", "--follow", "-o", "json", run_id],
        cwd=stack.directory,
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = Lines(follower)

        def templates() -> list[str]:
            return [json.loads(line)["template"] for line in lines.collected()]

        eventually(lambda: "before the gate" in templates(), timeout=20)
        assert "after the gate" not in templates()
        gate.touch()
        eventually(lambda: "after the gate" in templates(), timeout=20)
        assert templates().count("before the gate") == 1
        assert follower.poll() is None, "follow keeps the stream open"
    finally:
        follower.terminate()
        follower.wait(10)
        for pipe in (follower.stdout, follower.stderr):
            if pipe is not None:
                pipe.close()
    assert stack.result(run_id)["value"]["data"] == "done"
