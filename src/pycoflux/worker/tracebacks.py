"""Python traceback text -> the ``[file, line, name, source]`` frames the server stores."""

from __future__ import annotations

import re
from typing import Any

_FRAME_LINE = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<name>.+)$')

Frame = list[Any]  # [file: str, line: int, name: str, source: str]


def parse_frames(traceback: str | None) -> list[Frame]:
    """Parse every ``File "...", line N, in name`` block; unparseable text becomes one frame."""
    if not traceback:
        return []
    lines = traceback.splitlines()
    frames: list[Frame] = []
    for i, line in enumerate(lines):
        match = _FRAME_LINE.match(line)
        if match is None:
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        source = following.strip() if following.startswith("    ") else ""
        frames.append([match["file"], int(match["line"]), match["name"], source])
    if not frames:
        return [["", 0, "", traceback]]
    return frames


def error_tuple(error: Any) -> list[Any] | None:
    """An adapter ``{type, message, traceback}`` object -> ``[type, message, frames]``."""
    if not isinstance(error, dict):
        return None
    return [
        str(error.get("type") or ""),
        str(error.get("message") or ""),
        parse_frames(error.get("traceback")),
    ]
