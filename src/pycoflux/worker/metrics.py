"""Metric points: x-value resolution, per-key throttling and batched delivery."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any, TypedDict

from pycoflux.worker import console
from pycoflux.worker.batching import HttpBatcher

log = console.get_logger()

DEFAULT_RATE = 10.0  # points per second when a key has no definition


class MetricPoint(TypedDict):
    """One entry in the ``POST /metrics`` body."""

    runId: str
    executionId: str
    workspaceId: str
    key: str
    value: float
    at: float


@dataclass(slots=True, kw_only=True)
class _Series:
    """Mutable per-key state of one execution's metric."""

    rate: float | None = DEFAULT_RATE  # None: throttling disabled
    custom: bool | None = None  # None until the first point decides the mode
    last_at: float | None = None
    warned: set[str] = field(default_factory=set)
    last_emit: float | None = None
    trailing: MetricPoint | None = None
    timer: asyncio.TimerHandle | None = None


class MetricTracker:
    """One execution's metrics; emits accepted points to the batcher."""

    def __init__(
        self,
        *,
        execution_id: str,
        run_id: str,
        workspace_id: str,
        store: HttpBatcher,
        started: float,
        clock: Any = time.monotonic,
    ) -> None:
        self._execution_id = execution_id
        self._run_id = run_id
        self._workspace_id = workspace_id
        self._store = store
        self._started = started
        self._clock = clock
        self._series: dict[str, _Series] = {}

    def define(self, key: str, definition: Any) -> None:
        series = self._series.setdefault(key, _Series())
        throttle = definition.get("throttle") if isinstance(definition, dict) else None
        if isinstance(throttle, int | float) and not isinstance(throttle, bool) and throttle > 0:
            series.rate = float(throttle)
        else:
            series.rate = None

    def _warn_once(self, series: _Series, key: str, reason: str, message: str) -> None:
        if reason not in series.warned:
            series.warned.add(reason)
            log.warning(message, extra=console.fields(execution_id=self._execution_id, key=key))

    def record(self, key: str, value: Any, at: Any) -> None:
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            return
        series = self._series.setdefault(key, _Series())
        now = self._clock()
        auto_x = now - self._started
        has_at = isinstance(at, int | float) and not isinstance(at, bool) and math.isfinite(at)
        if has_at and series.custom is not False:
            series.custom = True
            if series.last_at is not None and at <= series.last_at:
                self._warn_once(
                    series, key, "order", "dropping metric point: 'at' did not increase"
                )
                return
            x = float(at)
        else:
            if has_at:
                self._warn_once(series, key, "mixed", "ignoring 'at' for an auto-timed metric")
            elif series.custom:
                self._warn_once(series, key, "mixed", "metric switched from custom 'at' to auto")
            series.custom = False
            x = auto_x
        series.last_at = x
        point: MetricPoint = {
            "runId": self._run_id,
            "executionId": self._execution_id,
            "workspaceId": self._workspace_id,
            "key": key,
            "value": float(value),
            "at": x,
        }
        if series.rate is None:
            self._store.add(point)
            return
        window = 1.0 / series.rate
        if series.trailing is None and (
            series.last_emit is None or now - series.last_emit >= window
        ):
            series.last_emit = now
            self._store.add(point)
            return
        series.trailing = point
        if series.timer is None:
            delay = max(0.0, (series.last_emit or now) + window - now)
            series.timer = asyncio.get_running_loop().call_later(delay, self._emit_trailing, series)

    def _emit_trailing(self, series: _Series) -> None:
        series.timer = None
        if series.trailing is not None:
            self._store.add(series.trailing)
            series.trailing = None
            series.last_emit = self._clock()

    def flush_trailing(self) -> None:
        """Emit every held trailing point now (flush, execution end, shutdown)."""
        for series in self._series.values():
            if series.timer is not None:
                series.timer.cancel()
            self._emit_trailing(series)
