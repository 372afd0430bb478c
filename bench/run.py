"""Run the workloads against each executor mode and print one table.

For every mode: a fresh server (own data directory) and a fresh worker, one warm-up round
that is not counted, then ``repeats`` rounds of W1, W2 and W3. Each figure in the table is
the median over the rounds; ratios compare each mode with ``spawn``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.client import Client, result_value
from bench.history import populate
from bench.stack import (
    PROJECT,
    ExecutorMemory,
    ForeignLoad,
    Server,
    Worker,
    peak_rss,
    process_cpu_seconds,
    rss,
    tree_cpu_seconds,
    wait_for_idle,
)

WORKLOADS = Path(__file__).with_name("benchflows.py")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    modes: tuple[str, ...] = ("spawn", "fork", "reuse")
    workloads: tuple[str, ...] = ("w1", "w2", "w3")
    repeats: int = 3
    fanout: int = 1000
    chain: int = 100
    latency: int = 200
    concurrency: int = 0  # 0: the worker's default
    profile: Path | None = None  # py-spy output directory
    wait_idle: float = 0.0  # seconds to wait for an idle machine before each mode
    keep: bool = False
    history: int = 0  # finished executions seeded into each mode's database first
    watch: bool = False  # follow W1's and W2's runs on the live run topic, as Studio does


@dataclass(slots=True)
class ModeResult:
    mode: str
    effective_mode: str = ""
    foreign_cpus: float = 0.0  # CPUs' worth taken by other processes while measuring
    w1_tasks_per_s: list[float] = field(default_factory=list)
    w2_ms_per_task: list[float] = field(default_factory=list)
    w3_p50_ms: list[float] = field(default_factory=list)
    w3_p99_ms: list[float] = field(default_factory=list)
    db_bytes_per_task: list[float] = field(default_factory=list)
    w1_server_cpu_ms: list[float] = field(default_factory=list)  # CPU ms per W1 task
    w1_server_rss: list[float] = field(default_factory=list)  # MiB when a W1 round is done
    w1_worker_cpu_ms: list[float] = field(default_factory=list)
    w1_executors_cpu_ms: list[float] = field(default_factory=list)
    server_peak_rss: int = 0
    worker_peak_rss: int = 0
    executors_peak_pss: int = 0


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    rank = max(1, round(fraction * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


_markers = itertools.count()


async def _timed_run(
    client: Client,
    directory: Path,
    target: str,
    n: int,
    done: Callable[[], None] | None = None,
    *,
    watch: bool = False,
) -> float:
    """Run a self-timing workflow; wait for its marker file, call ``done``, then check the
    run succeeded (reading a large run costs the server memory: ``done`` comes first).
    With ``watch``, a second client follows the run's live topic meanwhile."""
    marker = directory / f"done-{next(_markers)}"
    run_id = await client.submit(target, n, str(marker))
    watcher = asyncio.create_task(_watch(client.url, run_id)) if watch else None
    try:
        while not marker.exists():
            await asyncio.sleep(0.02)
        if done is not None:
            done()
        elapsed = float(marker.read_text())
        if watcher is not None:
            await watcher
    finally:
        if watcher is not None:
            watcher.cancel()
    if float(result_value(await client.poll(run_id))) != elapsed:
        raise RuntimeError(f"run {run_id} returned another figure than it reported")
    return elapsed


async def _watch(url: str, run_id: str) -> None:
    async with Client(url) as watcher:
        await watcher.follow(run_id)


def _cpu(server: Server, worker: Worker) -> tuple[float, float, float]:
    """CPU-seconds so far: server, worker process, and the worker's executors (live or reaped)."""
    own = process_cpu_seconds(worker.pid)
    everything = tree_cpu_seconds(worker.pid)
    return process_cpu_seconds(server.pid), own, everything - own


