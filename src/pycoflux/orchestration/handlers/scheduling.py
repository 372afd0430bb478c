"""The scheduling pass (``semantics.md`` §4.4): defer, resolve from the cache, then
assign what is due and ready to an eligible session, or spawn it as a run of its own.

The pass reads the queue through its in-memory index (``orchestration/queue.py``) and
only visits the groups of executions some connected session could take right now, so
a deep queue that no worker has room for costs nothing per command. Groups are merged
in queue order, so the oldest due execution still gets the first free session.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from pycoflux.orchestration import caching, checkpoints, deferral, effects, lifecycle, model
from pycoflux.orchestration import queue as queue_index
from pycoflux.orchestration.handlers.base import Base, WaitKey
from pycoflux.orchestration.handlers.sessions import LiveSession

TICK_MS = 5_000  # the longest a project goes without a scheduling pass
SWEEP_MS = 1_000  # how often a pass also re-examines ...
SWEEP_SIZE = 64  # ... this many parked executions and cache misses


class Scheduling(Base):
    """The scheduling pass."""

    def _tick(self) -> None:
        """The scheduling pass: defer, resolve from cache, then place what is due and ready."""
        self._tick_requested = False
        self._effects.append(effects.DisarmTimer(key=("tick",)))
        queue = self._store.queue()
        if self._now - self._swept_at >= SWEEP_MS:
            # Parked executions and cache misses wait for a change in what they depend on;
            # a few are looked at again now and then anyway (bounded, so a deep backlog
            # costs no pass much), so a wake-up that never comes is a delay, not a hang.
            self._swept_at = self._now
            queue.sweep(SWEEP_SIZE)
        states: dict[int, bool] = {}

        def active(execution: model.Execution) -> bool:
            """Still queued (not taken earlier in this pass), in an active workspace."""
            if execution.id not in queue:
                return False
            if execution.workspace_id not in states:
                states[execution.workspace_id] = (
                    self._store.workspace_state(execution.workspace_id)
                    is model.WorkspaceState.ACTIVE
                )
            return states[execution.workspace_id]

        def due(execution: model.Execution) -> bool:
            after = execution.execute_after
            return (after is None or after <= self._now) and active(execution)

        deferrable = queue.deferrable()
        if deferrable:
            split = deferral.split([e for e in deferrable if active(e)], self._now)
            for older, newer in split.deferred:
                self._complete(older.id, model.Completion.DEFERRED, newer.id)
        for execution in queue.cached():
            if not due(execution):
                continue
            cache = self._store.step_options(execution.step_id).cache or {}
            hit = caching.cache_hit(self._store, execution, cache, self._now)
            if hit is not None:
                self._complete(execution.id, model.Completion.CACHED, hit)
            else:
                queue.cache_missed(execution.id)
        for execution in queue.spawns():
            if due(execution) and self._ready(execution):
                self._spawn(execution)
        for execution, candidates in self._placeable(queue):
            if not active(execution):
                continue
            blockers = self._blockers(execution)
            if blockers is None:
                self._assign(execution, candidates)
            else:
                queue.park(execution.id, blockers)
        # The next pass: when delayed work falls due, and at least every 5 s (§4.4).
        next_at = min(queue.next_due(self._now) or self._now + TICK_MS, self._now + TICK_MS)
        self._effects.append(effects.ArmTimer(key=("tick",), at=next_at))
        self._maintain_pools()
        if self._tick_requested:
            self._tick()

    def _placeable(
        self, queue: queue_index.QueueIndex
    ) -> Iterator[tuple[model.Execution, list[LiveSession]]]:
        """Due queued executions some session could take, in queue order, with those sessions.

        A group drops out as soon as its sessions are full, so the pass never walks the
        rest of a queue nobody has room for, nor executions delayed into the future, nor
        groups requiring tags no session with room offers."""
        serving = self._serving()
        candidates: dict[queue_index.GroupKey, list[LiveSession]] = {}
        heap: list[tuple[queue_index.SortKey, int, queue_index.GroupKey]] = []
        groups: dict[queue_index.GroupKey, list[model.Execution]] = {}
        positions: dict[queue_index.GroupKey, int] = {}
        for target_key in queue.targets():
            sessions = [
                session
                for session in serving.get(target_key, ())
                if session.connected and not session.draining and not session.full
            ]
            if not sessions:
                continue
            for group_key in queue.groups(target_key):
                requires = queue_index.thawed(group_key[4])
                fitting = [s for s in sessions if model.tags_match(requires, s.provides, s.accepts)]
                group = queue.due(group_key, self._now) if fitting else []
                if group:
                    candidates[group_key] = fitting
                    groups[group_key] = group
                    positions[group_key] = 0
                    heap.append((queue_index.sort_key(group[0]), len(heap), group_key))
        heapq.heapify(heap)
        while heap:
            _, index, key = heapq.heappop(heap)
            sessions = [s for s in candidates[key] if not s.full]
            candidates[key] = sessions
            if not sessions:
                continue
            group, position = groups[key], positions[key]
            yield group[position], sessions
            position += 1
            if position < len(group):
                positions[key] = position
                heapq.heappush(heap, (queue_index.sort_key(group[position]), index, key))

    def _serving(self) -> dict[queue_index.TargetKey, list[LiveSession]]:
        """The sessions declaring each target, in the order they were created.

        Kept between passes, so a pass costs what is queued rather than every connected
        session's declarations; dropped when a session declares targets or is removed.
        """
        if self._serving_index is None:
            serving: dict[queue_index.TargetKey, list[LiveSession]] = {}
            for session in self._sessions.values():
                for (module, target), types in session.targets.items():
                    for target_type in types:
                        served = (session.workspace_id, module, target, target_type)
                        serving.setdefault(served, []).append(session)
            self._serving_index = serving
        return self._serving_index

    def _ready(self, execution: model.Execution) -> bool:
        return self._blockers(execution) is None

    def _blockers(self, execution: model.Execution) -> list[WaitKey] | None:
        """``None`` when no dependency keeps it waiting; else the keys (``_wake``) of what
        it waits on. A suspended select's successor needs any one of its handles resolved;
        ``wait_for`` arguments need all of theirs."""
        waits = self._handle_waits(execution)
        if waits:
            return waits
        options = self._store.step_options(execution.step_id)
        if options.wait_for:
            arguments = self._store.step_arguments(execution.step_id)
            for index in options.wait_for:
                if index < len(arguments):
                    pending = lifecycle.unsettled_reference(self._store, arguments[index])
                    if pending is not None:
                        return [("execution", pending)]
        return None

    def _handle_waits(self, execution: model.Execution) -> list[WaitKey]:
        """What a suspended select's successor waits on: nothing once any one of its
        handles has resolved (or when it has none)."""
        keys: list[WaitKey] = []
        for dependency in self._store.dependencies(execution.id):
            pending = self._resolve(dependency).pending
            if pending is None:
                return []
            keys.append(("execution", pending))
        for input_id in self._store.input_dependencies(execution.id):
            if self._store.input_response(input_id) is not None:
                return []
            keys.append(("input", input_id))
        for stream_id, sequence in self._store.stream_waits(execution.id):
            if self._stream_reached(stream_id, sequence):
                return []
            keys.append(("stream", stream_id))
        return keys

    def _assign(self, execution: model.Execution, sessions: list[LiveSession]) -> None:
        """Hand ``execution`` to one of ``sessions`` (free, serving its target) whose tags fit."""
        requires = model.merge_requires(
            self._store.run_requires(execution.run_id),
            self._store.step_options(execution.step_id).requires,
        )
        candidates = [
            session
            for session in sessions
            if not session.full and model.tags_match(requires, session.provides, session.accepts)
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
