"""The processes a benchmark measures: the real server and a real ``coflux worker``, on loopback.

Memory comes from ``/proc`` (Linux): the kernel's high-water mark (``VmHWM``) for the
server and the worker, and the sampled peak of the executors' summed PSS (proportional
set size, so pages a fork shares with its parent are not counted once per child).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

COFLUX = Path(sys.executable).parent / "coflux"
PROJECT = "bench"

# The server binds all interfaces by default; the benchmark stays on loopback.
_SERVE = (
    "import dataclasses; from pycoflux.server import app, config;"
    " app.serve(dataclasses.replace(config.from_env(), bind='127.0.0.1'))"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Server:
    """``pycoflux.server.app.serve`` in a subprocess with its own data directory."""

    def __init__(self, directory: Path) -> None:
        self.data_dir = directory / "data"
        self.log_path = directory / "server.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COFLUX_")}
        env.update(
            {
                "PORT": str(self.port),
                "COFLUX_DATA_DIR": str(self.data_dir),
                "COFLUX_REQUIRE_AUTH": "false",
                "COFLUX_PROJECT": PROJECT,
            }
        )
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _SERVE],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited:\n{self.log_path.read_text()}")
                try:
                    client.get(f"{self.url}/api/discover")
                    return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not answer:\n{self.log_path.read_text()}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)

    def database_bytes(self) -> int:
        """Bytes in use in the project's databases (pages minus free pages), WAL included."""
        import sqlite3

        total = 0
        for path in sorted((self.data_dir / "projects" / PROJECT).glob("*.sqlite")):
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                pages = db.execute("PRAGMA page_count").fetchone()[0]
                free = db.execute("PRAGMA freelist_count").fetchone()[0]
                size = db.execute("PRAGMA page_size").fetchone()[0]
            finally:
                db.close()
            total += (pages - free) * size
        return total


class Worker:
    """``coflux worker --executor <mode> benchflows`` in the benchmark's directory."""

    def __init__(self, directory: Path, server: Server, mode: str, concurrency: int) -> None:
        self.directory = directory
        self.server = server
        self.mode = mode
        self.concurrency = concurrency
        self.log_path = directory / f"worker-{mode}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "COFLUX_HOST": f"localhost:{self.server.port}",
            "COFLUX_PROJECT": PROJECT,
        }
        if "PYTHONPATH" in os.environ:  # to measure another checkout: PYTHONPATH=<it>/src
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        argv = [str(COFLUX), "worker", "--register", "--executor", self.mode]
        if self.concurrency > 0:
            argv += ["--concurrency", str(self.concurrency)]
        argv += ["--adapter", f"{sys.executable},-m,coflux", "benchflows"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=self.directory,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while "connected" not in self.log() or "executor mode" not in self.log():
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker did not connect:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def effective_mode(self) -> str:
        for line in self.log().splitlines():
            if 'msg="executor mode"' in line:
                return line.rsplit("mode=", 1)[-1].strip()
        return "?"

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


def peak_rss(pid: int) -> int:
    """The process's resident-set high-water mark in bytes (0 if unknown)."""
    return _status_bytes(pid, "VmHWM:")


def rss(pid: int) -> int:
    """The process's resident set now, in bytes (0 if unknown)."""
    return _status_bytes(pid, "VmRSS:")


def _status_bytes(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces; ppid follows the state.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def descendants(root: int) -> list[int]:
    tree = _children()
    found: list[int] = []
    stack = list(tree.get(root, []))
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(tree.get(pid, []))
    return found


class ExecutorMemory:
    """Samples the summed PSS of a worker's descendants (its executors) and keeps the peak."""

    def __init__(self, worker_pid: int, interval: float = 1.0) -> None:
        self._root = worker_pid
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, name="executor-memory", daemon=True)

    def __enter__(self) -> ExecutorMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            total = sum(_pss(pid) for pid in descendants(self._root))
            self.peak = max(self.peak, total)


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def busy_cpu_seconds() -> float:
    """CPU-seconds all CPUs have spent not idle since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    # guest time is already included in user time
    return (sum(values[:8]) - idle) / _TICK


def tree_cpu_seconds(*roots: int) -> float:
    """CPU-seconds used by these processes and their descendants, including reaped children."""
    total = 0.0
    for pid in {p for root in roots for p in (root, *descendants(root))}:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15]) / _TICK  # utime stime cutime cstime
    return total


class ForeignLoad:
    """How much CPU other processes took while a mode was measured (CPU-seconds per second)."""

    def __init__(self, *roots: int) -> None:
        self._roots = roots
        self.share = 0.0

    def _sample(self) -> tuple[float, float, float]:
        own = os.times()
        ours = tree_cpu_seconds(*self._roots) + own.user + own.system
        return time.monotonic(), busy_cpu_seconds(), ours

    def __enter__(self) -> ForeignLoad:
        self._start = self._sample()
        return self

    def __exit__(self, *_: object) -> None:
        end = self._sample()
        wall = end[0] - self._start[0]
        foreign = (end[1] - self._start[1]) - (end[2] - self._start[2])
        self.share = max(foreign, 0.0) / wall if wall > 0 else 0.0


def wait_for_idle(limit: float, threshold: float = 0.15) -> float:
    """Wait (up to ``limit`` s) until the CPUs are at most ``threshold`` busy; return that share."""
    deadline = time.monotonic() + limit
    while True:
        before, started = busy_cpu_seconds(), time.monotonic()
        time.sleep(2.0)
        share = (busy_cpu_seconds() - before) / (time.monotonic() - started)
        if share <= threshold or time.monotonic() >= deadline:
            return share
        print(f"-- waiting for an idle machine ({share:.2f} CPUs busy)", flush=True)


def process_cpu_seconds(pid: int, *, children: bool = False) -> float:
    """CPU-seconds of one process (all its threads); with ``children``, plus reaped children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11 : 15 if children else 13]) / _TICK
