"""Select and cancel requests from executions (``semantics.md`` §7.7, §7.12).

Handles are executions, inputs and stream positions. A select answers with the first
resolved handle in list order, polls, suspends the caller, or waits; a select that
would wait on its own caller is refused as a ``wait_cycle``.
"""

from __future__ import annotations

from typing import Any

from pycoflux.orchestration import commands, effects, inputs, lifecycle
from pycoflux.orchestration.handlers.base import Base, Handle, SelectWait


class Selects(Base):
    """Select and cancel requests."""

    def _handles(self, request: list[dict[str, Any]]) -> list[Handle] | str:
        """Select/cancel handles as the core tracks them, or the error to reply with."""
        handles: list[Handle] = []
        for handle in request:
            kind, identifier = handle.get("type"), str(handle.get("id", ""))
            if kind == "execution":
                execution = self._store.execution_by_external_id(identifier)
                if execution is None:
                    return "not_found"
                handles.append(("execution", execution.id))
            elif kind == "input":
                row = self._store.input_by_external_id(identifier)
                if row is None:
                    return "input_not_found"
                handles.append(("input", row.id))
            elif kind == "stream":
                stream = self._store.stream_by_external_id(identifier)
                if stream is None:
                    return "not_found"
                handles.append(("stream", stream.id, int(handle.get("sequence") or 0)))
            else:
                return "invalid_handle"
        return handles

    def _waits_on_caller(self, caller: int, handles: list[Handle]) -> bool:
        """Whether waiting on these handles would wait, directly or not, on the caller itself."""
        frontier = [
            pending
            for handle in handles
            if handle[0] == "execution"
            for pending in [self._resolve(handle[1]).pending]
            if pending is not None
        ]
        seen: set[int] = set()
        while frontier:
            current = frontier.pop()
            if current == caller:
                return True
            if current in seen:
                continue
            seen.add(current)
            waited: list[int] = [
                h[1]
                for wait in self._waits.values()
                if wait.execution_id == current
                for h in wait.handles
                if h[0] == "execution"
            ]
            if self._store.assigned_session(current) is None:
                waited += self._store.dependencies(current)
            for execution_id in waited:
                pending = self._resolve(execution_id).pending
                if pending is not None:
                    frontier.append(pending)
        return False

    def _select(self, command: commands.Select) -> None:
        caller = self._held_by(command.session_id, command.execution_id)
        if caller is None:
            return
        if self._store.completion(caller.id) is not None:
            # Already suspended, cancelled, ...: it is being aborted, so it neither waits
            # nor suspends again (that would start a second live attempt of its step).
            return self._send(command.session_id, [2, command.request_id, None])
        handles = self._handles(command.handles)
        if isinstance(handles, str):
            return self._send(command.session_id, [3, command.request_id, handles])
        if self._waits_on_caller(caller.id, handles):
            return self._send(command.session_id, [3, command.request_id, "wait_cycle"])
        for handle in handles:
            if handle[0] == "execution":
                recorded = self._store.insert_dependency(caller.id, handle[1], self._now)
            elif handle[0] == "input":
                recorded = self._store.insert_input_dependency(caller.id, handle[1], self._now)
                if recorded:
                    self._publish_input(self._store.input(handle[1]))
            else:
                recorded = self._store.insert_stream_dependency(caller.id, handle[1], self._now)
            if recorded:
                self._publish_run(caller)
        wait = SelectWait(
            session_id=command.session_id,
            request_id=command.request_id,
            execution_id=caller.id,
            handles=handles,
            suspend=command.suspend,
            cancel_remaining=command.cancel_remaining,
        )
        if self._answer(wait):
            return
        if command.timeout_ms == 0:
            self._send(command.session_id, [2, command.request_id, None])
            if command.suspend:
                self._suspend_execution(caller, None, handles)
                self._tick()
            return
        key = (command.session_id, command.request_id)
        self._register_wait(key, wait)
        if command.timeout_ms is not None:
            self._effects.append(
                effects.ArmTimer(key=("select", *key), at=self._now + command.timeout_ms)
            )

    def _select_expired(self, session_id: str, request_id: int) -> None:
        wait = self._waits.get((session_id, request_id))
        if wait is None:
            return
        self._drop_wait((session_id, request_id))
        self._send(session_id, [2, request_id, None])
        if wait.suspend and self._store.completion(wait.execution_id) is None:
            self._suspend_execution(self._store.execution(wait.execution_id), None, wait.handles)
            self._tick()

    def _cancel_handles(self, command: commands.CancelHandles) -> None:
        caller = self._held_by(command.session_id, command.execution_id)
        if caller is None:
            return
        handles: list[Handle] = []
        for requested in command.handles:
            if requested.get("type") not in ("execution", "input"):
                return self._send(command.session_id, [3, command.request_id, "invalid_handle"])
            resolved = self._handles([requested])
            if not isinstance(resolved, str):
                handles += resolved  # unknown handles are skipped
        for handle in handles:
            if handle[0] == "execution":
                self._cancel(lifecycle.follow_spawns(self._store, handle[1]), caller.workspace_id)
            elif self._store.input_response(handle[1]) is None:
                self._store.insert_input_response(
                    handle[1], inputs.Response.CANCELLED, None, self._now, None
                )
                self._input_answered(self._store.input(handle[1]))
        self._send(command.session_id, [2, command.request_id, None])
        self._tick()
