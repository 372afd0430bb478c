"""Splitting the queue for a scheduling pass: deferred, due and future (``semantics.md`` §4.4, §7.4).

Among queued executions of the same module, target, workspace and defer key, only the
newest in queue order is kept; every older one is deferred to it, whether due or not.
Combined with a delay this debounces: each new call pushes the effective run out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pycoflux.orchestration import model


@dataclass(slots=True, kw_only=True)
class Split:
    deferred: list[tuple[model.Execution, model.Execution]] = field(default_factory=list)
    due: list[model.Execution] = field(default_factory=list)
    future: list[model.Execution] = field(default_factory=list)


def split(queued: list[model.Execution], now: int) -> Split:
    """``queued`` in queue order; the result keeps that order within each part."""
    result = Split()
    kept: dict[tuple[str, str, int, str], model.Execution] = {}
    for execution in reversed(queued):
        if execution.defer_key is not None:
            key = (execution.module, execution.target, execution.workspace_id, execution.defer_key)
            newer = kept.get(key)
            if newer is not None:
                result.deferred.append((execution, newer))
                continue
            kept[key] = execution
        if execution.execute_after is None or execution.execute_after <= now:
            result.due.append(execution)
        else:
            result.future.append(execution)
    result.deferred.reverse()
    result.due.reverse()
    result.future.reverse()
    return result