async def _w1(
    client: Client,
    server: Server,
    worker: Worker,
    n: int,
    result: ModeResult | None = None,
    *,
    watch: bool = False,
) -> float:
    before, cpu_before = server.database_bytes(), _cpu(server, worker)
    after: list[int] = []
    cpus: list[tuple[float, float, float]] = []

    def done() -> None:
        # Figures for the fan-out itself, taken before the harness reads the 1,000-step
        # run back (a one-off cost of its own, not a per-task one).
        after.append(rss(server.pid))
        cpus.append(_cpu(server, worker))

    elapsed = await _timed_run(client, worker.directory, "fanout", n, done, watch=watch)
    cpu_after = cpus[0]
    if result is not None:
        result.db_bytes_per_task.append((server.database_bytes() - before) / n)
        server_s, worker_s, executors_s = (
            a - b for a, b in zip(cpu_after, cpu_before, strict=True)
        )
        result.w1_server_cpu_ms.append(server_s * 1000 / n)
        result.w1_worker_cpu_ms.append(worker_s * 1000 / n)
        result.w1_executors_cpu_ms.append(executors_s * 1000 / n)
        result.w1_server_rss.append(after[0] / 2**20)
    return n / elapsed


async def _w2(client: Client, directory: Path, n: int, *, watch: bool = False) -> float:
    return await _timed_run(client, directory, "chain", n, watch=watch) * 1000 / n


