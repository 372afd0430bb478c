"""``.venv/bin/python -m bench``: run the executor-mode benchmark and print the table."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from bench import host
from bench.run import Settings, run, table, to_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--modes", default="spawn,fork,reuse", help="comma-separated executor modes"
    )
    parser.add_argument("--workloads", default="w1,w2,w3", help="comma-separated: w1, w2, w3")
    parser.add_argument("--repeats", type=int, default=3, help="measured rounds per workload")
    parser.add_argument("--fanout", type=int, default=1000, help="W1 tasks per round")
    parser.add_argument("--chain", type=int, default=100, help="W2 tasks per round")
    parser.add_argument("--latency", type=int, default=200, help="W3 submissions per round")
    parser.add_argument(
        "--concurrency", type=int, default=0, help="worker concurrency (0: its default)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one round (smoke)")
    parser.add_argument("--profile", type=Path, help="record py-spy profiles into this directory")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each mode, wait up to this long for the CPUs to be idle",
    )
    parser.add_argument("--json", type=Path, help="also write the raw samples here")
    parser.add_argument("--keep", action="store_true", help="keep logs and data directories")
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        metavar="N",
        help="seed each server's database with N finished executions first",
    )
    parser.add_argument(
        "--watch",
        action="store_true",
        help="follow W1's and W2's runs on the live run topic, as Studio open on them does",
    )
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("the benchmark reads /proc for memory figures: Linux only", file=sys.stderr)
        return 2
    settings = Settings(
        modes=tuple(m.strip() for m in args.modes.split(",") if m.strip()),
        workloads=tuple(w.strip().lower() for w in args.workloads.split(",") if w.strip()),
        repeats=1 if args.quick else args.repeats,
        fanout=100 if args.quick else args.fanout,
        chain=20 if args.quick else args.chain,
        latency=20 if args.quick else args.latency,
        concurrency=args.concurrency,
        profile=args.profile,
        wait_idle=args.wait_idle,
        keep=args.keep,
        history=args.history,
        watch=args.watch,
    )
    print(
        f"-- {platform.python_implementation()} {platform.python_version()},"
        f" {os.cpu_count()} CPUs, {platform.platform()}",
        flush=True,
    )
    data_root = Path(tempfile.gettempdir())  # where the servers' data directories go
    probes = host.probe(data_root)
    print(f"-- {probes.line()}", flush=True)
    results = run(settings)
    after = host.probe(data_root)
    print()
    print(table(results, settings))
    print(f"before the run, {probes.line()}")
    print(f"after the run,  {after.line()}")
    if args.json:
        hosts = {"before": asdict(probes), "after": asdict(after)}
        args.json.write_text(to_json(results, host=hosts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
