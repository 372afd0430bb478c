"""The floor under W1-W3: the same workflows with the orchestration taken out.

``python -m bench.floor`` runs ``fanout`` (W1), ``chain`` (W2) and ``trivial`` (W3) from
``benchflows.py`` in pycoflux's own executors (the fork and reuse launchers and pool, the
official SDK), against a stand-in for the rest of the platform that does only what any
implementation must do for them: answer each ``submit_execution`` with an id, send the
child to an idle executor, keep its result, and answer each ``select`` (or a client's
request for a workflow's result) with that result. No SQLite, no orchestration core, no
HTTP, no logs. It runs at three levels:

``pipe``     the stand-in lives in the executors' parent process and writes nothing down.
``fsync``    the same, plus what "durable before acknowledged" costs: before any answer
             leaves, the facts it acknowledges (a submission, a result, a dependency)
             are appended to a file and ``fdatasync``-ed by a thread, one sync for all
             that arrived while the previous one was in flight (a group commit).
``socket``   split as pycoflux is: the executors' parent relays to a second process over
             a loopback WebSocket (``websockets`` on uvloop, as the worker uses), and that
             process keeps the state and syncs the file. W3's client is a second
             connection from the first process.

Each W1/W2 figure is the median over rounds of what the workflow measures itself, as in
``python -m bench``; W3 is timed by the client, one submission after another. What
remains between ``socket`` and the full benchmark is what the real server and worker
add; ``socket`` itself is what this process layout, the SDK's synchronous requests and
one fsync per acknowledgement cost on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from bench import host
from bench.run import percentile
from bench.stack import free_port, tree_cpu_seconds
from pycoflux.worker import executors
from pycoflux.worker.adapter import AdapterProcess, encode_line
from pycoflux.worker.connection import _CoalescingConnection
from pycoflux.worker.pool import ExecutorPool

FLOWS = Path(__file__).with_name("benchflows.py")
MODULE = "benchflows"
LEVELS = ("pipe", "fsync", "socket")
CONCURRENCY = 6  # the worker's default: the root workflow and five tasks at a time
Message = dict[str, Any]


Reply = Callable[[Message], None]


class Authority:
    """What the server must do for W1-W3: ids, results, answers, durable first.

    Messages in: ``submit`` and ``select`` from executions, ``result`` from the worker,
    ``run`` from a client (submit a workflow and answer with its result). Each is answered
    through the ``reply`` it came with; ``execute`` for each new execution goes to the
    worker. With a journal, nothing leaves before the facts it acknowledges are synced: a
    thread appends and ``fdatasync``-s them while the loop goes on collecting the next
    batch, which the following sync covers (a group commit).
    """

    def __init__(self, journal: Path | None, worker: Reply) -> None:
        self._journal = open(journal, "ab", buffering=0) if journal else None  # noqa: SIM115
        self._worker = worker
        self._steps = itertools.count(1)
        self._results: dict[str, Any] = {}
        self._waiting: dict[str, list[tuple[Reply, int]]] = {}
        self._facts: list[bytes] = []
        self._outbox: list[tuple[Reply, Message]] = []
        self._scheduled = False
        self._syncing = False

    def handle(self, message: Message, reply: Reply) -> None:
        op = message["op"]
        if op in ("submit", "run"):
            execution_id = f"R:{next(self._steps)}:1"
            self._record(["submit", execution_id, message["target"], message["arguments"]])
            if op == "submit":
                self._outbox.append((reply, {"rid": message["rid"], "execution_id": execution_id}))
            else:
                self._waiting[execution_id] = [(reply, message["rid"])]
            execute = {
                "op": "execute",
                "execution_id": execution_id,
                "target": message["target"],
                "arguments": message["arguments"],
            }
            self._outbox.append((self._worker, execute))
        elif op == "result":
            execution_id = message["execution_id"]
            self._results[execution_id] = message["value"]
            self._record(["result", execution_id, message["value"]])
            for waiter, rid in self._waiting.pop(execution_id, []):
                self._outbox.append((waiter, {"rid": rid, "value": message["value"]}))
        elif op == "select":
            execution_id = message["id"]
            self._record(["dependency", message["from"], execution_id])
            if execution_id in self._results:
                answer = {"rid": message["rid"], "value": self._results[execution_id]}
                self._outbox.append((reply, answer))
            else:
                self._waiting.setdefault(execution_id, []).append((reply, message["rid"]))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _record(self, fact: list[Any]) -> None:
        if self._journal is not None:
            self._facts.append(json.dumps(fact).encode() + b"\n")

    def _flush(self) -> None:
        self._scheduled = False
        if self._syncing:
            return  # the sync in flight flushes again when it is done
        facts, self._facts = self._facts, []
        outbox, self._outbox = self._outbox, []
        if not facts:
            self._deliver(outbox)
            return
        self._syncing = True
        synced = asyncio.get_running_loop().run_in_executor(None, self._sync, facts)
        synced.add_done_callback(lambda _: self._synced(outbox))

    def _sync(self, facts: list[bytes]) -> None:
        assert self._journal is not None
        self._journal.write(b"".join(facts))
        os.fdatasync(self._journal.fileno())

    def _synced(self, outbox: list[tuple[Reply, Message]]) -> None:
        self._syncing = False
        self._deliver(outbox)
        if self._outbox or self._facts:
            self._flush()

    @staticmethod
    def _deliver(outbox: list[tuple[Reply, Message]]) -> None:
        for reply, message in outbox:
            reply(message)


class Relay:
    """The worker's place: runs executions in pooled executors, relays their requests."""

    def __init__(self, pool: ExecutorPool, concurrency: int) -> None:
        self._pool = pool
        self._slots = asyncio.Semaphore(concurrency)  # as the server assigns: at most this many
        self._requests = itertools.count(1)
        self._pending: dict[int, tuple[AdapterProcess, int, str | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.send: Callable[[Message], None] = lambda message: None

    def receive(self, message: Message) -> None:
        if message.get("op") == "execute":
            task = asyncio.create_task(self._run(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        process, request_id, target = self._pending.pop(message["rid"])
        if target is not None:  # the answer to a submit_execution
            result: Any = {
                "execution_id": message["execution_id"],
                "module": MODULE,
                "target": target,
            }
        else:
            result = {"winner": 0, "status": "ok", "value": message["value"]}
        # A reply is one line on a pipe that is never full here: written at once, no drain.
        process._process.stdin.write(encode_line({"id": request_id, "result": result}))

    async def _run(self, assignment: Message) -> None:
        async with self._slots:
            await self._execute(assignment)

    async def _execute(self, assignment: Message) -> None:
        execution_id = assignment["execution_id"]
        process = await self._pool.acquire()
        params = {
            "execution_id": execution_id,
            "module": MODULE,
            "target": assignment["target"],
            "arguments": assignment["arguments"],
            "working_dir": os.getcwd(),
        }
        await process.write({"method": "execute", "params": params})
        while (message := await process.read_message()) is not None:
            method = message.get("method")
            if method == "ready" and "id" not in message:
                self._pool.release(process, reuse=True)
                return
            if method == "execution_result":
                value = message["params"]["result"]
                self.send({"op": "result", "execution_id": execution_id, "value": value})
            elif method == "execution_error":
                raise RuntimeError(f"{execution_id} failed: {message['params']}")
            elif method in ("submit_execution", "select"):
                rid = next(self._requests)
                params = message["params"]
                if method == "submit_execution":
                    self._pending[rid] = (process, message["id"], params["target"])
                    self.send(
                        {
                            "op": "submit",
                            "rid": rid,
                            "target": params["target"],
                            "arguments": params["arguments"],
                        }
                    )
                else:
                    self._pending[rid] = (process, message["id"], None)
                    handle = params["handles"][0]["id"]
                    self.send({"op": "select", "rid": rid, "id": handle, "from": execution_id})
        await process.stop(5.0)
        self._pool.release(process)


async def _authority_process(port: int, journal: Path) -> None:
    """The ``socket`` level's server: the worker connects on ``/worker``, a client on ``/client``."""
    done = asyncio.Event()
    worker: list[Reply] = []
    authority = Authority(journal, lambda m: worker[0](m))

    async def serve_one(connection: ServerConnection) -> None:
        send = _sender(connection)
        if connection.request is not None and connection.request.path == "/worker":
            worker.append(send)
        async for frame in connection:
            authority.handle(json.loads(frame), send)
        if worker and worker[0] is send:
            done.set()

    async with serve(serve_one, "127.0.0.1", port, compression=None):
        await done.wait()


def _sender(connection: Any) -> Reply:
    """Queue a frame on the sans-I/O protocol and write it out now, without awaiting."""

    def send(message: Message) -> None:
        connection.protocol.send_text(json.dumps(message).encode())
        for data in connection.protocol.data_to_send():
            connection.transport.write(data)

    return send


@dataclass
class Round:
    seconds: float
    cpu: float


@dataclass
class Level:
    mode: str
    level: str
    w1: list[Round] = field(default_factory=list)
    w2: list[Round] = field(default_factory=list)
    w3_p50: list[float] = field(default_factory=list)
    w3_p99: list[float] = field(default_factory=list)


async def _measure(
    mode: str, level: str, directory: Path, rounds: int, sizes: tuple[int, int, int]
) -> Level:
    fanout, chain, submissions = sizes
    launcher = executors.make_launcher(
        executors.ExecutorMode(mode),
        (sys.executable, "-m", "coflux"),
        (MODULE,),
        cwd=directory,
        ready_timeout=30.0,
    )
    pool = ExecutorPool(launcher, concurrency=CONCURRENCY, graceful_exit=5.0)
    await pool.start()
    relay = Relay(pool, CONCURRENCY)
    server: asyncio.subprocess.Process | None = None
    sockets: list[Any] = []
    journal = directory / f"journal-{mode}-{level}"
    run_workflow: Callable[[str], Awaitable[Any]]
    if level == "socket":
        port = free_port()
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.floor",
            "--serve",
            str(port),
            str(journal),
            cwd=Path(__file__).parent.parent,
        )
        worker_socket = await _connect(port, "worker")
        client_socket = await _connect(port, "client")
        sockets += (worker_socket, client_socket)
        relay.send = _sender(worker_socket)
        pumping = asyncio.create_task(_pump(worker_socket, relay.receive))
        send_client = _sender(client_socket)

        async def run_workflow(target: str) -> Any:
            send_client({"op": "run", "rid": 0, "target": target, "arguments": []})
            return json.loads(await client_socket.recv())["value"]

    else:
        authority = Authority(journal if level == "fsync" else None, relay.receive)
        relay.send = lambda message: authority.handle(message, relay.receive)

        async def run_workflow(target: str) -> Any:
            answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
            authority.handle(
                {"op": "run", "rid": 0, "target": target, "arguments": []}, answer.set_result
            )
            return (await answer)["value"]

    results = Level(mode, level)
    markers = itertools.count()
    try:
        for index in range(rounds + 1):  # the first round warms up
            for workload, n, samples in (
                ("fanout", fanout, results.w1),
                ("chain", chain, results.w2),
            ):
                marker = directory / f"marker-{mode}-{level}-{next(markers)}"
                cpu = tree_cpu_seconds(os.getpid())
                arguments = [
                    {"type": "inline", "format": "json", "value": n},
                    {"type": "inline", "format": "json", "value": str(marker)},
                ]
                relay.receive(
                    {
                        "op": "execute",
                        "execution_id": f"root-{marker.name}",
                        "target": workload,
                        "arguments": arguments,
                    }
                )
                while not marker.exists():
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.05)
                if index:
                    elapsed = float(marker.read_text())
                    spent = tree_cpu_seconds(os.getpid()) - cpu
                    samples.append(Round(elapsed / n, spent / n))
            latencies = []
            for _ in range(submissions):
                started = time.perf_counter()
                value = await run_workflow("trivial")
                latencies.append(time.perf_counter() - started)
                assert value["value"] == 1, value
            if index:
                results.w3_p50.append(statistics.median(latencies))
                results.w3_p99.append(percentile(latencies, 0.99))
    finally:
        for connection in sockets:
            await connection.close()
        if server is not None:
            pumping.cancel()
            await server.wait()
        await pool.close()
    return results


async def _pump(connection: Any, receive: Reply) -> None:
    async for frame in connection:
        receive(json.loads(frame))


async def _connect(port: int, role: str) -> Any:
    for _ in range(100):
        with contextlib.suppress(OSError):
            return await connect(
                f"ws://127.0.0.1:{port}/{role}",
                compression=None,
                create_connection=_CoalescingConnection,
            )
        await asyncio.sleep(0.05)
    raise RuntimeError("the authority process did not start")


def _table(levels: list[Level]) -> str:
    rows = [
        (
            "mode",
            "level",
            "W1 tasks/s",
            "W1 ms/task",
            "W2 ms/task",
            "W3 p50 ms",
            "W3 p99 ms",
            "W1 CPU ms/task",
        )
    ]
    for result in levels:
        w1 = statistics.median(r.seconds for r in result.w1)
        w2 = statistics.median(r.seconds for r in result.w2)
        cpu = statistics.median(r.cpu for r in result.w1)
        rows.append(
            (
                result.mode,
                result.level,
                f"{1 / w1:.0f}",
                f"{w1 * 1000:.2f}",
                f"{w2 * 1000:.2f}",
                f"{statistics.median(result.w3_p50) * 1000:.2f}",
                f"{statistics.median(result.w3_p99) * 1000:.2f}",
                f"{cpu * 1000:.2f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--modes", default="fork,reuse")
    parser.add_argument("--levels", default=",".join(LEVELS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fanout", type=int, default=1000)
    parser.add_argument("--chain", type=int, default=100)
    parser.add_argument("--submissions", type=int, default=200)
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "JOURNAL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        uvloop.run(_authority_process(int(args.serve[0]), Path(args.serve[1])))
        return 0
    root = Path(tempfile.mkdtemp(prefix="pycoflux-floor-"))
    try:
        shutil.copy(FLOWS, root / FLOWS.name)
        print(host.probe(root).line(), flush=True)
        results = []
        sizes = (args.fanout, args.chain, args.submissions)
        for mode in args.modes.split(","):
            for level in args.levels.split(","):
                print(f"-- {mode} / {level}", flush=True)
                results.append(uvloop.run(_measure(mode, level, root, args.rounds, sizes)))
        print(_table(results))
        print(
            f"\nmedians of {args.rounds} rounds after one warm-up; W1 fanout({args.fanout}),"
            f" W2 chain({args.chain}), W3 {args.submissions} trivial() runs;"
            " CPU: this process tree (relay, executors, authority)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
