"""Stream requests from producers and consumers (``semantics.md`` §9.1); the live
state is in ``orchestration.streams.StreamHub``.
"""

from __future__ import annotations

from pycoflux.orchestration import commands, streams
from pycoflux.orchestration.handlers.base import Base


class Streams(Base):
    """Stream registration, items, closes and subscriptions."""

    def _register_stream(self, command: commands.RegisterStream) -> None:
        execution = self._held_by(command.session_id, command.execution_id)
        if execution is None:
            return
        if self._store.completion(execution.id) is not None:
            return self._send(command.session_id, [3, command.request_id, "execution_completed"])
        stream = self._streams.register(
            execution, command.position, command.buffer, command.timeout_ms, self._now
        )
        self._publish_run(execution)
        self._publish("stream", stream.external_id)
        self._send(
            command.session_id,
            [
                2,
                command.request_id,
                {
                    "id": stream.external_id,
                    "index": stream.index,
                    "head": self._store.stream_head(stream.id),
                },
            ],
        )

    def _append_stream(self, command: commands.AppendStream) -> None:
        execution = self._held_by(command.session_id, command.execution_id)
        if execution is None:
            return
        if self._store.completion(execution.id) is not None:
            return
        stream = self._streams.append(
            execution, command.index, command.sequence, command.value, self._now
        )
        if stream is not None:
            self._stream_changed(stream, run=False)

    def _close_stream(self, command: commands.CloseStream) -> None:
        execution = self._held_by(command.session_id, command.execution_id)
        if execution is None:
            return
        closed = False
        stream = self._store.stream_by_step(execution.step_id, command.index)
        if (
            stream is not None
            and self._store.completion(execution.id) is None
            and self._store.stream_registered_by(stream.id, execution.id)
        ):
            if command.timeout:
                # Declined while every consumer is suspended waiting on the stream.
                if not self._streams.paused(stream.id):
                    closed = self._close_stream_now(
                        stream.id, streams.Reason.TIMEOUT, "timeout", None, execution.id
                    )
            elif command.error is not None:
                closed = self._close_stream_now(
                    stream.id, streams.Reason.ERRORED, "errored", command.error, execution.id
                )
            else:
                closed = self._close_stream_now(
                    stream.id, streams.Reason.COMPLETE, "complete", None, execution.id
                )
        if command.request_id is not None:
            self._send(command.session_id, [2, command.request_id, closed])

    def _subscribe_stream(self, command: commands.SubscribeStream) -> None:
        consumer = self._held_by(command.session_id, command.execution_id)
        if consumer is None:
            return
        if self._store.completion(consumer.id) is not None:
            return
        stream = self._store.stream_by_external_id(command.stream_id)
        if stream is not None and self._store.insert_stream_dependency(
            consumer.id, stream.id, self._now
        ):
            self._publish_run(consumer)
        self._streams.subscribe(
            session_id=command.session_id,
            consumer=consumer,
            subscription_id=command.subscription_id,
            stream=stream,
            from_sequence=command.from_sequence,
            stride=command.stride,
            prefetch=command.prefetch,
            progress=command.progress,
        )

    def _ack_stream(self, command: commands.AckStream) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is not None:
            self._streams.ack(held.id, command.subscription_id, command.count, command.sequence)

    def _unsubscribe_stream(self, command: commands.UnsubscribeStream) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is not None:
            self._streams.unsubscribe(held.id, command.subscription_id)
