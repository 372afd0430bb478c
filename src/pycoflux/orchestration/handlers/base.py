"""What every command handler shares: the core's live state, its effects, and what
recording an outcome sets off (``semantics.md`` §3.4).

Recording a completion wakes the selects waiting on the execution (they answer, or move
to the execution it handed off to), closes or keeps its step's streams, drops its
stream subscriptions, refreshes the inputs it awaited, and asks for a scheduling pass.
A failure first asks the retry policy for a successor; cancelling cascades to live
descendants in the workspace.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pycoflux.orchestration import commands, effects, inputs, lifecycle, model, ports, streams
from pycoflux.orchestration.lifecycle import Resolution

if TYPE_CHECKING:
    from pycoflux.orchestration.handlers.sessions import LiveSession
    from pycoflux.orchestration.queue import TargetKey

# A select handle as the core tracks it: ("execution", id), ("input", id) or
# ("stream", stream id, sequence); and the key a pending handle waits under.
Handle = tuple[Any, ...]
WaitKey = tuple[str, int]


@dataclass(slots=True, kw_only=True)
class SelectWait:
    """A select request that found nothing ready and is waiting."""

    session_id: str
    request_id: int
    execution_id: int  # the caller
    handles: list[Handle]  # in the caller's order
    suspend: bool
    cancel_remaining: bool
    under: list[WaitKey] = field(default_factory=list)  # the keys it is registered under


class Base:
    """The state and effects every handler family works with."""

    _tick_requested = False

    def __init__(
        self, store: ports.OrchestrationStore, *, rng: random.Random | None = None
    ) -> None:
        self._store = store
        self._rng = rng or random.Random()
        self._sessions: dict[str, LiveSession] = {}
        self._waits: dict[WaitKey, SelectWait] = {}
        self._waiting_on: dict[WaitKey, set[WaitKey]] = {}
        self._streams = streams.StreamHub(store, self._send, self._session_of, self._expand)
        self._effects: list[effects.Effect] = []
        self._topics: set[tuple[str, ...]] = set()
        self._now = 0
        self._swept_at = 0  # when a scheduling pass last swept the parked executions
        # The sessions declaring each target (``Scheduling._serving``); None when targets
        # were declared or a session removed since it was built.
        self._serving_index: dict[TargetKey, list[LiveSession]] | None = None

    # Implemented by the scheduling and session handlers.
    def _tick(self) -> None:
        raise NotImplementedError

    def _remove_session(self, external_id: str, *, reason: str) -> None:
        raise NotImplementedError

    # Implemented by the run handlers (a workflow called from an execution).
    def _spawn(self, execution: model.Execution) -> None:
        raise NotImplementedError

    # Implemented by the pool handlers: upkeep at the end of a scheduling pass, and a
    # session's end reaching the launched worker it belonged to.
    def _maintain_pools(self) -> None:
        raise NotImplementedError

    def _session_removed(self, session: LiveSession) -> None:
        raise NotImplementedError

    def _reply(self, result: Any = None) -> None:
        self._effects.append(effects.Reply(result=result))

    def _reject(self, error: str, status: int = 400, details: Any = None) -> None:
        self._effects.append(effects.Rejected(error=error, status=status, details=details))

    def _send(self, session_id: str, frame: list[Any]) -> None:
        self._effects.append(effects.Send(session_id=session_id, frame=frame))

    def _publish(self, *topic: str) -> None:
        self._topics.add(topic)

    def _workspace_row(self, external_id: str) -> ports.WorkspaceRow | None:
        workspace = self._store.workspace_by_external_id(external_id)
        if workspace is None or workspace.state is model.WorkspaceState.ARCHIVED:
            return None
        return workspace

    def _held_by(self, session_id: str, execution_id: str) -> model.Execution | None:
        """The execution if this session holds it; otherwise close the connection (strict)."""
        session = self._sessions.get(session_id)
        execution = self._store.execution_by_external_id(execution_id)
        if session is None or execution is None or execution.id not in session.held:
            self._effects.append(
                effects.CloseSession(session_id=session_id, reason="execution_invalid")
            )
            return None
        return execution

    def _session_of(self, execution_id: int) -> str | None:
        """The session an execution is assigned to, while it still holds it."""
        session_row = self._store.assigned_session(execution_id)
        for session in self._sessions.values():
            if session.id == session_row and execution_id in session.held:
                return session.external_id
        return None

    def _expand(self, value: model.Value) -> model.Value:
        return lifecycle.expand_references(self._store, value)

    def _publish_run(self, execution: model.Execution) -> None:
        workspace = self._store.workspace_external_id(execution.workspace_id)
        self._publish("run", workspace, execution.run_external_id)
        self._publish("queue", workspace)

    def _unique_id(self, prefix: str, length: int, lookup: Callable[[str], object]) -> str:
        while True:
            candidate = model.random_id(prefix, length)
            if lookup(candidate) is None:
                return candidate
            length += 1

    def _command(self, session_id: str, name: str, params: list[Any]) -> None:
        self._send(session_id, [1, {"command": name, "params": params}])

    def _suspend_execution(
        self, execution: model.Execution, execute_after: int | None, handles: list[Handle]
    ) -> None:
        """Complete as suspended; the successor waits for any still-pending handle."""
        successor = self._store.insert_execution(
            step_id=execution.step_id,
            attempt=self._store.next_attempt(execution.step_id),
            workspace_id=execution.workspace_id,
            execute_after=execute_after,
            created_at=self._now,
            created_by=None,
        )
        demand: list[int] = []
        for handle in handles:
            if handle[0] == "execution":
                pending = self._resolve(handle[1]).pending
                if pending is not None:
                    self._store.insert_dependency(successor, pending, self._now)
            elif handle[0] == "input":
                if self._store.input_response(handle[1]) is None:
                    self._store.insert_input_dependency(successor, handle[1], self._now)
            elif not self._stream_reached(handle[1], handle[2]):
                self._store.insert_stream_wait(successor, handle[1], handle[2], self._now)
                demand.append(handle[1])
        self._complete(execution.id, model.Completion.SUSPENDED, successor)
        self._abort(execution)
        for stream_id in demand:
            self._streams.refresh_demand(stream_id)

    def _abort(self, execution: model.Execution) -> None:
        """Tell the session running it to stop, and unblock its pending selects."""
        for key in [k for k, w in self._waits.items() if w.execution_id == execution.id]:
            wait = self._waits[key]
            self._drop_wait(key)
            self._send(wait.session_id, [2, wait.request_id, None])
        session_id = self._session_of(execution.id)
        if session_id is not None:
            self._command(session_id, "abort", [execution.external_id])

    def _successor(self, execution: model.Execution, delay: int) -> int:
        return self._store.insert_execution(
            step_id=execution.step_id,
            attempt=self._store.next_attempt(execution.step_id),
            workspace_id=execution.workspace_id,
            execute_after=self._now + delay if delay > 0 else None,
            created_at=self._now,
            created_by=None,
        )

    def _fail(
        self, execution_id: int, kind: model.Completion, *, retryable: bool | None = None
    ) -> None:
        """Record a failure completion, creating a retry attempt when the policy allows."""
        execution = self._store.execution(execution_id)
        options = self._store.step_options(execution.step_id)
        delay = lifecycle.retry_delay(
            options.retries,
            retryable=retryable is not False,
            previous=self._store.previous_outcomes(execution.step_id, execution.id),
            rng=self._rng,
        )
        successor = self._successor(execution, delay) if delay is not None else None
        self._complete(execution_id, kind, successor)

    def _complete(
        self,
        execution_id: int,
        kind: model.Completion,
        successor: int | None,
        *,
        own_streams_only: bool = False,
        principal: commands.Principal = None,
    ) -> None:
        self._store.insert_completion(execution_id, kind, successor, self._now, principal)
        execution = self._store.execution(execution_id)
        self._publish_run(execution)
        self._publish("modules", self._store.workspace_external_id(execution.workspace_id))
        self._streams.drop_consumer(execution_id)
        self._close_streams_on_completion(execution, kind, own_streams_only)
        for input_id in self._store.input_dependencies(execution_id):
            self._publish_input(self._store.input(input_id))  # it may no longer be awaited
        self._resolved(execution_id)

    def _close_streams_on_completion(
        self, execution: model.Execution, kind: model.Completion, own_only: bool
    ) -> None:
        if kind in streams.LIFECYCLE_LABELS:
            reason, label = streams.Reason.LIFECYCLE, streams.LIFECYCLE_LABELS[kind]
        elif kind in (
            model.Completion.SUCCEEDED,
            model.Completion.STREAM_ERRORED,
            model.Completion.STREAM_TIMEOUT,
        ):
            reason, label = streams.Reason.COMPLETE, "complete"
        else:
            return  # suspended: the streams stay open (paused) for the successor
        error = None
        if kind is model.Completion.ERRORED:
            result = self._store.result(execution.id)
            error = result.error if result is not None else None
        if own_only:
            open_streams = self._store.open_streams_registered_by(execution.id)
        else:
            open_streams = self._store.open_streams(execution.step_id, execution.workspace_id)
        for stream_id in open_streams:
            self._close_stream_now(stream_id, reason, label, error, execution.id)

    def _resolve(self, execution_id: int) -> Resolution:
        return lifecycle.resolve(self._store, execution_id)

    def _resolved(self, execution_id: int) -> None:
        """Something was recorded for this execution: re-check whoever waits on it."""
        self._wake(("execution", execution_id))

    def _wake(self, key: WaitKey) -> None:
        self._store.queue().wake(key)  # executions the scheduling pass parked under it
        for wait_key in sorted(self._waiting_on.pop(key, set())):
            wait = self._waits.get(wait_key)
            if wait is None:
                continue
            # Dropped first so a cascade from cancel_remaining can't answer it twice; its
            # timer keeps running while the wait moves on to a successor (a hand-off).
            self._drop_wait(wait_key, disarm=False)
            if self._answer(wait):
                self._effects.append(effects.DisarmTimer(key=("select", *wait_key)))
            else:
                self._register_wait(wait_key, wait)
        self._tick_requested = True

    def _stream_reached(self, stream_id: int, sequence: int) -> bool:
        return (
            self._store.stream_head(stream_id) >= sequence
            or self._store.stream_closure(stream_id) is not None
        )

    def _outcome(self, handle: Handle) -> tuple[dict[str, Any] | None, WaitKey | None]:
        """A handle's select reply fields when it has resolved, else the key it waits under."""
        if handle[0] == "execution":
            resolution = self._resolve(handle[1])
            if resolution.pending is not None:
                return None, ("execution", resolution.pending)
            fields = lifecycle.select_fields(resolution)
            if "value" in fields:
                fields["value"] = self._expand(fields["value"])
            return fields, None
        if handle[0] == "input":
            status = inputs.select_status(self._store.input_response(handle[1]))
            return status, None if status is not None else ("input", handle[1])
        if self._stream_reached(handle[1], handle[2]):
            return {"status": "ok"}, None
        return None, ("stream", handle[1])

    def _answer(self, wait: SelectWait) -> bool:
        """Reply to a select if one of its handles resolved; returns whether it did."""
        for index, handle in enumerate(wait.handles):
            fields, _ = self._outcome(handle)
            if fields is None:
                continue
            self._send(wait.session_id, [2, wait.request_id, {"winner": index, **fields}])
            if wait.cancel_remaining:
                for other in wait.handles:
                    if other != handle and other[0] == "execution":
                        self._cancel(lifecycle.follow_spawns(self._store, other[1]), None)
            return True
        return False

    def _register_wait(self, key: WaitKey, wait: SelectWait) -> None:
        self._waits[key] = wait
        wait.under = []
        for handle in wait.handles:
            _, pending = self._outcome(handle)
            if pending is not None:
                self._waiting_on.setdefault(pending, set()).add(key)
                wait.under.append(pending)

    def _drop_wait(self, key: WaitKey, *, disarm: bool = True) -> None:
        wait = self._waits.pop(key, None)
        if wait is None:
            return
        for pending in wait.under:
            keys = self._waiting_on.get(pending)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._waiting_on[pending]
        if disarm:
            self._effects.append(effects.DisarmTimer(key=("select", *key)))

    def _cancel(
        self,
        execution_id: int,
        workspace_id: int | None,
        *,
        own_streams_only: bool = False,
        principal: commands.Principal = None,
    ) -> bool:
        """Cancel a live execution and its live descendants (in ``workspace_id``).

        Returns whether anything was cancelled.
        """
        execution = self._store.execution(execution_id)
        cancelled = False
        if self._store.completion(execution_id) is None:
            self._complete(
                execution_id,
                model.Completion.CANCELLED,
                None,
                own_streams_only=own_streams_only,
                principal=principal,
            )
            self._abort(execution)
            cancelled = True
        workspace = workspace_id or execution.workspace_id
        return self._cancel_descendants(execution_id, workspace, principal) or cancelled

    def _cancel_descendants(
        self, execution_id: int, workspace_id: int, principal: commands.Principal = None
    ) -> bool:
        cancelled = False
        for child in self._store.descendant_candidates(execution_id):
            if self._store.execution(child).workspace_id == workspace_id:
                cancelled = self._cancel(child, workspace_id, principal=principal) or cancelled
        return cancelled

    def _publish_input(self, row: ports.InputRow) -> None:
        """Topics showing this input: its own, the inputs listing and runs depending on it."""
        self._publish("input", row.external_id)
        executions = {self._store.execution(e) for e in self._store.input_dependants(row.id)}
        workspaces = {row.workspace_id} | {e.workspace_id for e in executions}
        for workspace_id in workspaces:
            self._publish("inputs", self._store.workspace_external_id(workspace_id))
        run_external_id = row.external_id.partition("/")[0]
        self._publish("run", self._store.workspace_external_id(row.workspace_id), run_external_id)
        for execution in executions:
            self._publish_run(execution)

    def _input_answered(self, row: ports.InputRow) -> None:
        self._publish_input(row)
        self._wake(("input", row.id))

    def _close_stream_now(
        self,
        stream_id: int,
        reason: streams.Reason,
        label: str,
        error: model.ErrorInfo | None,
        execution_id: int | None,
    ) -> bool:
        if not self._streams.close(stream_id, reason, label, error, execution_id, self._now):
            return False
        self._stream_changed(self._store.stream(stream_id), run=True)
        return True

    def _stream_changed(self, stream: ports.StreamRow, *, run: bool) -> None:
        self._publish("stream", stream.external_id)
        if run:
            run_external_id = stream.external_id.partition(":")[0]
            self._publish(
                "run", self._store.workspace_external_id(stream.workspace_id), run_external_id
            )
        self._wake(("stream", stream.id))
