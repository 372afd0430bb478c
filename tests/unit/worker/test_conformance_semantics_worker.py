"""``semantics.md`` §15 items the worker carries, through the real SDK: checkpoint writes
still buffered in the coalescing window reach the server before a crash or a timeout is
reported (item 144, ``worker.md`` §6.6, §6.8); a stream's idle timeout restarts on every
append (item 167)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.eventually import eventually_async as eventually
from tests.support.worker_harness import WFMOD, FakeServer, write_module

EXTRA = """

@cf.task()
def checkpoint_then_crash():
    progress.set(1)
    progress.set(2)  # inside the coalescing window: still buffered when the process dies
    time.sleep(0.05)
    os._exit(3)


@cf.task()
def checkpoint_then_hang():
    progress.set(1)
    progress.set(2)
    time.sleep(30)


@cf.task(streams=cf.Streams(buffer=None, timeout=1.5))
def steady_producer():
    for i in range(6):  # 3 s in all, twice the idle timeout, but never 1.5 s quiet
        time.sleep(0.5)
        yield i
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_module(tmp_path, WFMOD + EXTRA)
    return tmp_path


def progress_writes(server: FakeServer, execution_id: str) -> list[object]:
    return [
        f["params"][1]["progress"][1]
        for f in server.named("checkpoint_update", execution_id)
        if "progress" in f["params"][1]
    ]


async def test_item_144_a_buffered_write_survives_a_crash(
    fake_server: FakeServer, start_worker
) -> None:
    """Item 144: the last write lands before the termination of a crashed process."""
    await start_worker()
    await fake_server.execute("R1:1:1", "checkpoint_then_crash", [])
    await eventually(lambda: fake_server.named("notify_terminated", "R1:1:1"))
    assert progress_writes(fake_server, "R1:1:1")[-1] == 2
    order = fake_server.requests_for("R1:1:1")
    assert "put_error" not in order and "put_result" not in order
    last_update = len(order) - 1 - order[::-1].index("checkpoint_update")
    assert last_update < order.index("notify_terminated")


async def test_item_144_a_buffered_write_survives_a_timeout(
    fake_server: FakeServer, start_worker
) -> None:
    """Item 144: the last write lands before ``put_timeout``."""
    await start_worker()
    await fake_server.execute("R1:1:1", "checkpoint_then_hang", [], timeout_ms=500)
    await eventually(lambda: fake_server.named("notify_terminated", "R1:1:1"))
    assert progress_writes(fake_server, "R1:1:1")[-1] == 2
    order = fake_server.requests_for("R1:1:1")
    last_update = len(order) - 1 - order[::-1].index("checkpoint_update")
    assert last_update < order.index("put_timeout")


async def test_item_167_the_idle_timeout_restarts_on_every_append(
    fake_server: FakeServer, start_worker
) -> None:
    """Item 167: a producer that appends more often than its idle timeout is never
    force-closed, though it runs for longer than the timeout."""
    await start_worker()
    await fake_server.execute("R1:1:1", "steady_producer", [])
    await eventually(lambda: fake_server.named("notify_terminated", "R1:1:1"), timeout=30)
    appends = fake_server.named("stream_append", "R1:1:1")
    assert [f["params"][2] for f in appends] == list(range(6))
    closes = [f["params"] for f in fake_server.named("stream_close", "R1:1:1")]
    assert closes == [["R1:1:1", 0, None]]
