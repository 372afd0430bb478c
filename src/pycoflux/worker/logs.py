"""Execution log messages: adapter ``log`` notifications -> ``POST /logs`` entries."""

from __future__ import annotations

import time
from typing import Any, NotRequired, TypedDict

from pycoflux.worker.values import ValueCodec


class LogEntry(TypedDict):
    """One message in the ``POST /logs`` body."""

    runId: str
    executionId: str
    workspaceId: str
    timestamp: int
    level: int
    template: NotRequired[str]
    values: dict[str, Any]


async def build_entry(
    codec: ValueCodec,
    params: dict[str, Any],
    *,
    run_id: str,
    execution_id: str,
    workspace_id: str,
) -> LogEntry:
    """One log-store entry, timestamped now, with placeholder values converted."""
    timestamp = int(time.time() * 1000)
    values: dict[str, Any] = {}
    raw_values = params.get("values")
    if isinstance(raw_values, dict):
        for name, value in raw_values.items():
            values[str(name)] = await codec.to_log_value(value)
    level = params.get("level")
    entry: LogEntry = {
        "runId": run_id,
        "executionId": execution_id,
        "workspaceId": workspace_id,
        "timestamp": timestamp,
        "level": level if isinstance(level, int) and not isinstance(level, bool) else 2,
        "values": values,
    }
    template = params.get("template")
    if isinstance(template, str):
        entry["template"] = template
    return entry
