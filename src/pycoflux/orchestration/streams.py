"""Streams: durable item logs produced by a step, delivered to subscribers (``semantics.md`` §9.1).

Theory of operation. A stream belongs to a step in a workspace; every attempt of the
step that registers the same position continues it while it is *paused* (its last
producer suspended). Items and closures are durable; subscriptions and producer
credit are live state, rebuilt by workers re-subscribing after a reconnect.

Delivery. Each subscription has a cursor (the next sequence it considers) and a
window: at most ``prefetch`` items delivered and not yet acknowledged. Items the
stride skips still move the cursor. The closure follows only once every item the
subscription is due has been delivered, so it never overtakes items held back by
the window.

Backpressure. A producer registered with an integer ``buffer`` gets credit in
sequence space: the slowest subscriber's watermark (its cursor when it has
acknowledged everything delivered, else the sequence after its last ack) plus the
buffer, or the producer's starting point plus the buffer when nobody subscribes
(pre-warming). Consumers suspended waiting for a sequence count as demand for it.
Credit is only ever extended (``stream_demand``), never clawed back.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pycoflux.orchestration import model, ports

PAGE = 1024
DEFAULT_PREFETCH = 16


class Reason(enum.IntEnum):
    """How a stream was closed (stored); lifecycle closes carry the completion's label."""

    COMPLETE = 0
    ERRORED = 1
    LIFECYCLE = 2
    TIMEOUT = 3


# Completion kinds that close the step's open streams, and the reason consumers see.
LIFECYCLE_LABELS = {
    model.Completion.CANCELLED: "cancelled",
    model.Completion.ABANDONED: "abandoned",
    model.Completion.CRASHED: "crashed",
    model.Completion.TIMEOUT: "timeout",
    model.Completion.RECURRED: "recurred",
    model.Completion.ERRORED: "errored",
}