async def _w3(client: Client, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        result_value(await client.follow(await client.submit("trivial")))
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _profiler(settings: Settings, pid: int, name: str) -> subprocess.Popen[bytes] | None:
    if settings.profile is None:
        return None
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("--profile needs py-spy on PATH (pip install py-spy)")
    settings.profile.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(settings.profile / f"{name}.txt"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop_profiler(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None:
        process.send_signal(2)  # SIGINT: py-spy writes its output and exits
        process.wait(60)


async def _measure(settings: Settings, server: Server, worker: Worker, result: ModeResult) -> None:
    async with Client(server.url) as client:
        # Warm-up: first imports, SQLite caches, pool top-ups. Not counted.
        await _w1(client, server, worker, min(settings.fanout, 100))
        await _w2(client, worker.directory, min(settings.chain, 20))
        await _w3(client, min(settings.latency, 20))
        for workload in settings.workloads:
            profilers = [
                _profiler(settings, server.pid, f"{result.mode}-{workload}-server"),
                _profiler(settings, worker.pid, f"{result.mode}-{workload}-worker"),
            ]
            try:
                for _ in range(settings.repeats):
                    if workload == "w1":
                        result.w1_tasks_per_s.append(
                            await _w1(
                                client,
                                server,
                                worker,
                                settings.fanout,
                                result,
                                watch=settings.watch,
                            )
                        )
                    elif workload == "w2":
                        result.w2_ms_per_task.append(
                            await _w2(
                                client, worker.directory, settings.chain, watch=settings.watch
                            )
                        )
                    else:
                        samples = await _w3(client, settings.latency)
                        result.w3_p50_ms.append(percentile(samples, 0.50))
                        result.w3_p99_ms.append(percentile(samples, 0.99))
            finally:
                for profiler in profilers:
                    _stop_profiler(profiler)


def run_mode(settings: Settings, mode: str, root: Path, history: Path | None) -> ModeResult:
    directory = root / mode
    directory.mkdir()
    shutil.copy(WORKLOADS, directory / "benchflows.py")
    result = ModeResult(mode=mode)
    server = Server(directory)
    if history is not None:
        shutil.copytree(history, server.data_dir / "projects" / PROJECT)
    server.start()
    try:
        worker = Worker(directory, server, mode, settings.concurrency)
        worker.start()
        try:
            result.effective_mode = worker.effective_mode()
            with ExecutorMemory(worker.pid) as memory, ForeignLoad(server.pid, worker.pid) as load:
                asyncio.run(_measure(settings, server, worker, result))
            result.foreign_cpus = load.share
            result.server_peak_rss = peak_rss(server.pid)
            result.worker_peak_rss = peak_rss(worker.pid)
            result.executors_peak_pss = memory.peak
        finally:
            worker.stop()
    finally:
        server.stop()
    return result


def run(settings: Settings) -> list[ModeResult]:
    root = Path(tempfile.mkdtemp(prefix="pycoflux-bench-"))
    try:
        results = []
        seeded = None
        if settings.history > 0:
            seeded = root / "history"
            populate(seeded, settings.history)
        for mode in settings.modes:
            if settings.wait_idle > 0:
                wait_for_idle(settings.wait_idle)
            print(f"-- {mode}: running (repeats={settings.repeats})", flush=True)
            started = time.monotonic()
            results.append(run_mode(settings, mode, root, seeded))
            print(f"-- {mode}: done in {time.monotonic() - started:.0f} s", flush=True)
        return results
    finally:
        if settings.keep:
            print(f"-- logs and data kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


# --- the table -------------------------------------------------------------------------

_ROWS: list[tuple[str, str, str, bool]] = [
    # (label, attribute, format, higher is better)
    ("W1 fan-out, tasks/s", "w1_tasks_per_s", "{:.0f}", True),
    ("W2 chain, ms/task", "w2_ms_per_task", "{:.2f}", False),
    ("W3 submit latency p50, ms", "w3_p50_ms", "{:.2f}", False),
    ("W3 submit latency p99, ms", "w3_p99_ms", "{:.2f}", False),
    ("W1 CPU ms/task: server", "w1_server_cpu_ms", "{:.2f}", False),
    ("W1 CPU ms/task: worker", "w1_worker_cpu_ms", "{:.2f}", False),
    ("W1 CPU ms/task: executors", "w1_executors_cpu_ms", "{:.2f}", False),
    ("DB bytes/task (W1)", "db_bytes_per_task", "{:.0f}", False),
    ("server RSS after W1, MiB", "w1_server_rss", "{:.1f}", False),
    ("server peak RSS, MiB", "server_peak_rss", "{:.1f}", False),
    ("worker peak RSS, MiB", "worker_peak_rss", "{:.1f}", False),
    ("executors peak PSS, MiB", "executors_peak_pss", "{:.1f}", False),
]


def _figure(result: ModeResult, attribute: str) -> float | None:
    value: Any = getattr(result, attribute)
    if isinstance(value, list):
        return statistics.median(value) if value else None
    return value / (1024 * 1024) if value else None


def table(results: list[ModeResult], settings: Settings) -> str:
    """Medians per mode side by side, then each mode's ratio to spawn (or the first mode)."""
    base = next((r for r in results if r.mode == "spawn"), results[0])
    others = [r for r in results if r is not base]
    header = ["metric (median)", *(r.mode for r in results)]
    header += [f"{r.mode}/{base.mode}" for r in others]
    rows = [header]
    for label, attribute, fmt, _ in _ROWS:
        row = [label]
        for r in results:
            figure = _figure(r, attribute)
            row.append("-" if figure is None else fmt.format(figure))
        base_figure = _figure(base, attribute)
        for r in others:
            figure = _figure(r, attribute)
            ratio = figure / base_figure if figure and base_figure else None
            row.append("-" if ratio is None else f"{ratio:.2f}x")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    fallbacks = [r for r in results if r.effective_mode and r.effective_mode != r.mode]
    notes = [
        f"{settings.repeats} rounds per mode after one warm-up round; W1 {settings.fanout} tasks,"
        f" W2 {settings.chain} tasks, W3 {settings.latency} submissions per round;"
        f" worker concurrency {settings.concurrency or 'default'}.",
    ]
    if settings.history:
        notes.append(f"Each server started with {settings.history:,} finished executions.")
    if settings.watch:
        notes.append("W1 and W2 runs were followed on their live run topic while they ran.")
    notes += [f"NOTE: {r.mode} ran as {r.effective_mode} (fallback)" for r in fallbacks]
    loads = ", ".join(f"{r.mode} {r.foreign_cpus:.2f}" for r in results)
    notes.append(f"CPUs used by other processes while measuring (of {os.cpu_count()}): {loads}")
    return "\n".join([*lines, "", *notes])


def to_json(results: list[ModeResult], host: dict[str, Any] | None = None) -> str:
    return json.dumps({"host": host, "modes": [asdict(r) for r in results]}, indent=2)
