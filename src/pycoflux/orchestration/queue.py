"""The queue of a project held in memory, indexed the way the scheduling pass reads it.

The store's ``queue`` table is the durable record of which executions wait for a
worker; this index mirrors it so that a pass never rescans that table. Executions are
grouped by what could take them - (workspace, module, target, type) and the tags they
require - so a pass only visits the groups some session with room can take, and the few
that need handling without a session (cache checks, deferral, spawned runs) are kept
apart. Within a group the order
is the queue order of ``semantics.md`` §4.4: executions without ``execute_after`` first,
then by ``execute_after``, then by creation.

Two kinds of queued executions cost a pass nothing, however many there are: those
delayed into the future (the due ones are a prefix of their group, see ``due``) and
*parked* ones. A pass parks an execution it found waiting on something (a dependency, an
input, a stream, a ``wait_for`` argument) under the keys of what it waits on; it stays
out of its group until one of those keys is woken, so a deep backlog of waiting work is
not re-examined by every command.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from sortedcontainers import SortedKeyList

from pycoflux.orchestration import model

TargetKey = tuple[int, str, str, model.TargetType]  # what a session declares it serves
Requires = tuple[tuple[str, tuple[str, ...]], ...]  # a TagSet, hashable
GroupKey = tuple[int, str, str, model.TargetType, Requires]
SortKey = tuple[bool, int, int, int]


def sort_key(execution: model.Execution) -> SortKey:
    after = execution.execute_after
    return (after is not None, after or 0, execution.created_at, execution.id)


def target_key(execution: model.Execution) -> TargetKey:
    return (execution.workspace_id, execution.module, execution.target, execution.type)


def frozen(tags: model.TagSet) -> Requires:
    return tuple(sorted((key, tuple(values)) for key, values in tags.items()))


def thawed(requires: Requires) -> model.TagSet:
    return {key: list(values) for key, values in requires}


def spawned(execution: model.Execution) -> bool:
    """A workflow called from an execution starts a run of its own, with no session."""
    return execution.type is model.TargetType.WORKFLOW and execution.parent_id is not None


DeferKey = tuple[str, str, int, str]


def defer_key(execution: model.Execution) -> DeferKey:
    """Executions with equal keys defer to the newest of them (``deferral.split``)."""
    return (execution.module, execution.target, execution.workspace_id, execution.defer_key or "")


def _remove(index: dict[Any, dict[int, model.Execution]], key: Any, execution_id: int) -> None:
    members = index.get(key)
    if members is not None:
        members.pop(execution_id, None)
        if not members:
            del index[key]


class QueueIndex:
    """Queued executions by group, in queue order; kept in step with the ``queue`` table."""

    def __init__(
        self,
        executions: Iterable[model.Execution] = (),
        requires: Callable[[model.Execution], model.TagSet] = lambda _: {},
    ) -> None:
        """``requires`` gives the tags an execution requires (its run's and its step's)."""
        self._requires = requires
        self._items: dict[int, model.Execution] = {}
        self._keys: dict[int, GroupKey] = {}
        # Each group in queue order: adding and removing an execution is O(log n).
        self._groups: dict[GroupKey, SortedKeyList[model.Execution, SortKey]] = {}
        self._by_target: dict[TargetKey, set[GroupKey]] = {}
        self._cached: dict[int, model.Execution] = {}  # first attempts to look up in the cache
        self._cache_missed: dict[str, dict[int, model.Execution]] = {}  # by cache key
        self._missed: dict[int, str] = {}  # the same, oldest miss first: id -> cache key
        self._deferrable: dict[DeferKey, dict[int, model.Execution]] = {}
        self._deferrable_shared: set[DeferKey] = set()  # keys more than one execution has
        self._spawns: dict[int, model.Execution] = {}
        self._future: list[tuple[int, int]] = []  # (execute_after, id); stale entries skipped
        self._parked: dict[int, tuple[Hashable, ...]] = {}  # execution id -> what it waits on
        self._parked_on: dict[Hashable, set[int]] = {}
        for execution in sorted(executions, key=sort_key):
            self.add(execution)

    def __contains__(self, execution_id: int) -> bool:
        return execution_id in self._items

    def __len__(self) -> int:
        return len(self._items)

    def add(self, execution: model.Execution) -> None:
        self._items[execution.id] = execution
        if spawned(execution):
            self._spawns[execution.id] = execution
        else:
            self._join_group(execution)
        if execution.cache_key is not None:
            # Only a new execution with the same key can turn a miss into a hit.
            for missed in list(self._cache_missed.get(execution.cache_key, ())):
                self._look_up_again(missed)
            if execution.attempt == 1:
                self._cached[execution.id] = execution
        if execution.defer_key is not None:
            key = defer_key(execution)
            sharing = self._deferrable.setdefault(key, {})
            sharing[execution.id] = execution
            if len(sharing) > 1:
                self._deferrable_shared.add(key)
        if execution.execute_after is not None:
            heapq.heappush(self._future, (execution.execute_after, execution.id))

    def _join_group(self, execution: model.Execution) -> None:
        key = self._keys.get(execution.id)
        if key is None:
            key = self._keys[execution.id] = (
                *target_key(execution),
                frozen(self._requires(execution)),
            )
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = SortedKeyList(key=sort_key)
            self._by_target.setdefault(key[:4], set()).add(key)
        group.add(execution)

    def _leave_group(self, execution: model.Execution) -> None:
        key = self._keys.get(execution.id)
        group = None if key is None else self._groups.get(key)
        if key is not None and group is not None and execution in group:
            group.remove(execution)
            if not group:
                del self._groups[key]
                keys = self._by_target[key[:4]]
                keys.discard(key)
                if not keys:
                    del self._by_target[key[:4]]

    def discard(self, execution_id: int) -> None:
        execution = self._items.pop(execution_id, None)
        if execution is None:
            return
        self._spawns.pop(execution_id, None)
        self._cached.pop(execution_id, None)
        missed_key = self._missed.pop(execution_id, None)
        if missed_key is not None:
            _remove(self._cache_missed, missed_key, execution_id)
        if execution.defer_key is not None:
            key = defer_key(execution)
            _remove(self._deferrable, key, execution_id)
            if len(self._deferrable.get(key, ())) < 2:
                self._deferrable_shared.discard(key)
        self._leave_group(execution)
        self._keys.pop(execution_id, None)
        self._forget_parking(execution_id)

    # --- Parking ------------------------------------------------------------------------

    def park(self, execution_id: int, keys: Iterable[Hashable]) -> None:
        """Keep a queued execution out of the passes until one of ``keys`` is woken."""
        execution = self._items.get(execution_id)
        keys = tuple(keys)
        if execution is None or spawned(execution) or not keys:
            return
        self._forget_parking(execution_id)
        self._leave_group(execution)
        self._parked[execution_id] = keys
        for key in keys:
            self._parked_on.setdefault(key, set()).add(execution_id)

    def parked(self, execution_id: int) -> bool:
        return execution_id in self._parked

    def wake(self, key: Hashable) -> None:
        """What ``key`` stood for changed: its parked executions rejoin their groups."""
        for execution_id in sorted(self._parked_on.pop(key, ())):
            if self._forget_parking(execution_id):
                self._join_group(self._items[execution_id])

    def sweep(self, count: int) -> None:
        """Bring back the ``count`` executions parked longest, and look the ``count`` oldest
        cache misses up again: a slow round over everything that waits for a wake-up, so
        a wake-up that never comes costs a delay, never a hang."""
        for execution_id in list(itertools.islice(self._parked, count)):
            self._forget_parking(execution_id)
            self._join_group(self._items[execution_id])
        for execution_id in list(itertools.islice(self._missed, count)):
            self._look_up_again(execution_id)

    def cache_lineage_changed(self) -> None:
        """A workspace's base changed: every cache miss may now have something to hit."""
        for execution_id in list(self._missed):
            self._look_up_again(execution_id)

    def _forget_parking(self, execution_id: int) -> bool:
        keys = self._parked.pop(execution_id, None)
        if keys is None:
            return False
        for key in keys:
            waiting = self._parked_on.get(key)
            if waiting is not None:
                waiting.discard(execution_id)
                if not waiting:
                    del self._parked_on[key]
        return True

    def ordered(self, executions: Iterable[model.Execution] | None = None) -> list[model.Execution]:
        """All queued executions (or the given ones) in queue order."""
        return sorted(self._items.values() if executions is None else executions, key=sort_key)

    def cached(self) -> list[model.Execution]:
        """First attempts with a cache key to look up: the pass does so first."""
        return self.ordered(self._cached.values())

    def cache_missed(self, execution_id: int) -> None:
        """A lookup found nothing: look again only once another execution has the key."""
        execution = self._cached.pop(execution_id, None)
        if execution is not None and execution.cache_key is not None:
            self._cache_missed.setdefault(execution.cache_key, {})[execution_id] = execution
            self._missed[execution_id] = execution.cache_key

    def _look_up_again(self, execution_id: int) -> None:
        key = self._missed.pop(execution_id)
        self._cached[execution_id] = self._cache_missed[key][execution_id]
        _remove(self._cache_missed, key, execution_id)

    def deferrable(self) -> list[model.Execution]:
        """Executions sharing a defer key with another queued one, in queue order: only
        those can defer (``deferral.split``)."""
        return self.ordered(
            execution
            for key in self._deferrable_shared
            for execution in self._deferrable[key].values()
        )

    def spawns(self) -> list[model.Execution]:
        return self.ordered(self._spawns.values())

    def group(self, key: GroupKey) -> list[model.Execution]:
        """The group's executions in queue order (a snapshot: safe to change while iterating)."""
        group = self._groups.get(key)
        return list(group) if group else []

    def due(self, key: GroupKey, now: int) -> list[model.Execution]:
        """The group's executions that are due at ``now``, in queue order (a snapshot).

        Queue order puts executions without ``execute_after`` first and the rest by it, so
        the due ones are a prefix: executions delayed into the future cost a pass nothing."""
        group = self._groups.get(key)
        if not group:
            return []
        # The first one delayed past ``now`` sorts at or after (True, now + 1).
        return list(group.islice(0, group.bisect_key_left((True, now + 1, 0, 0))))

    def targets(self) -> list[TargetKey]:
        """The targets with queued executions."""
        return list(self._by_target)

    def groups(self, target: TargetKey | None = None) -> list[GroupKey]:
        """Every group, or those of one target (one group per set of required tags)."""
        if target is None:
            return list(self._groups)
        return sorted(self._by_target.get(target, ()))

    def next_due(self, now: int) -> int | None:
        """The earliest ``execute_after`` still in the future, for the pass's timer."""
        while self._future:
            at, execution_id = self._future[0]
            execution = self._items.get(execution_id)
            if execution is None or execution.execute_after != at or at <= now:
                heapq.heappop(self._future)
                continue
            return at
        return None
