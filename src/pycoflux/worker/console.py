"""The worker's own diagnostics: key=value lines on stderr."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

LOGGER_NAME = "pycoflux.worker"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def fields(**values: Any) -> dict[str, Any]:
    """Structured fields for a log call: ``log.info("msg", extra=fields(a=1))``."""
    return {"fields": values}


_SPECIAL = frozenset(' "=\n')


def _quote(value: Any) -> str:
    text = str(value)
    if not text or not _SPECIAL.isdisjoint(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class KeyValueFormatter(logging.Formatter):
    """Renders ``time=... level=... msg=... key=value`` lines."""

    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # one strftime a second: busy workers log a lot
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second))
        parts = [
            f"time={self._stamp}.{int(record.msecs):03d}",
            f"level={record.levelname.lower()}",
            f"msg={_quote(record.getMessage())}",
        ]
        extra = getattr(record, "fields", None)
        if isinstance(extra, Mapping):
            parts.extend(f"{k}={_quote(v)}" for k, v in extra.items() if v is not None)
        if record.exc_info and record.levelno >= logging.ERROR:
            parts.append(f"error={_quote(record.exc_info[1])}")
        return " ".join(parts)


def configure(level: str) -> None:
    """Send worker diagnostics to stderr at ``level`` (unknown levels fall back to warn)."""
    logger = get_logger()
    resolved = _LEVELS.get(level.lower())
    if resolved is None:
        resolved = logging.WARNING
        print(f"unknown log level {level!r}; using warn", file=sys.stderr)
    logger.setLevel(resolved)
    if not any(getattr(h, "_pycoflux_worker", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(KeyValueFormatter())
        handler._pycoflux_worker = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
