"""Tag sets (``requires``/``provides``/``accepts``) as written on the command line."""

from __future__ import annotations

from collections.abc import Iterable


def parse_tag_set(items: Iterable[str]) -> dict[str, list[str]]:
    """``["gpu:A100", "gpu:H100;region:eu"]`` -> ``{"gpu": ["A100", "H100"], "region": ["eu"]}``.

    Items arrive already comma-split (slice flags); each may hold ``;``-separated parts, and a
    part's values may themselves be comma-separated. A part without ``:`` means ``"true"``.
    """
    tags: dict[str, list[str]] = {}
    for item in items:
        for part in item.split(";"):
            part = part.strip()
            if not part:
                continue
            key, sep, values = part.partition(":")
            key = key.strip()
            tags.setdefault(key, []).extend(
                [v.strip() for v in values.split(",") if v.strip()] if sep else ["true"]
            )
    return tags


def parse_key_values(items: Iterable[str]) -> dict[str, list[str]]:
    """Worker ``provides``/``accepts``: split at the first ``:``; no ``:`` means ``"true"``."""
    tags: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition(":")
        tags.setdefault(key, []).append(value if sep else "true")
    return tags
