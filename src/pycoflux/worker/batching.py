"""Batched JSON delivery over HTTP, shared by the log and metric stores."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping

import httpx

from pycoflux import errors
from pycoflux.worker import console

log = console.get_logger()

RETRY_MIN = 0.5  # seconds before the first retry of a failed batch
RETRY_MAX = 10.0


class DeliveryError(errors.WorkerError):
    """Buffered entries could not be delivered."""


class HttpBatcher:
    """Buffers entries and POSTs ``{<key>: [entries]}`` by size or after ``flush_interval``.

    A failed batch goes back to the front of the buffer and is retried on the next trigger,
    which is at the latest a retry timer (``RETRY_MIN`` doubling up to ``RETRY_MAX``): the
    last entries of a run are delivered even when nothing is logged after them.
    """

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        url: str,
        headers: dict[str, str],
        body_key: str,
        batch_size: int,
        flush_interval: float,
        name: str,
    ) -> None:
        self._client = client
        self._url = url
        self._headers = headers
        self._body_key = body_key
        self._batch_size = max(batch_size, 1)
        self._flush_interval = flush_interval
        self._name = name
        self._buffer: collections.deque[Mapping[str, object]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._retry_delay = RETRY_MIN

    def add(self, entry: Mapping[str, object]) -> None:
        self._buffer.append(entry)
        if len(self._buffer) >= self._batch_size or self._flush_interval <= 0:
            self._trigger()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._flush_interval, self._trigger)

    def _trigger(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task = asyncio.create_task(self._send_quietly(), name=f"{self._name}-send")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_quietly(self) -> None:
        try:
            await self.flush()
        except DeliveryError as exc:
            log.warning(
                f"{self._name} delivery failed, retrying",
                extra=console.fields(error=exc, retry_in=self._retry_delay),
            )
            if not self._closed and self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(
                    self._retry_delay, self._trigger
                )
            self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)
        else:
            self._retry_delay = RETRY_MIN

    async def flush(self) -> None:
        """Send everything buffered now; raises ``DeliveryError`` if a batch fails."""
        async with self._lock:
            while self._buffer:
                batch = [
                    self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))
                ]
                try:
                    response = await self._client.post(
                        self._url, json={self._body_key: batch}, headers=self._headers
                    )
                    if response.status_code >= 300:
                        raise DeliveryError(f"HTTP {response.status_code}: {response.text[:200]}")
                except (httpx.HTTPError, DeliveryError) as exc:
                    self._buffer.extendleft(reversed(batch))
                    raise DeliveryError(f"{self._name}: {exc or type(exc).__name__}") from exc

    async def close(self) -> None:
        """Final flush (best effort) and stop."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        try:
            await self.flush()
        except DeliveryError as exc:
            log.warning(
                f"{self._name} entries lost at shutdown",
                extra=console.fields(count=len(self._buffer), error=exc),
            )
