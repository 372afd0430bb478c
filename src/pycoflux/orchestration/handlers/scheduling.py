"""The scheduling pass (``semantics.md`` §4.4): defer, resolve from the cache, then
assign what is due and ready to an eligible session, or spawn it as a run of its own.
"""

from __future__ import annotations

from pycoflux.orchestration import caching, checkpoints, deferral, effects, lifecycle, model
from pycoflux.orchestration.handlers.base import Base


class Scheduling(Base):
    """The scheduling pass."""

    def _tick(self) -> None:
        """The scheduling pass: defer, resolve from cache, then place what is due and ready."""
        self._tick_requested = False
        self._effects.append(effects.DisarmTimer(key=("tick",)))
        states: dict[int, model.WorkspaceState] = {}

        def active(execution: model.Execution) -> bool:
            if execution.workspace_id not in states:
                states[execution.workspace_id] = self._store.workspace_state(execution.workspace_id)
            return states[execution.workspace_id] is model.WorkspaceState.ACTIVE

        split = deferral.split([e for e in self._store.queued_executions() if active(e)], self._now)
        for older, newer in split.deferred:
            self._complete(older.id, model.Completion.DEFERRED, newer.id)
        for execution in split.due:
            if self._store.completion(execution.id) is not None:
                continue  # cancelled or handed off earlier in this pass
            if execution.attempt == 1 and execution.cache_key is not None:
                cache = self._store.step_options(execution.step_id).cache or {}
                hit = caching.cache_hit(self._store, execution, cache, self._now)
                if hit is not None:
                    self._complete(execution.id, model.Completion.CACHED, hit)
                    continue
            if not self._ready(execution):
                continue
            if execution.type is model.TargetType.WORKFLOW and execution.parent_id is not None:
                self._spawn(execution)
                continue
            self._assign(execution)
        if split.future:
            next_at = min(e.execute_after or self._now for e in split.future)
            self._effects.append(effects.ArmTimer(key=("tick",), at=next_at))
        if self._tick_requested:
            self._tick()

    def _ready(self, execution: model.Execution) -> bool:
        """No dependency keeps it waiting: a suspended select's successor needs any one
        of its handles resolved; ``wait_for`` arguments need all of theirs."""
        results = self._store.dependencies(execution.id)
        awaited_inputs = self._store.input_dependencies(execution.id)
        stream_waits = self._store.stream_waits(execution.id)
        if (results or awaited_inputs or stream_waits) and not (
            any(self._resolve(d).pending is None for d in results)
            or any(self._store.input_response(i) is not None for i in awaited_inputs)
            or any(self._stream_reached(s, n) for s, n in stream_waits)
        ):
            return False
        options = self._store.step_options(execution.step_id)
        if options.wait_for:
            arguments = self._store.step_arguments(execution.step_id)
            for index in options.wait_for:
                if index < len(arguments) and not lifecycle.references_settled(
                    self._store, arguments[index]
                ):
                    return False
        return True

    def _assign(self, execution: model.Execution) -> None:
        requires = model.merge_requires(
            self._store.run_requires(execution.run_id),
            self._store.step_options(execution.step_id).requires,
        )
        candidates = [
            session
            for session in self._sessions.values()
            if session.connected
            and not session.draining
            and not session.full
            and session.workspace_id == execution.workspace_id
            and execution.type in session.targets.get((execution.module, execution.target), ())
            and model.tags_match(requires, session.provides, session.accepts)
        ]
        if not candidates:
            return
        session = self._rng.choice(candidates)
        self._store.insert_assignment(execution.id, session.id, self._now)
        session.starting.add(execution.id)
        session.executions += 1
        options = self._store.step_options(execution.step_id)
        arguments = [self._expand(value) for value in self._store.step_arguments(execution.step_id)]
        state = {
            name: self._expand(value)
            for name, value in checkpoints.before(self._store, execution).items()
        }
        self._command(
            session.external_id,
            "execute",
            [
                execution.external_id,
                execution.module,
                execution.target,
                arguments,
                execution.run_external_id,
                self._store.workspace_external_id(execution.workspace_id),
                options.timeout,
                options.streams,
                state,
            ],
        )
        self._publish_run(execution)
        self._publish("sessions", self._store.workspace_external_id(session.workspace_id))
