"""Executor modes end to end: the real server, ``coflux worker --executor <mode>``, the SDK.

One server and one worker per mode serve every test of that mode. The properties checked
are the ones each mode promises: results, logs and errors arrive intact in every mode; a
crash (``os._exit``) ends only its own execution; module state is fresh per execution under
``fork`` and ``spawn`` and persists under ``reuse``.
"""

from __future__ import annotations

import contextlib
import json
import os
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.eventually import eventually
from tests.support.server import ServerProcess
from tests.support.worker_stack import WorkerStack, value

pytestmark = pytest.mark.integration

MODES = ("fork", "spawn", "reuse")

FLOWS = textwrap.dedent(
    """
    import os

    import coflux as cf

    STATE = {"count": 0}


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
    def chatty(x: int) -> int:
        print(f"hello from {x}")
        cf.log_info("value is {x}", x=x)
        return x


    @cf.workflow()
    def talk(x: int) -> int:
        return chatty(x)


    @cf.task()
    def die(code: int) -> None:
        os._exit(code)


    @cf.workflow()
    def crash_among_others(n: int) -> list:
        doomed = die.submit(3)
        others = [add.submit(i, i) for i in range(n)]
        results = [other.result() for other in others]
        try:
            doomed.result()
        except Exception as exc:
            return [results, type(exc).__name__]
        return [results, None]


    @cf.task()
    def bump() -> list:
        STATE["count"] += 1
        return [os.getpid(), STATE["count"]]


    @cf.workflow()
    def bumps(n: int) -> list:
        return [bump() for _ in range(n)]
    """
)


@dataclass
class Stack(WorkerStack):
    mode: str = "fork"


@pytest.fixture(scope="module", params=MODES)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    mode = str(request.param)
    directory = tmp_path_factory.mktemp(f"modes-{mode}")
    (directory / "flows.py").write_text(FLOWS)
    server = ServerProcess(directory / "data")
    server.start()
    stack = Stack(
        server=server,
        directory=directory,
        concurrency=4,
        worker_args=("--executor", mode),
        mode=mode,
    )
    try:
        stack.start_worker()
        # Registration precedes the pool; wait for the executors too.
        eventually(lambda: "executor mode" in stack.worker_output(), timeout=30, interval=0.1)
        yield stack
    finally:
        stack.stop()
        server.stop()


def test_the_requested_mode_is_in_effect(stack: Stack) -> None:
    assert f'msg="executor mode" mode={stack.mode}' in stack.worker_output()


def test_results_arrive_intact(stack: Stack) -> None:
    assert stack.run("sequential", 4) == 10
    assert stack.run("parallel", 8) == [i * 2 for i in range(8)]
    assert stack.run("large", 200_000) == 200_000


def test_errors_arrive_with_type_message_and_frames(stack: Stack) -> None:
    run_id = stack.submit("failing", "boom")
    result = stack.result(run_id)
    assert result["type"] == "error", result
    assert result["error"]["type"] == "builtins.ValueError"
    assert result["error"]["message"] == "boom"
    task = stack.result(run_id, "2")
    assert [frame["name"] for frame in task["error"]["frames"]] == ["explode"]
    # The worker (and, under reuse, the process) goes on serving after an error.
    assert stack.run("sequential", 1) == 4


def test_logs_arrive_intact(stack: Stack) -> None:
    run_id = stack.submit("talk", 5)
    assert value(stack.result(run_id)) == 5

    def messages() -> list[dict[str, Any]] | None:
        done = stack.cli("logs", "-o", "json", run_id)
        assert done.returncode == 0, done.stderr
        entries = [e for e in json.loads(done.stdout)["logs"] if isinstance(e, dict)]
        return entries if len(entries) >= 2 else None

    entries = eventually(messages, timeout=15, interval=0.2)
    printed = [e for e in entries if e.get("template") == "hello from 5"]
    logged = [e for e in entries if e.get("template") == "value is {x}"]
    assert printed and printed[0]["level"] == 1, entries
    assert logged and logged[0]["values"]["x"]["data"] == 5, entries


def test_a_crash_ends_only_its_own_execution(stack: Stack) -> None:
    results, crash = stack.run("crash_among_others", 6)
    assert results == [i + i for i in range(6)]
    assert crash == "ExecutionCrashed"
    # The worker still serves new work afterwards.
    assert stack.run("parallel", 3) == [0, 2, 4]


def test_module_state_between_executions(stack: Stack) -> None:
    counts = stack.run("bumps", 6)
    by_process: dict[int, list[int]] = {}
    for pid, count in counts:
        by_process.setdefault(pid, []).append(count)
    if stack.mode == "reuse":
        # Documented trade-off: a warm process keeps its module state, so every process
        # counts up from 1 and at least one of them served several executions.
        assert all(seen == list(range(1, len(seen) + 1)) for seen in by_process.values())
        assert max(len(seen) for seen in by_process.values()) > 1
    else:
        # A process per execution: no execution sees another's module state.
        assert [count for _, count in counts] == [1] * 6
        assert len(by_process) == 6


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds in /proc")
def test_finished_executions_leave_no_pipes_open_in_the_worker(stack: Stack) -> None:
    assert stack.worker is not None
    fd_dir = f"/proc/{stack.worker.pid}/fd"

    def pipes() -> int:
        count = 0
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                count += os.readlink(f"{fd_dir}/{fd}").startswith("pipe:")
        return count

    def settled() -> int:
        """The count once the warm pool is back to its size (no executor starting)."""
        seen = [pipes()]
        for _ in range(200):
            time.sleep(0.25)
            seen.append(pipes())
            if len(seen) >= 4 and len(set(seen[-4:])) == 1:
                return seen[-1]
        raise AssertionError(f"pipe count never settled: {seen[-10:]}")

    stack.run("parallel", 8)
    before = settled()
    for _ in range(20):  # some executions stopped reading before their pipes' end
        assert stack.run("parallel", 8) == [i * 2 for i in range(8)]
    # Closed at an execution's end, or at the latest a moment after its process exited.
    eventually(lambda: settled() <= before, timeout=30)
