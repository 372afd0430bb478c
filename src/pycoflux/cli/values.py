"""Human rendering of Coflux values, references, results and tracebacks (cli.md §4.5.5)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def human_size(size: int | float) -> str:
    """``512 bytes``, ``1.5KiB``, ``3.0MiB`` ..."""
    if size < 1024:
        return f"{int(size)} bytes"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f}{unit}"
    raise AssertionError("unreachable")


def format_number(value: int | float) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if math.isfinite(value) and value.is_integer():
        return str(int(value))
    return repr(value)


def format_duration(seconds: float) -> str:
    """Seconds as ``1d2h3m4s`` (``0s`` when zero)."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    remaining = abs(seconds)
    parts: list[str] = []
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        count = int(remaining // length)
        if count:
            parts.append(f"{count}{unit}")
            remaining -= count * length
    remaining = round(remaining, 9)
    if remaining:
        parts.append(f"{format_number(remaining)}s")
    return sign + "".join(parts)


def format_reference(ref: Any) -> str:
    if not isinstance(ref, dict):
        return "<ref ?>"
    kind = ref.get("type")
    if kind == "execution":
        module, target = ref.get("module"), ref.get("target")
        return f"<execution {module}/{target}>" if module and target else "<execution>"
    if kind == "asset":
        # Result values nest the details under "asset"; log values carry them flat.
        nested = ref.get("asset")
        asset: dict[str, Any] = nested if isinstance(nested, dict) else ref
        count = asset.get("totalCount") or 0
        size = human_size(asset.get("totalSize") or 0)
        name = asset.get("name")
        if name:
            return f'<asset "{name}" ({count} files, {size})>'
        return f"<asset ({count} files, {size})>"
    if kind == "fragment":
        return f"<fragment {ref.get('format')} ({human_size(ref.get('size') or 0)})>"
    if kind == "input":
        return f"<input {ref.get('inputId')}>"
    return f"<{kind}>" if kind else "<ref ?>"


def format_data(data: Any, references: Sequence[Any] = (), depth: int = 0) -> str:
    """Render the adapter's data format the way a Python user would recognise it."""

    def inner(item: Any) -> str:
        return format_data(item, references, depth + 1)

    def flat(item: Any) -> str:
        return format_data(item, references, depth)

    if data is None:
        return "None"
    if isinstance(data, bool):
        return "True" if data else "False"
    if isinstance(data, int | float):
        return format_number(data)
    if isinstance(data, str):
        return f'"{data}"'
    if isinstance(data, list):
        return "[" + ", ".join(flat(x) for x in data) + "]"
    if not isinstance(data, dict):
        return str(data)
    kind = data.get("type")
    items = data.get("items") or []
    if kind == "dict":
        if not items:
            return "{}"
        pad = "  " * (depth + 1)
        lines = [
            f"{pad}{inner(items[i])} ↦ {inner(items[i + 1])}" for i in range(0, len(items) - 1, 2)
        ]
        return "{\n" + "\n".join(lines) + "\n" + "  " * depth + "}"
    if kind == "set":
        return "{" + ", ".join(flat(x) for x in items) + "}" if items else "∅"
    if kind == "tuple":
        return "(" + ", ".join(flat(x) for x in items) + ")"
    if kind in ("datetime", "date", "time", "decimal", "uuid"):
        return str(data.get("value"))
    if kind == "duration":
        value = data.get("value")
        return format_duration(float(value)) if isinstance(value, int | float) else str(value)
    if kind == "ref":
        index = data.get("index")
        if isinstance(index, int) and 0 <= index < len(references):
            return format_reference(references[index])
        return "<ref ?>"
    if kind == "stream":
        return f"<stream {data.get('id')}>"
    return str(data)


def format_value(value: Any) -> str:
    """A topic value: raw data rendered, blobs summarised."""
    if not isinstance(value, dict):
        return str(value)
    references = value.get("references") or []
    if value.get("type") == "blob":
        return f"<blob ({human_size(value.get('size') or 0)})>"
    return format_data(value.get("data"), references)


def format_error(error: Any) -> list[str]:
    """An error result as a Python-style traceback."""
    if not isinstance(error, dict):
        return [str(error)]
    lines: list[str] = []
    frames = error.get("frames") or []
    if frames:
        lines.append("Traceback (most recent call last):")
        for frame in frames:
            lines.append(
                f'  File "{frame.get("file")}", line {frame.get("line")}, in {frame.get("name")}'
            )
            if frame.get("code"):
                lines.append(f"    {frame['code']}")
    kind, message = error.get("type") or "", error.get("message") or ""
    lines.append(f"{kind}: {message}" if kind else message)
    return lines
