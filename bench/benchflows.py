"""The benchmark's workloads: trivial targets, so the numbers measure the platform.

Copied into the worker's working directory and served by ``coflux worker benchflows``.
W1 and W2 time themselves inside the workflow (from the first submission to the last
result) and also write the figure to a marker file: the client waits for that file rather
than polling the server, whose run topic for 1,000 steps is expensive to build.
"""

from __future__ import annotations

import time
from pathlib import Path

import coflux as cf


@cf.task()
def noop(i: int) -> int:
    return i


def _report(marker: str, elapsed: float) -> float:
    Path(marker + ".tmp").write_text(repr(elapsed))
    Path(marker + ".tmp").rename(marker)
    return elapsed


@cf.workflow()
def fanout(n: int, marker: str) -> float:
    """W1: submit ``n`` tasks at once, then gather them; returns the seconds taken."""
    start = time.perf_counter()
    handles = [noop.submit(i) for i in range(n)]
    for handle in handles:
        handle.result()
    return _report(marker, time.perf_counter() - start)


@cf.workflow()
def chain(n: int, marker: str) -> float:
    """W2: call ``n`` tasks one after another; returns the seconds taken."""
    start = time.perf_counter()
    for i in range(n):
        noop(i)
    return _report(marker, time.perf_counter() - start)


@cf.workflow()
def trivial() -> int:
    """W3: nothing to do; what remains is the platform's round trip."""
    return 1
