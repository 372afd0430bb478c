"""Stream bookkeeping for one execution: producer idle timers and consumer subscriptions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True, kw_only=True)
class Subscription:
    """A consumer subscription, with the progress needed to resume it after a reconnect."""

    subscription_id: int
    stream_id: str
    from_sequence: int
    stride: Any
    prefetch: Any
    delivered: int = 0
    acked_count: int = 0
    acked_seq: int = -1

    def subscribe_params(self, execution_id: str, *, resume: bool) -> list[Any]:
        progress = (
            {
                "delivered": self.delivered,
                "acked_count": self.acked_count,
                "acked_seq": self.acked_seq,
            }
            if resume
            else None
        )
        return [
            self.subscription_id,
            execution_id,
            self.stream_id,
            self.from_sequence,
            self.stride,
            self.prefetch,
            progress,
        ]


@dataclass(slots=True, kw_only=True)
class _Producer:
    index: int
    timeout: float | None
    open: bool = True
    timer: asyncio.TimerHandle | None = None


class ProducerStreams:
    """Registered producer streams and their idle countdowns (restarted by each append)."""

    def __init__(self, on_idle: Callable[[int], None]) -> None:
        self._on_idle = on_idle
        self._streams: dict[int, _Producer] = {}

    def register(self, index: int, timeout_ms: Any) -> None:
        timeout = (
            timeout_ms / 1000
            if isinstance(timeout_ms, int | float)
            and not isinstance(timeout_ms, bool)
            and timeout_ms > 0
            else None
        )
        existing = self._streams.get(index)
        if existing is not None:
            self._cancel(existing)
        stream = _Producer(index=index, timeout=timeout)
        self._streams[index] = stream
        self._arm(stream)

    def _arm(self, stream: _Producer) -> None:
        self._cancel(stream)
        if stream.timeout is not None and stream.open:
            stream.timer = asyncio.get_running_loop().call_later(
                stream.timeout, self._expire, stream
            )

    def _expire(self, stream: _Producer) -> None:
        stream.timer = None
        if stream.open:
            self._on_idle(stream.index)

    @staticmethod
    def _cancel(stream: _Producer) -> None:
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None

    def appended(self, index: int) -> None:
        stream = self._streams.get(index)
        if stream is not None and stream.open:
            self._arm(stream)

    def restart(self, index: int) -> None:
        """Re-arm after the server declined an idle close (the stream is paused)."""
        self.appended(index)

    def is_open(self, index: int) -> bool:
        stream = self._streams.get(index)
        return stream is not None and stream.open

    def closed(self, index: int) -> None:
        stream = self._streams.get(index)
        if stream is not None:
            stream.open = False
            self._cancel(stream)

    @property
    def any_open(self) -> bool:
        return any(stream.open for stream in self._streams.values())

    def clear(self) -> None:
        for stream in self._streams.values():
            self._cancel(stream)
