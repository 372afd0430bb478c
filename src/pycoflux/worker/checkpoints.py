"""Checkpoint writes: coalesced per execution, delivered with the server's acknowledgement."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pycoflux import errors
from pycoflux.worker import console
from pycoflux.worker.connection import Connection, ReplyError, RetryPolicy
from pycoflux.worker.values import ValueCodec

log = console.get_logger()


class _Reset:
    """Marks a pending reset in the delta (distinct from a null value)."""


RESET = _Reset()


class CheckpointBuffer:
    """One execution's pending checkpoint delta.

    The first write (or one after a quiet window) is delivered at once; later writes in the
    window coalesce and go when it closes. Deliveries are serialised so a later snapshot
    never overtakes an earlier one, and values are converted only at delivery, so
    superseded values are never uploaded.
    """

    def __init__(
        self,
        *,
        execution_id: str,
        codec: ValueCodec,
        connection: Connection,
        interval: float,
        request_timeout: float,
    ) -> None:
        self._execution_id = execution_id
        self._codec = codec
        self._connection = connection
        self._interval = interval
        self._request_timeout = request_timeout
        self._pending: dict[str, Any] = {}
        self._last_delivery: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._discarded = False

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def update(self, set_: Any, reset: Any) -> None:
        if self._discarded:
            return
        if isinstance(set_, dict):
            for name, value in set_.items():
                self._pending[str(name)] = value
        if isinstance(reset, list):
            for name in reset:
                self._pending[str(name)] = RESET
        now = time.monotonic()
        if self._last_delivery is None or now - self._last_delivery >= self._interval:
            self._spawn_delivery()
        elif self._timer is None:
            delay = self._last_delivery + self._interval - now
            self._timer = asyncio.get_running_loop().call_later(delay, self._spawn_delivery)

    def _spawn_delivery(self) -> None:
        self._cancel_timer()
        task = asyncio.create_task(self._deliver_quietly(), name=f"checkpoint-{self._execution_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _deliver_quietly(self) -> None:
        try:
            await self._deliver()
        except (errors.WorkerError, TimeoutError) as exc:
            log.warning(
                "checkpoint delivery failed; will retry",
                extra=console.fields(execution_id=self._execution_id, error=exc),
            )
            if not self._discarded and self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(
                    self._interval, self._spawn_delivery
                )

    async def flush(self) -> None:
        """Deliver everything pending and wait for the acknowledgement (raises on failure)."""
        self._cancel_timer()
        await self._deliver()

    async def _deliver(self) -> None:
        async with self._lock:
            if self._discarded or not self._pending:
                return
            snapshot, self._pending = self._pending, {}
            self._last_delivery = time.monotonic()
            try:
                set_: dict[str, Any] = {}
                reset: list[str] = []
                for name, value in snapshot.items():
                    if value is RESET:
                        reset.append(name)
                    else:
                        set_[name] = await self._codec.to_server(value)
                await self._connection.request(
                    "checkpoint_update",
                    [self._execution_id, set_, reset],
                    execution_id=self._execution_id,
                    policy=RetryPolicy.WAIT,
                    timeout=self._request_timeout,
                )
            except ReplyError as exc:
                if exc.error == "execution_completed":
                    # The execution is finalised; later writes are meaningless.
                    self.discard()
                    return
                self._merge_back(snapshot)
                raise
            except (errors.WorkerError, TimeoutError):
                self._merge_back(snapshot)
                raise

    def _merge_back(self, snapshot: dict[str, Any]) -> None:
        for name, value in snapshot.items():
            self._pending.setdefault(name, value)  # newer writes win

    def discard(self) -> None:
        self._discarded = True
        self._pending.clear()
        self._cancel_timer()

    async def close(self) -> None:
        self._cancel_timer()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
