"""A forked executor's pipes, as the worker attaches them to its event loop.

The descriptors are closed exactly once, whichever loop the worker runs: never leaked, and
never closed a second time after another thread has been given the same number (uvloop
closes the descriptor itself and then the file object it was handed).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop

from pycoflux.worker.forkserver import ForkedChild, ForkServer

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


async def attach(server: ForkServer) -> tuple[ForkedChild, list[int], list[int]]:
    """A child's three pipes as ``ForkServer.fork`` gets them: ours attached, theirs raw."""
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    child = await server._connect(os.getpid(), stdin_w, stdout_r, stderr_r)
    return child, [stdin_w, stdout_r, stderr_r], [stdin_r, stdout_w, stderr_w]


def release(child: ForkedChild) -> None:
    child.stdin.close()
    child.close_pipes()


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_closing_a_childs_pipes_closes_each_descriptor(loop_name: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        server = ForkServer(("unused",), cwd=tmp_path)
        child, ours, theirs = await attach(server)
        try:
            assert not any(closed(fd) for fd in ours)
            release(child)
            for _ in range(3):
                await asyncio.sleep(0)
            del child
            assert all(closed(fd) for fd in ours)
        finally:
            for fd in theirs:
                os.close(fd)

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(scenario())


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_closing_pipes_never_closes_a_file_another_thread_opened(
    loop_name: str, tmp_path: Path
) -> None:
    """Threads open, read and close files (as blob uploads do) while pipes come and go."""
    sample = tmp_path / "sample"
    sample.write_bytes(b"x" * 100)
    failures: list[OSError] = []
    stop = threading.Event()

    def open_files() -> None:
        while not stop.is_set():
            try:
                with sample.open("rb") as handle:
                    handle.read()
                    os.fstat(handle.fileno())
            except OSError as exc:
                failures.append(exc)

    async def scenario() -> None:
        server = ForkServer(("unused",), cwd=tmp_path)
        for _ in range(500):
            child, _ours, theirs = await attach(server)
            release(child)
            for fd in theirs:
                os.close(fd)
            await asyncio.sleep(0)

    threads = [threading.Thread(target=open_files) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
            runner.run(scenario())
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
