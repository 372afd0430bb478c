"""Live views (``--watch``): poll a topic-backed renderer and redraw until Ctrl-C.

Upstream redraws on every topic update pushed over WebSocket; polling the REST snapshot
gives the same picture with a small delay (cli.md §3.4).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from pycoflux import errors
from pycoflux.cli import output

INTERVAL = 0.5


def redraw(render: Callable[[], list[str]]) -> output.Rendered:
    drawn = 0
    try:
        while True:
            try:
                lines = render()
            except errors.ServerUnreachableError:
                lines = None  # keep the last picture while the server is away
            if lines is not None:
                if drawn:
                    sys.stdout.write(f"\x1b[{drawn}F\x1b[J")
                sys.stdout.write("".join(f"{line}\n" for line in lines))
                sys.stdout.flush()
                drawn = len(lines)
            time.sleep(INTERVAL)
    except KeyboardInterrupt:
        return None
