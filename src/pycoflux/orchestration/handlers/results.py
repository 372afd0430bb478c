"""What workers report about executions: values, errors, timeouts, terminations and
suspensions (``semantics.md`` §3.2, §5.3).

A value resolves waiters at once; the completion (and with it a retry decision, or the
stream-derived kinds) is written when the worker says the process ended.
"""

from __future__ import annotations

from pycoflux.orchestration import commands, lifecycle, model, streams
from pycoflux.orchestration.handlers.base import Base, Handle


class Results(Base):
    """Worker reports about the executions they hold."""

    def _record_result(self, command: commands.RecordResult) -> None:
        execution = self._held_by(command.session_id, command.execution_id)
        if execution is None:
            return
        if self._store.result(execution.id) is not None or self._store.completion(execution.id):
            return  # results are idempotent: the first one stands
        options = self._store.step_options(execution.step_id)
        if options.recurrent and lifecycle.is_null(command.value):
            # A recurrent step's null is not its result: the next iteration is.
            successor = self._successor(execution, options.delay)
            self._complete(execution.id, model.Completion.RECURRED, successor)
            return
        self._store.insert_result(execution.id, value=command.value, created_at=self._now)
        self._publish_run(execution)
        self._resolved(execution.id)

    def _record_error(self, command: commands.RecordError) -> None:
        execution = self._held_by(command.session_id, command.execution_id)
        if execution is None:
            return
        if self._store.result(execution.id) is not None or self._store.completion(execution.id):
            return
        self._store.insert_result(
            execution.id,
            error=command.error,
            retryable=command.retryable,
            created_at=self._now,
        )
        self._publish_run(execution)

    def _record_timeout(self, command: commands.RecordTimeout) -> None:
        execution = self._held_by(command.session_id, command.execution_id)
        if execution is None:
            return
        if self._store.completion(execution.id) is not None:
            return
        result = self._store.result(execution.id)
        if result is not None and result.value is not None:
            # Draining: the value stands; its open streams time out and the completion
            # (stream_timeout) follows at termination.
            for stream_id in self._store.open_streams_registered_by(execution.id):
                self._close_stream_now(
                    stream_id, streams.Reason.TIMEOUT, "timeout", None, execution.id
                )
            return
        self._fail(execution.id, model.Completion.TIMEOUT)
        self._cancel_descendants(execution.id, execution.workspace_id)
        self._tick()

    def _record_termination(self, command: commands.RecordTermination) -> None:
        session = self._sessions.get(command.session_id)
        if session is None:
            return
        for external_id in command.execution_ids:
            execution = self._store.execution_by_external_id(external_id)
            if execution is None or execution.id not in session.held:
                continue
            session.starting.discard(execution.id)
            session.executing.discard(execution.id)
            self._streams.drop_consumer(execution.id)
            if self._store.completion(execution.id) is not None:
                continue
            result = self._store.result(execution.id)
            if result is not None and result.value is not None:
                closes = self._store.own_stream_closures(execution.id)
                if streams.Reason.ERRORED in closes:
                    self._fail(execution.id, model.Completion.STREAM_ERRORED)
                elif streams.Reason.TIMEOUT in closes:
                    self._complete(execution.id, model.Completion.STREAM_TIMEOUT, None)
                else:
                    self._complete(execution.id, model.Completion.SUCCEEDED, None)
            elif result is not None:
                self._fail(execution.id, model.Completion.ERRORED, retryable=result.retryable)
            else:
                self._fail(execution.id, model.Completion.CRASHED)
        self._publish("sessions", self._store.workspace_external_id(session.workspace_id))
        self._tick()

    def _suspend(self, command: commands.Suspend) -> None:
        execution = self._held_by(command.session_id, command.execution_id)
        if execution is None:
            return
        if self._store.completion(execution.id) is not None:
            return
        handles: list[Handle] = []
        if command.stream_wait is not None:
            stream = self._store.stream_by_external_id(command.stream_wait[0])
            if stream is not None:
                if self._store.insert_stream_dependency(execution.id, stream.id, self._now):
                    self._publish_run(execution)
                handles.append(("stream", stream.id, command.stream_wait[1]))
        self._suspend_execution(execution, command.execute_after, handles)
        self._tick()
