"""``python -m bench.core``: the orchestration core alone, on a real SQLite file.

Drives ``Orchestrator`` through the commands a W1 fan-out produces (one workflow
submits N tasks and gathers them) the way the server's writer applies them: one
transaction per command with a savepoint, ``synchronous=NORMAL`` (the server fsyncs
the log on another thread). No sockets, no worker: what is left is the cost of the core
and the store per command, measured as CPU time of this process, so other load on the
machine moves it much less than the end-to-end figures.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from pycoflux.orchestration import commands, core, effects, model
from pycoflux.storage import orchestration, sqlite


class Harness:
    def __init__(self, path: Path, concurrency: int) -> None:
        self.db = sqlite.connect(path, synced_by_caller=True)
        self.store = orchestration.SqliteOrchestrationStore(self.db)
        self.core = core.Orchestrator(self.store, rng=random.Random(0))
        self.now = 1_700_000_000_000
        self.cpu: dict[str, list[float]] = defaultdict(list)
        self.frames: list[list[Any]] = []
        self.handle(commands.Start())
        workspace = self.reply(commands.CreateWorkspace(name="default", base_id=None))["id"]
        token = self.reply(commands.CreateSession(workspace_id=workspace))["sessionId"]
        self.session = token.split(".")[0]
        self.handle(commands.ConnectSession(token=token, workspace_id=workspace))
        self.handle(
            commands.DeclareTargets(
                session_id=self.session,
                targets={"flows": {"workflow": ["fanout"], "task": ["noop"]}},
                concurrency=concurrency,
            )
        )
        self.workspace = workspace

    def handle(self, command: commands.Command) -> list[effects.Effect]:
        self.now += 1
        started = time.process_time()
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("SAVEPOINT command")
        produced = self.core.handle(command, self.now)
        self.db.execute("RELEASE command")
        self.db.execute("COMMIT")
        self.cpu[type(command).__name__].append(time.process_time() - started)
        for effect in produced:
            if isinstance(effect, effects.Send):
                self.frames.append(effect.frame)
        return produced

    def reply(self, command: commands.Command) -> Any:
        for effect in self.handle(command):
            if isinstance(effect, effects.Reply):
                return effect.result
        raise RuntimeError(f"no reply to {command}")

    def executes(self) -> list[str]:
        found = [
            f[1]["params"][0] for f in self.frames if f[0] == 1 and f[1]["command"] == "execute"
        ]
        self.frames.clear()
        return found


def submit_root(harness: Harness) -> str:
    """Start a ``fanout`` run; returns its root execution id."""
    root: str = harness.reply(
        commands.SubmitWorkflow(
            workspace_id=harness.workspace,
            module="flows",
            target="fanout",
            arguments=[],
            options=model.StepOptions(),
        )
    )["executionId"]
    return root


def noop_child(
    harness: Harness,
    request: int,
    parent: str,
    argument: list[Any],
    options: model.StepOptions | None = None,
) -> commands.SubmitChild:
    """The workflow's submission of a ``noop`` task with one argument."""
    return commands.SubmitChild(
        session_id=harness.session,
        request_id=request,
        parent_id=parent,
        module="flows",
        target="noop",
        type=model.TargetType.TASK,
        arguments=[argument],
        group_id=None,
        options=options or model.StepOptions(),
    )


def fanout(harness: Harness, tasks: int) -> float:
    """One round: returns the CPU seconds the core spent per task."""
    root = submit_root(harness)
    running = harness.executes()
    assert running == [root], running
    before = sum(sum(v) for v in harness.cpu.values())
    children: list[str] = []
    in_flight: list[str] = []
    for request in range(1, tasks + 1):
        harness.handle(noop_child(harness, request, root, ["raw", request, []]))
        for frame in harness.frames:
            if frame[0] == 2 and frame[1] == request:
                children.append(frame[2][0])
        in_flight.extend(harness.executes())
        while len(in_flight) > 4:  # the worker finishes tasks while the workflow submits
            finish(harness, in_flight.pop(0))
            in_flight.extend(harness.executes())
    while in_flight:
        finish(harness, in_flight.pop(0))
        in_flight.extend(harness.executes())
    for index, child in enumerate(children):
        harness.handle(
            commands.Select(
                session_id=harness.session,
                request_id=tasks + 1 + index,
                execution_id=root,
                handles=[{"type": "execution", "id": child}],
                timeout_ms=None,
                suspend=False,
            )
        )
    finish(harness, root)
    return (sum(sum(v) for v in harness.cpu.values()) - before) / tasks


def backlog(harness: Harness, size: int) -> None:
    """Queue ``size`` executions of each kind that cannot start during the rounds: delayed
    by an hour, waiting (``wait_for``) on one of those, and requiring a tag no session
    offers (with a cache key, and with a defer key). A pass must not pay for them."""
    root = submit_root(harness)
    harness.executes()
    later = model.StepOptions(delay=3_600_000)
    waiting = model.StepOptions(wait_for=[0])
    gpu = {"gpu": ["a100"]}
    cached = model.StepOptions(requires=gpu, cache={"params": True})
    deferred = model.StepOptions(requires=gpu, defer={"params": True})
    request = 10**9
    first: str | None = None
    for i in range(size):
        for options in (later, waiting, cached, deferred):
            request += 1
            reference = [] if first is None else [["execution", first]]
            argument = ["raw", {"type": "ref", "index": 0} if reference else i, reference]
            value = argument if options is waiting else ["raw", i, []]
            harness.handle(noop_child(harness, request, root, value, options))
            if first is None:
                first = next(f[2][0] for f in harness.frames if f[0] == 2 and f[1] == request)
    harness.frames.clear()
    if harness.executes():
        raise RuntimeError("backlog work started")


def finish(harness: Harness, execution_id: str) -> None:
    harness.handle(
        commands.RecordResult(
            session_id=harness.session, execution_id=execution_id, value=["raw", None, []]
        )
    )
    harness.handle(
        commands.RecordTermination(session_id=harness.session, execution_ids=[execution_id])
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.core", description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="first queue this many delayed, waiting and unplaceable executions of each kind",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        harness = Harness(Path(directory) / "orchestration.sqlite", args.concurrency)
        if args.backlog:
            backlog(harness, args.backlog)
        fanout(harness, args.tasks)  # warm-up
        harness.cpu.clear()
        per_task = [fanout(harness, args.tasks) for _ in range(args.rounds)]
        queued = f", {4 * args.backlog} executions queued that cannot start" if args.backlog else ""
        print(f"W1-like fan-out of {args.tasks}, {args.rounds} rounds after a warm-up{queued}")
        print(f"core + store CPU per task: median {statistics.median(per_task) * 1e6:.0f} us")
        print(f"{'command':<20} {'count':>7} {'median us':>10} {'mean us':>9}")
        for name, samples in sorted(harness.cpu.items(), key=lambda item: -sum(item[1])):
            print(
                f"{name:<20} {len(samples):>7} {statistics.median(samples) * 1e6:>10.0f}"
                f" {statistics.fmean(samples) * 1e6:>9.0f}"
            )


if __name__ == "__main__":
    main()
