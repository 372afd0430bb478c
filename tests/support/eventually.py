"""Polling waits for tests: retry a check until it passes instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
INTERVAL = 0.02


def eventually(
    check: Callable[[], T], *, timeout: float = DEFAULT_TIMEOUT, interval: float = INTERVAL
) -> T:
    """Call ``check`` until it returns a truthy value without raising AssertionError.

    Returns that value. On timeout the last AssertionError is re-raised (or a new one
    naming the last falsy value), so the failure explains what never became true.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
            failure: AssertionError = AssertionError(f"condition stayed falsy: {result!r}")
        except AssertionError as e:
            failure = e
        if time.monotonic() >= deadline:
            raise failure
        time.sleep(interval)


@overload
async def eventually_async(
    check: Callable[[], Awaitable[T]], *, timeout: float = ..., interval: float = ...
) -> T: ...


@overload
async def eventually_async(
    check: Callable[[], T], *, timeout: float = ..., interval: float = ...
) -> T: ...


async def eventually_async(
    check: Callable[[], Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = INTERVAL,
) -> Any:
    """``eventually`` for the event loop; ``check`` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            failure: AssertionError = AssertionError(f"condition stayed falsy: {result!r}")
        except AssertionError as e:
            failure = e
        if time.monotonic() >= deadline:
            raise failure
        await asyncio.sleep(interval)
