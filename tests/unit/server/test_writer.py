"""The serial thread a project's store is used from."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pycoflux.server.writer import SerialThread


def test_calls_run_in_order_on_one_thread() -> None:
    async def main() -> None:
        thread = SerialThread("test-writer")
        seen: list[tuple[int, str]] = []

        def job(n: int) -> int:
            seen.append((n, threading.current_thread().name))
            return n * n

        try:
            results = await asyncio.gather(*(thread.call(lambda n=n: job(n)) for n in range(50)))
        finally:
            thread.shutdown()
        assert results == [n * n for n in range(50)]
        assert [n for n, _ in seen] == list(range(50))
        assert {name for _, name in seen} == {"test-writer"}

    asyncio.run(main())


def test_an_error_reaches_the_caller_and_the_thread_goes_on() -> None:
    async def main() -> None:
        thread = SerialThread("test-writer")

        def fail() -> None:
            raise ValueError("no")

        try:
            with pytest.raises(ValueError, match="no"):
                await thread.call(fail)
            assert await thread.call(lambda: 7) == 7
        finally:
            thread.shutdown()

    asyncio.run(main())


def test_shutdown_finishes_what_was_submitted_then_refuses() -> None:
    async def main() -> None:
        thread = SerialThread("test-writer")
        pending = [thread.call(lambda n=n: n) for n in range(10)]
        thread.shutdown()
        assert await asyncio.gather(*pending) == list(range(10))
        with pytest.raises(RuntimeError, match="shut down"):
            thread.call(lambda: None)

    asyncio.run(main())
