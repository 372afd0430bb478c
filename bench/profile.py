"""Summarise py-spy ``--format raw`` profiles: where the samples went, by function.

``.venv/bin/python -m bench.profile DIR [--top N] [--match TEXT]`` prints, for each
``*.txt`` profile in DIR, the functions with the largest inclusive share (the function
and everything it called) and the largest self share (samples in that frame itself).
Frames are ``function (file:line)``; the line is dropped so one function is one row.

py-spy also samples threads that are merely blocked (an idle thread pool, asyncio's
waitpid threads, the event loop in ``select``); such stacks are left out unless
``--with-idle`` is given, so shares are of the time the process was doing something.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
_IDLE_LEAVES = (
    "select (selectors.py)",  # the event loop waiting
    "_do_waitpid (asyncio/unix_events.py)",  # one thread per child, blocked in waitpid
    "_worker (concurrent/futures/thread.py)",  # an idle to_thread worker
    "wait (threading.py)",
)


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match.group('name')} ({path})"


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        body, _, count = line.rpartition(" ")
        if not body or not count.isdigit():
            continue
        frames = [_short(f) for f in body.split(";")]
        stacks.append((frames, int(count)))
    return stacks


def summarise(path: Path, top: int, match: str | None, idle: bool = False) -> str:
    stacks = load(path)
    if not idle:
        stacks = [(f, n) for f, n in stacks if not f[-1].endswith(_IDLE_LEAVES)]
    total = sum(count for _, count in stacks)
    if not total:
        return f"{path.name}: no samples"
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        # The first element is the thread ("process ... thread ..."); count each function once.
        for frame in set(frames[1:]):
            inclusive[frame] += count
        own[frames[-1]] += count
    lines = [f"== {path.name}: {total} {'samples' if idle else 'active samples'}"]
    for title, counter in (("inclusive", inclusive), ("self", own)):
        lines.append(f"-- top {top} {title}")
        shown = 0
        for frame, count in counter.most_common():
            if match and match not in frame:
                continue
            lines.append(f"{100 * count / total:6.1f}%  {frame}")
            shown += 1
            if shown >= top:
                break
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", help="only frames containing this text (e.g. pycoflux)")
    parser.add_argument("--with-idle", action="store_true", help="keep blocked-thread samples")
    args = parser.parse_args(argv)
    for path in sorted(args.directory.glob("*.txt")):
        print(summarise(path, args.top, args.match, args.with_idle))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
