"""worker.md checklist items no other test checked: warm executors, the ``retryable``
flag, checkpoints written just before a crash, the reconnection backoff, the default
heartbeat interval, the third stop request and a declined idle-stream close."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from pycoflux.worker import main
from pycoflux.worker.config import Timings
from pycoflux.worker.connection import Connection
from pycoflux.worker.executors import SpawnLauncher
from pycoflux.worker.pool import ExecutorPool
from tests.support.eventually import eventually_async as eventually
from tests.support.worker_harness import SDK_ADAPTER, FakeServer, write_module

CONFMOD = """
import os

import coflux as cf

state = cf.Checkpoint("state", default=0)


@cf.task(retries=cf.Retries(limit=2, when=ValueError))
def picky():
    raise RuntimeError("not worth retrying")


@cf.task(retries=cf.Retries(limit=2, when=ValueError))
def hopeful():
    raise ValueError("worth retrying")


@cf.task()
def crash_after_writes():
    state.set(1)
    state.set(2)
    os._exit(3)
"""


async def test_item_1_item_8_warm_executors_follow_the_concurrency(tmp_path: Path) -> None:
    for concurrency, warm in ((1, 1), (8, 4)):
        launcher = SpawnLauncher(SDK_ADAPTER, cwd=tmp_path, ready_timeout=30)
        pool = ExecutorPool(launcher, concurrency=concurrency, graceful_exit=5)
        try:
            await pool.start()
            assert pool.warm_count == warm, concurrency
            if concurrency == 1:
                # After an execution ends, one warm executor is ready again.
                process = await pool.acquire()
                assert pool.warm_count == 0
                await process.stop(5)
                pool.release(process)
                await eventually(lambda p=pool: p.warm_count == 1, timeout=30)
                again = await pool.acquire()
                assert again is not process
                pool.release(again, reuse=True)
        finally:
            await pool.close()


async def test_item_7_the_retryable_flag_is_forwarded(
    fake_server: FakeServer, project: Path, start_worker: Any
) -> None:
    write_module(project, CONFMOD, name="confmod")
    await start_worker(modules=("confmod",))
    await fake_server.execute("R1:1:1", "picky", [], module="confmod")
    await fake_server.execute("R1:2:1", "hopeful", [], module="confmod")
    [picky] = await eventually(lambda: fake_server.named("put_error", "R1:1:1"))
    [hopeful] = await eventually(lambda: fake_server.named("put_error", "R1:2:1"))
    assert picky["params"][1][:2] == ["builtins.RuntimeError", "not worth retrying"]
    assert picky["params"][1][3] is False
    assert hopeful["params"][1][3] is True


async def test_item_11_the_last_checkpoint_before_a_crash_reaches_the_server(
    fake_server: FakeServer, project: Path, start_worker: Any
) -> None:
    write_module(project, CONFMOD, name="confmod")
    await start_worker(modules=("confmod",))
    await fake_server.execute("R1:1:1", "crash_after_writes", [], module="confmod")
    await eventually(lambda: fake_server.named("notify_terminated", "R1:1:1"))
    written = [
        frame["params"][1]["state"][1]
        for frame in fake_server.named("checkpoint_update", "R1:1:1")
        if "state" in frame["params"][1]
    ]
    assert written and written[-1] == 2, written
    order = fake_server.requests_for("R1:1:1")
    assert "put_result" not in order and "put_error" not in order
    assert order.index("checkpoint_update") < order.index("notify_terminated")


def test_item_22_heartbeats_every_five_seconds_by_default() -> None:
    timings = Timings()
    assert timings.heartbeat_interval == 5.0
    assert (timings.backoff_initial, timings.backoff_max) == (1.0, 10.0)


class _Dropper:
    """A ``/worker`` endpoint that sends the session message and closes the first socket."""

    def __init__(self) -> None:
        self.sockets: list[ServerConnection] = []

    async def handle(self, socket: ServerConnection) -> None:
        self.sockets.append(socket)
        await socket.send('[0, "sid", []]')
        if len(self.sockets) == 1:
            await socket.close()
            return
        async for _ in socket:
            pass


class _Handler:
    def on_session(self, session_id: str, execution_ids: list[str]) -> None:
        pass

    def is_live(self, execution_id: str) -> bool:
        return False

    def after_session(self, first: bool) -> None:
        pass

    def on_command(self, command: str, params: list[Any]) -> None:
        pass

    def heartbeat(self) -> dict[str, int]:
        return {}


@pytest.fixture
async def dropper() -> AsyncIterator[tuple[_Dropper, str]]:
    state = _Dropper()
    async with serve(state.handle, "127.0.0.1", 0, subprotocols=["v1"]) as ws_server:  # type: ignore[list-item]
        port = next(iter(ws_server.sockets)).getsockname()[1]
        yield state, f"ws://127.0.0.1:{port}/worker?workspaceId=W1"


async def test_item_20_the_first_reconnect_waits_2_s_plus_at_most_50_percent(
    dropper: tuple[_Dropper, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state, url = dropper
    # The largest jitter: the wait is then exactly 2 s * 1.5.
    monkeypatch.setattr(random, "random", lambda: 1.0)
    connection = Connection(
        url=url,
        session_token="tok.secret",
        headers={},
        declare=lambda: [{}, 1],
        handler=_Handler(),  # type: ignore[arg-type]
        timings=Timings(),
    )
    with caplog.at_level(logging.INFO):
        task = asyncio.create_task(connection.run(), name="connection-under-test")
        try:
            await eventually(lambda: len(state.sockets) == 2, timeout=15)
        finally:
            await connection.close()
            await asyncio.wait_for(task, 5)
    delays = [
        record.fields["delay"]  # type: ignore[attr-defined]
        for record in caplog.records
        if record.getMessage() == "reconnecting"
    ]
    assert delays == ["3.0s"]


class _Exited(Exception):
    pass


async def test_item_23_the_third_stop_request_exits_with_status_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise _Exited

    monkeypatch.setattr(main.os, "_exit", fake_exit)
    shutdown = main.Shutdown()
    shutdown.request()
    assert shutdown.drain.is_set() and not shutdown.abort.is_set() and codes == []
    shutdown.request()
    assert shutdown.abort.is_set() and codes == []
    with pytest.raises(_Exited):
        shutdown.request()
    assert codes == [1]


async def test_item_27_a_declined_idle_close_restarts_the_countdown(
    fake_server: FakeServer, start_worker: Any
) -> None:
    answers = iter([False])  # the first request is declined (every consumer suspended)
    fake_server.handlers["stream_close"] = lambda params: next(answers, True)
    await start_worker()
    await fake_server.execute("R1:1:1", "idle_producer", [])

    def requested() -> list[dict[str, Any]] | None:
        found = [f for f in fake_server.named("stream_close", "R1:1:1") if "id" in f]
        return found if len(found) >= 2 else None

    closes = (await eventually(requested))[:2]
    assert [c["params"] for c in closes] == [["R1:1:1", 0, None, "timeout"]] * 2
    await fake_server.send_command("abort", ["R1:1:1"])
    await eventually(lambda: fake_server.named("notify_terminated", "R1:1:1"))
