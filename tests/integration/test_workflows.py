"""Real workflows end to end: the real server, a real ``coflux worker``, the official SDK.

Each test writes a module of SDK workflows, starts a worker on it against a server
subprocess with its own data directory, submits through the CLI and reads results
back through the CLI, as a user would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.eventually import eventually
from tests.support.worker_stack import COFLUX, WorkerStack, value, worker_stack

pytestmark = pytest.mark.integration


FLOWS = textwrap.dedent(
    """
    import time

    import coflux as cf


    @cf.task()
    def add(a: int, b: int) -> int:
        return a + b


    @cf.task()
    def double(x: int) -> int:
        return x * 2


    @cf.workflow()
    def sequential(x: int) -> int:
        return double(add(x, 1))


    @cf.workflow()
    def parallel(n: int) -> list:
        executions = [double.submit(i) for i in range(n)]
        return [execution.result() for execution in executions]


    @cf.task()
    def big(size: int) -> str:
        return "x" * size


    @cf.workflow()
    def large(size: int) -> int:
        return len(big(size))


    @cf.task()
    def explode(message: str) -> None:
        raise ValueError(message)


    @cf.workflow()
    def failing(message: str) -> None:
        explode(message)


    @cf.task()
    def level3(x: int) -> int:
        return x + 3


    @cf.task()
    def level2(x: int) -> int:
        return level3(x) * 10


    @cf.task()
    def level1(x: int) -> int:
        return level2(x) + 1


    @cf.workflow()
    def nested(x: int) -> int:
        return level1(x)


    @cf.task()
    def slow(seconds: float) -> str:
        time.sleep(seconds)
        return "done"


    @cf.workflow()
    def slow_flow(seconds: float) -> str:
        return slow(seconds)
    """
)


Stack = WorkerStack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with worker_stack(tmp_path, FLOWS, concurrency=4) as stack:
        yield stack


def test_tasks_called_one_after_another(stack: Stack) -> None:
    assert value(stack.result(stack.submit("sequential", 4))) == 10


def test_tasks_submitted_in_parallel(stack: Stack) -> None:
    assert value(stack.result(stack.submit("parallel", 12))) == [i * 2 for i in range(12)]


def test_a_large_value_travels_through_a_blob(stack: Stack) -> None:
    run_id = stack.submit("large", 200_000)
    assert value(stack.result(run_id)) == 200_000
    # The task's own result is the big string: stored as a blob, readable through the CLI.
    child = stack.cli("runs", "result", "-o", "json", f"{run_id}:2")
    result = json.loads(child.stdout)
    assert result["value"]["type"] == "blob"
    assert result["value"]["size"] >= 200_000
    text = stack.cli("runs", "result", f"{run_id}:2")
    assert text.returncode == 0
    assert text.stdout.strip() == '"' + "x" * 200_000 + '"'


def test_an_error_reaches_the_run_with_its_type_and_message(stack: Stack) -> None:
    run_id = stack.submit("failing", "boom")
    result = stack.result(run_id)
    assert result["type"] == "error", result
    assert result["error"]["message"] == "boom"
    assert result["error"]["type"] == "builtins.ValueError"
    # The workflow re-raised its task's error; each keeps its own traceback.
    assert [frame["name"] for frame in result["error"]["frames"]] == ["failing"]
    task = json.loads(stack.cli("runs", "result", "-o", "json", f"{run_id}:2").stdout)
    assert task["type"] == "error"
    assert [frame["name"] for frame in task["error"]["frames"]] == ["explode"]
    text = stack.cli("runs", "result", run_id)
    assert text.returncode == 0
    assert text.stdout.startswith("Traceback (most recent call last):")
    assert text.stdout.rstrip().endswith("builtins.ValueError: boom")


def test_tasks_nested_three_levels_deep(stack: Stack) -> None:
    assert value(stack.result(stack.submit("nested", 1))) == 41


def test_submit_waits_and_prints_the_run(stack: Stack) -> None:
    done = stack.cli("submit", "-o", "json", "flows/sequential", "1")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    root = next(s for s in run["steps"].values() if s["parentId"] is None)
    assert root["executions"]["1"]["result"]["value"]["data"] == 4


def test_server_killed_mid_run_loses_nothing(stack: Stack) -> None:
    run_id = stack.submit("slow_flow", 2.0)

    def running() -> bool:
        done = stack.cli("runs", "inspect", "--no-wait", run_id)
        steps = json.loads(done.stdout)["steps"] if done.returncode == 0 else {}
        return any(
            e["assignedAt"] is not None and s["target"] == "slow"
            for s in steps.values()
            for e in s["executions"].values()
        )

    eventually(running, timeout=30, interval=0.1)
    stack.server.restart(kill=True)
    assert value(stack.result(run_id, timeout=60)) == "done"
    # And the result stays readable after another crash.
    stack.server.restart(kill=True)
    assert value(stack.result(run_id)) == "done"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("flows/nope", "1"), "failed to get workflow: not_found: no workflow 'flows/nope'"),
        (("flows/sequential", "1", "2"), "flows/sequential takes 1 argument(s) (x), 2 given"),
        (("flows/sequential", "{bad"), 'bad_request:  (details: {"arguments.0":"not_json"})'),
    ],
)
def test_bad_submissions_get_one_line_errors_and_create_nothing(
    stack: Stack, arguments: tuple[str, ...], message: str
) -> None:
    done = stack.cli("submit", "--no-wait", *arguments)
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert message in line
    modules = json.loads(stack.cli("-o", "json", "queue").stdout or "{}")
    assert modules == {}


def test_a_worker_that_cannot_import_its_module_exits_with_the_reason(stack: Stack) -> None:
    done = subprocess.run(
        [str(COFLUX), "worker", "--adapter", f"{sys.executable},-m,coflux", "no_such_module"],
        cwd=stack.directory,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()[-1:]
    assert line.startswith("worker error: discovery failed")
    assert "no_such_module" in line