def error_wire(error: model.ErrorInfo | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {"type": error.type, "message": error.message, "frames": error.frames}


@dataclass(slots=True, kw_only=True)
class Subscription:
    consumer: int  # execution row id
    consumer_external_id: str
    subscription_id: int
    session_id: str
    stream_id: int
    cursor: int
    stride: model.Stride | None
    prefetch: int
    delivered: int = 0
    acked_count: int = 0
    acked_sequence: int = -1

    def matches(self, sequence: int) -> bool:
        return self.stride is None or self.stride.matches(sequence)

    @property
    def watermark(self) -> int:
        if self.delivered == self.acked_count:
            return self.cursor
        return self.acked_sequence + 1


@dataclass(slots=True, kw_only=True)
class Credit:
    producer: int  # execution row id of the latest registrant
    index: int
    buffer: int
    base: int  # head when it registered
    granted: int


class StreamHub:
    """Live subscriptions and producer credit of one project, over the durable stream log.

    ``send(session, frame)`` queues a frame for a session; ``session_of(execution)``
    names the session an execution is assigned to (None when it has none).
    """

    def __init__(
        self,
        store: ports.OrchestrationStore,
        send: Callable[[str, list[Any]], None],
        session_of: Callable[[int], str | None],
        expand: Callable[[model.Value], model.Value],
    ) -> None:
        self._store = store
        self._send = send
        self._session_of = session_of
        self._expand = expand
        self._subscriptions: dict[tuple[int, int], Subscription] = {}
        self._credit: dict[int, Credit] = {}

    # --- Producers --------------------------------------------------------------------

    def register(
        self,
        execution: model.Execution,
        position: int,
        buffer: int | None,
        timeout_ms: int | None,
        now: int,
    ) -> ports.StreamRow:
        store = self._store
        stream = store.stream_registered_at(execution.id, position)
        if stream is None:
            paused = store.paused_stream(execution.step_id, execution.workspace_id, position)
            if paused is None:
                number = store.next_stream_number(execution.step_id)
                stream_id = store.insert_stream(
                    execution.step_id, execution.workspace_id, number, now
                )
            else:
                stream_id = paused
            store.insert_stream_registration(
                stream_id, execution.id, position, buffer, timeout_ms, now
            )
            stream = store.stream(stream_id)
            head = store.stream_head(stream.id)
            if buffer is None:
                self._credit.pop(stream.id, None)
            else:
                self._credit[stream.id] = Credit(
                    producer=execution.id,
                    index=stream.index,
                    buffer=buffer,
                    base=head,
                    granted=head + 1,
                )
        self.refresh_demand(stream.id)
        return stream

    def append(
        self, execution: model.Execution, index: int, sequence: int, value: model.Value, now: int
    ) -> ports.StreamRow | None:
        """Store an item; returns the stream when the item was new."""
        store = self._store
        stream = store.stream_by_step(execution.step_id, index)
        if (
            stream is None
            or store.stream_closure(stream.id) is not None
            or not store.stream_registered_by(stream.id, execution.id)
            or not store.insert_stream_item(stream.id, sequence, value, execution.id, now)
        ):
            return None
        self.pump(stream.id)
        self.refresh_demand(stream.id)
        return stream

    def paused(self, stream_id: int) -> bool:
        """Whether every consumer is suspended waiting for an item (the idle timer stops)."""
        head = self._store.stream_head(stream_id)
        waiting = any(sequence > head for sequence in self._store.live_stream_waits(stream_id))
        subscribed = any(s.stream_id == stream_id for s in self._subscriptions.values())
        return waiting and not subscribed

    def close(
        self,
        stream_id: int,
        reason: Reason,
        label: str,
        error: model.ErrorInfo | None,
        execution_id: int | None,
        now: int,
    ) -> bool:
        if not self._store.insert_stream_closure(
            stream_id, reason, label, error, execution_id, now
        ):
            return False
        self._credit.pop(stream_id, None)
        self.pump(stream_id)
        return True

    # --- Consumers --------------------------------------------------------------------------

    def subscribe(
        self,
        *,
        session_id: str,
        consumer: model.Execution,
        subscription_id: int,
        stream: ports.StreamRow | None,
        from_sequence: int,
        stride: model.Stride | None,
        prefetch: int,
        progress: tuple[int, int, int] | None,
    ) -> None:
        key = (consumer.id, subscription_id)
        existing = self._subscriptions.get(key)
        if existing is not None:
            if progress is not None:
                existing.delivered, existing.acked_count, existing.acked_sequence = progress
            self.pump(existing.stream_id)
            return
        if stream is None:
            self._send(
                session_id,
                _command(
                    "stream_closed",
                    [consumer.external_id, subscription_id, "stream_not_found", None],
                ),
            )
            return
        subscription = Subscription(
            consumer=consumer.id,
            consumer_external_id=consumer.external_id,
            subscription_id=subscription_id,
            session_id=session_id,
            stream_id=stream.id,
            cursor=from_sequence,
            stride=stride,
            prefetch=prefetch if prefetch > 0 else DEFAULT_PREFETCH,
        )
        if progress is not None:
            delivered, acked_count, acked_sequence = progress
            subscription.cursor = self._cursor_after(subscription, delivered)
            subscription.delivered = delivered
            subscription.acked_count = acked_count
            subscription.acked_sequence = acked_sequence
        self._subscriptions[key] = subscription
        self.pump(stream.id)
        self.refresh_demand(stream.id)

    def _cursor_after(self, subscription: Subscription, delivered: int) -> int:
        """The cursor of a resumed subscription that had already received ``delivered`` items."""
        cursor, remaining = subscription.cursor, delivered
        while remaining > 0:
            items = self._store.stream_items(subscription.stream_id, cursor, PAGE)
            if not items:
                break
            for sequence, _ in items:
                cursor = sequence + 1
                if subscription.matches(sequence):
                    remaining -= 1
                    if remaining == 0:
                        break
        return cursor

    def ack(self, consumer: int, subscription_id: int, count: int, sequence: int) -> None:
        subscription = self._subscriptions.get((consumer, subscription_id))
        if subscription is None or count < subscription.acked_count:
            return
        subscription.acked_count = min(count, subscription.delivered)
        subscription.acked_sequence = max(sequence, subscription.acked_sequence)
        self.pump(subscription.stream_id)
        self.refresh_demand(subscription.stream_id)

    def unsubscribe(self, consumer: int, subscription_id: int) -> None:
        subscription = self._subscriptions.pop((consumer, subscription_id), None)
        if subscription is not None:
            self.refresh_demand(subscription.stream_id)

    def drop_consumer(self, consumer: int) -> None:
        """The consumer terminated or completed: its subscriptions end silently."""
        self._drop(lambda s: s.consumer == consumer)

    def drop_session(self, session_id: str) -> None:
        """The session's connection is gone; its worker re-subscribes after reconnecting."""
        self._drop(lambda s: s.session_id == session_id)

    def _drop(self, predicate: Callable[[Subscription], bool]) -> None:
        streams = set()
        for key, subscription in list(self._subscriptions.items()):
            if predicate(subscription):
                del self._subscriptions[key]
                streams.add(subscription.stream_id)
        for stream_id in sorted(streams):
            self.refresh_demand(stream_id)

    def subscribed(self, stream_id: int) -> bool:
        return any(s.stream_id == stream_id for s in self._subscriptions.values())

    # --- Delivery and demand ---------------------------------------------------------------

    def pump(self, stream_id: int) -> None:
        """Deliver what each subscription of the stream may take now; close finished ones."""
        closure = self._store.stream_closure(stream_id)
        for key, subscription in list(self._subscriptions.items()):
            if subscription.stream_id != stream_id:
                continue
            if self._deliver(subscription, closure):
                del self._subscriptions[key]

    def _deliver(self, subscription: Subscription, closure: ports.StreamClosure | None) -> bool:
        """Push items within the window; returns True once the subscription is finished."""
        batch: list[list[Any]] = []
        stride = subscription.stride
        ending: tuple[str, Any] | None = None
        while True:
            if stride is not None and stride.exhausted(subscription.cursor):
                ending = ("complete", None)
                break
            if subscription.delivered - subscription.acked_count >= subscription.prefetch:
                break
            items = self._store.stream_items(subscription.stream_id, subscription.cursor, PAGE)
            if not items:
                if closure is not None:
                    ending = (closure.label, closure.error)
                break
            for sequence, value in items:
                if stride is not None and stride.exhausted(sequence):
                    subscription.cursor = max(subscription.cursor, stride.stop or 0)
                    break
                if not subscription.matches(sequence):
                    subscription.cursor = sequence + 1
                    continue
                if subscription.delivered - subscription.acked_count >= subscription.prefetch:
                    break
                batch.append([sequence, self._expand(value)])
                subscription.delivered += 1
                subscription.cursor = sequence + 1
        self._flush(subscription, batch)
        if ending is not None:
            self._closed(subscription, *ending)
            return True
        return False

    def _flush(self, subscription: Subscription, batch: list[list[Any]]) -> None:
        if batch:
            self._send(
                subscription.session_id,
                _command(
                    "stream_items",
                    [subscription.consumer_external_id, subscription.subscription_id, batch],
                ),
            )

    def _closed(self, subscription: Subscription, reason: str, error: Any) -> None:
        self._send(
            subscription.session_id,
            _command(
                "stream_closed",
                [subscription.consumer_external_id, subscription.subscription_id, reason, error],
            ),
        )

    def refresh_demand(self, stream_id: int) -> None:
        credit = self._credit.get(stream_id)
        if credit is None:
            return
        watermarks = [s.watermark for s in self._subscriptions.values() if s.stream_id == stream_id]
        if watermarks:
            target = min(watermarks) + credit.buffer + 1
        else:
            target = credit.base + 1 + credit.buffer
        waits = self._store.live_stream_waits(stream_id)
        if waits:
            target = max(target, max(waits) + 1)
        if target <= credit.granted:
            return
        session_id = self._session_of(credit.producer)
        if session_id is None:
            return
        self._send(
            session_id,
            _command(
                "stream_demand",
                [
                    self._store.execution(credit.producer).external_id,
                    credit.index,
                    target - credit.granted,
                ],
            ),
        )
        credit.granted = target

    def restore(self) -> None:
        """After a restart: producers still running get credit again from their head.

        What was granted before is unknown; granting from the head may give a producer a
        little more than its buffer, never less, so it can never stall waiting for demand.
        """
        for stream_id, producer, buffer in self._store.live_producers():
            stream = self._store.stream(stream_id)
            head = self._store.stream_head(stream_id)
            self._credit[stream_id] = Credit(
                producer=producer, index=stream.index, buffer=buffer, base=head, granted=head + 1
            )
            self.refresh_demand(stream_id)


def _command(name: str, params: list[Any]) -> list[Any]:
    return [1, {"command": name, "params": params}]
