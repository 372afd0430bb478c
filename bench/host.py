"""How fast this host is at what a task costs: a few probes printed with every table.

The end-to-end figures move with the machine more than with the code: on the same
2-core VM the CPU time per task has been seen to differ by ~2x between days while a
back-to-back Python loop ran at the same speed. A loop run in short bursts after a pause,
as servers and workers run, did not: it was ~1.6x slower. These probes measure such costs
directly, so two tables from different runs can be compared (or not) knowingly. Each is the median of several short samples, except the Python loop
(best of five: the interpreter's speed, not the neighbours').
"""

from __future__ import annotations

import mmap
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_PAGE = mmap.PAGESIZE


@dataclass(frozen=True)
class HostProbes:
    python_loop_ms: float  # sum(range(1_000_000)), best of five back to back
    burst_loop_ms: float  # the same loop's speed in short bursts after a pause
    page_fault_us: float  # first write to a fresh anonymous page
    ping_pong_us: float  # one byte to another process over a pipe and back
    fdatasync_ms: float  # a 4 KiB append to a file in the data directory's filesystem

    def line(self) -> str:
        return (
            f"host: Python loop {self.python_loop_ms:.1f} ms ({self.burst_loop_ms:.1f} in bursts),"
            f" page fault {self.page_fault_us:.1f} us,"
            f" process ping-pong {self.ping_pong_us:.0f} us,"
            f" fdatasync {self.fdatasync_ms:.2f} ms"
        )


def _python_loop() -> float:
    times = []
    for _ in range(5):
        started = time.perf_counter()
        sum(range(1_000_000))
        times.append(time.perf_counter() - started)
    return min(times) * 1e3


def _burst_loop() -> float:
    """A fifth of the loop after 50 ms of sleep, by CPU time, scaled to the whole loop.

    Servers and workers run in bursts like these; a CPU that slows down when idle (or
    shares its core while we sleep) shows it here and not in the back-to-back loop."""
    times = []
    for _ in range(9):
        time.sleep(0.05)
        started = time.thread_time()
        sum(range(200_000))
        times.append(time.thread_time() - started)
    return statistics.median(times) * 5 * 1e3


def _page_fault() -> float:
    pages = 4096
    times = []
    for _ in range(5):
        area = mmap.mmap(-1, pages * _PAGE)
        started = time.process_time()
        for offset in range(0, pages * _PAGE, _PAGE):
            area[offset] = 1
        times.append((time.process_time() - started) / pages)
        area.close()
    return statistics.median(times) * 1e6


def _ping_pong() -> float:
    rounds = 2000
    there_r, there_w = os.pipe()
    back_r, back_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the echo process
        try:
            os.close(there_w)
            os.close(back_r)
            while os.read(there_r, 1):
                os.write(back_w, b"x")
        finally:
            os._exit(0)
    os.close(there_r)
    os.close(back_w)
    samples = []
    try:
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(rounds // 5):
                os.write(there_w, b"x")
                os.read(back_r, 1)
            samples.append((time.perf_counter() - started) / (rounds // 5))
    finally:
        os.close(there_w)
        os.close(back_r)
        os.waitpid(pid, 0)
    return statistics.median(samples) * 1e6


def _fdatasync(directory: Path) -> float:
    samples = []
    with tempfile.TemporaryFile(dir=directory) as handle:
        for _ in range(20):
            handle.write(b"\0" * 4096)
            handle.flush()
            started = time.perf_counter()
            os.fdatasync(handle.fileno())
            samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e3


def probe(directory: Path) -> HostProbes:
    """Measure the host (about a second); ``directory`` is where the servers' data lives."""
    return HostProbes(
        python_loop_ms=_python_loop(),
        burst_loop_ms=_burst_loop(),
        page_fault_us=_page_fault(),
        ping_pong_us=_ping_pong(),
        fdatasync_ms=_fdatasync(directory),
    )
