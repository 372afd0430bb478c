"""Executor modes: choosing one, the fork server's life, and reuse against a fake server."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from pycoflux import errors
from pycoflux.worker import executors
from pycoflux.worker.adapter import AdapterProcess
from pycoflux.worker.executors import ExecutorMode
from tests.support.eventually import eventually_async as eventually
from tests.support.worker_harness import SDK_ADAPTER, FakeServer, wait_result, write_module

MODES_MOD = """
import os
import threading
import time

import coflux as cf

STATE = {"count": 0}


@cf.task()
def counted():
    STATE["count"] += 1
    return [os.getpid(), STATE["count"]]


@cf.task()
def counted_then_fail():
    STATE["count"] += 1
    raise ValueError(str(os.getpid()))


@cf.task()
def stalls():
    time.sleep(30)


@cf.task()
def leaves_a_chatty_thread():
    from coflux import protocol, state

    execution_id = state.get_context().execution_id

    def chatter():
        time.sleep(0.3)
        protocol.send_log(execution_id, 2, "late output")

    threading.Thread(target=chatter, daemon=True).start()
    return os.getpid()
"""

THREADED = """
import threading
import time

threading.Thread(target=time.sleep, args=(60,), daemon=True, name="import-time").start()
"""


def raw(value: object) -> dict[str, object]:
    return {"type": "inline", "format": "json", "value": value}


# --- choosing a mode -------------------------------------------------------------------


def test_modes_parse_and_unknown_ones_are_config_errors() -> None:
    assert executors.parse_mode(None) is None
    assert executors.parse_mode("") is None
    assert executors.parse_mode(" Reuse ") is ExecutorMode.REUSE
    with pytest.raises(errors.ConfigError, match="expected one of: fork, spawn, reuse"):
        executors.parse_mode("threads")


def test_only_the_python_sdk_adapter_gives_an_interpreter() -> None:
    assert executors.sdk_interpreter(("python3", "-m", "coflux")) == ("python3",)
    assert executors.sdk_interpreter(("uv", "run", "python", "-m", "coflux")) == (
        "uv",
        "run",
        "python",
    )
    assert executors.sdk_interpreter(("python3", "adapter.py", "--socket", "s")) is None
    assert executors.sdk_interpreter(("node", "-m", "coflux-js")) is None


@pytest.mark.parametrize("mode", [ExecutorMode.FORK, ExecutorMode.REUSE])
def test_another_adapter_falls_back_to_spawn(tmp_path: Path, mode: ExecutorMode) -> None:
    launcher = executors.make_launcher(
        mode, ("python3", "shim.py"), ("m",), cwd=tmp_path, ready_timeout=5
    )
    assert launcher.mode is ExecutorMode.SPAWN
    assert not launcher.reusable


def test_fork_is_the_default_where_fork_exists(tmp_path: Path) -> None:
    launcher = executors.make_launcher(None, SDK_ADAPTER, (), cwd=tmp_path, ready_timeout=5)
    expected = ExecutorMode.FORK if hasattr(os, "fork") else ExecutorMode.SPAWN
    assert launcher.mode is expected or isinstance(launcher, executors.ForkLauncher)


# --- the fork server -------------------------------------------------------------------


async def _execute(process: AdapterProcess, target: str, module: str = "modes_mod") -> Any:
    await process.write(
        {
            "method": "execute",
            "params": {
                "execution_id": "R1:1:1",
                "module": module,
                "target": target,
                "arguments": [],
                "working_dir": tempfile.mkdtemp(),
            },
        }
    )
    while True:
        message = await process.read_message()
        assert message is not None, "executor exited without a result"
        if message.get("method") == "execution_result":
            return message["params"]["result"]["value"]


def _fork_launcher(project: Path, *modules: str) -> executors.ForkLauncher:
    return executors.ForkLauncher(
        SDK_ADAPTER, (sys.executable,), modules, cwd=project, ready_timeout=30
    )


async def test_forked_executors_start_from_the_same_clean_state(project: Path) -> None:
    write_module(project, MODES_MOD, "modes_mod")
    launcher = _fork_launcher(project, "modes_mod")
    await launcher.start()
    try:
        assert launcher.mode is ExecutorMode.FORK
        first, second = await launcher.launch(), await launcher.launch()
        [pid1, count1] = await _execute(first, "counted")
        [pid2, count2] = await _execute(second, "counted")
        assert (count1, count2) == (1, 1)
        assert pid1 != pid2 != launcher.server_pid
        for process in (first, second):
            await process.stop(5)
            assert not process.alive
    finally:
        await launcher.close()


async def test_a_killed_forked_executor_is_reported_gone(project: Path) -> None:
    write_module(project, MODES_MOD, "modes_mod")
    launcher = _fork_launcher(project, "modes_mod")
    await launcher.start()
    try:
        process = await launcher.launch()
        await process.kill()  # through the fork server, which reaps it and says so
        assert not process.alive
        assert await process.read_message() is None
    finally:
        await launcher.close()


async def test_a_dead_fork_server_is_restarted(project: Path) -> None:
    write_module(project, MODES_MOD, "modes_mod")
    launcher = _fork_launcher(project, "modes_mod")
    await launcher.start()
    try:
        waiting = await launcher.launch()
        old = launcher.server_pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        # Its orphaned child is killed rather than left running unobserved.
        assert await asyncio.wait_for(waiting.read_message(), 10) is None
        process = await launcher.launch()
        assert launcher.server_pid not in (None, old)
        [_, count] = await _execute(process, "counted")
        assert count == 1
        await process.stop(5)
    finally:
        await launcher.close()


async def test_a_fork_server_that_cannot_start_means_spawn(tmp_path: Path) -> None:
    launcher = executors.ForkLauncher(SDK_ADAPTER, ("false",), (), cwd=tmp_path, ready_timeout=10)
    await launcher.start()
    assert launcher.mode is ExecutorMode.SPAWN
    await launcher.close()


async def test_modules_that_start_threads_make_fork_fall_back(project: Path) -> None:
    write_module(project, THREADED, "threaded")
    launcher = _fork_launcher(project, "threaded")
    await launcher.start()
    try:
        assert launcher.mode is ExecutorMode.SPAWN
        process = await launcher.launch()  # a spawned executor still works
        await process.stop(5)
    finally:
        await launcher.close()


# --- reuse against the fake server -----------------------------------------------------


async def _results(server: FakeServer, *ids: str) -> list[Any]:
    return [(await wait_result(server, execution_id))[1] for execution_id in ids]


async def _run(server: FakeServer, execution_id: str, target: str) -> Any:
    await server.execute(execution_id, target, [], module="modes_mod")
    return (await wait_result(server, execution_id))[1]


@pytest.fixture
def modes_project(project: Path) -> Path:
    write_module(project, MODES_MOD, "modes_mod")
    return project


async def test_reuse_keeps_module_state_in_one_process(
    fake_server: FakeServer, start_worker, modes_project: Path
) -> None:
    await start_worker(executor="reuse", concurrency=1, modules=("wfmod", "modes_mod"))
    results = [await _run(fake_server, f"R1:{n}:1", "counted") for n in range(1, 4)]
    assert [count for _, count in results] == [1, 2, 3]
    assert len({pid for pid, _ in results}) == 1
    for n in range(1, 4):
        await eventually(lambda n=n: fake_server.named("notify_terminated", f"R1:{n}:1"))


async def test_reuse_survives_errors_but_not_timeouts_or_crashes(
    fake_server: FakeServer, start_worker, modes_project: Path
) -> None:
    await start_worker(executor="reuse", concurrency=1, modules=("wfmod", "modes_mod"))
    [pid, _] = await _run(fake_server, "R1:1:1", "counted")

    await fake_server.execute("R1:2:1", "counted_then_fail", [], module="modes_mod")
    [error] = await eventually(lambda: fake_server.named("put_error", "R1:2:1"))
    assert error["params"][1][:2] == ["builtins.ValueError", str(pid)]
    assert await _run(fake_server, "R1:3:1", "counted") == [pid, 3]

    await fake_server.execute("R1:4:1", "stalls", [], module="modes_mod", timeout_ms=300)
    await eventually(lambda: fake_server.named("put_timeout", "R1:4:1"))
    [fresh, count] = await _run(fake_server, "R1:5:1", "counted")
    assert fresh != pid and count == 1

    await fake_server.execute("R1:6:1", "crash", [])
    await eventually(lambda: fake_server.named("notify_terminated", "R1:6:1"))
    assert not fake_server.named("put_error", "R1:6:1")
    [after_crash, count] = await _run(fake_server, "R1:7:1", "counted")
    assert count == 1 and after_crash not in (pid, fresh)


async def test_reuse_drops_messages_left_behind_by_an_earlier_execution(
    fake_server: FakeServer, start_worker, modes_project: Path
) -> None:
    await start_worker(executor="reuse", concurrency=1, modules=("wfmod", "modes_mod"))
    pid = await _run(fake_server, "R1:1:1", "leaves_a_chatty_thread")
    await fake_server.execute("R1:2:1", "stalls", [], module="modes_mod", timeout_ms=1000)
    await eventually(lambda: fake_server.named("put_timeout", "R1:2:1"))
    # The thread's late log names R1:1:1, which is over: it is dropped, not pinned on R1:2:1.
    # (Plain prints from such a thread would land in the running execution's log: the SDK
    # captures stdout process-wide. That is part of reuse's documented trade-off.)
    assert not [e for e in fake_server.logs if "late output" in str(e)]
    assert isinstance(pid, int)


@pytest.mark.parametrize("mode", ["reuse", "fork"])
async def test_streams_logs_and_suspension_work_in_each_mode(
    fake_server: FakeServer, start_worker, mode: str
) -> None:
    await start_worker(executor=mode)
    await fake_server.execute("R1:1:1", "producer", [])
    [register] = await eventually(lambda: fake_server.named("stream_register", "R1:1:1"))
    if register["params"][2] is not None:  # backpressured: the producer waits for credit
        await fake_server.send_command("stream_demand", ["R1:1:1", 0, 5])
    await eventually(lambda: len(fake_server.named("stream_append", "R1:1:1")) == 2)
    await eventually(lambda: fake_server.named("notify_terminated", "R1:1:1"))

    await fake_server.execute("R1:2:1", "chatty", [])
    assert await wait_result(fake_server, "R1:2:1") == ["raw", 1, []]
    await eventually(
        lambda: len([e for e in fake_server.logs if e["executionId"] == "R1:2:1"]) == 2
    )

    await fake_server.execute("R1:3:1", "suspender", [])
    await eventually(lambda: fake_server.named("suspend", "R1:3:1"))
    await fake_server.send_command("abort", ["R1:3:1"])
    await eventually(lambda: fake_server.named("notify_terminated", "R1:3:1"))
    assert not fake_server.named("put_error", "R1:3:1")

    await fake_server.execute("R1:4:1", "add", [["raw", 2, []], ["raw", 3, []]])
    assert await wait_result(fake_server, "R1:4:1") == ["raw", 5, []]
