"""Execution lifecycle: what an execution resolves to, and when a failure is retried.

Theory of operation. An execution moves through these states (``semantics.md`` §3):

    queued --assign--> assigned --heartbeat--> running --value--> draining --terminated--> succeeded
    queued --cancel--> cancelled                 running --error + terminated--> errored
    queued --spawn--> spawned (hand-off)         running --terminated, no result--> crashed
    queued --cache hit--> cached (hand-off)      draining --stream error, terminated--> stream_errored
    queued --newer duplicate--> deferred         draining --stream idle, terminated--> stream_timeout
                                                 running --timeout--> timeout
                                                 running --session lost--> abandoned
                                                 running --suspend--> suspended (successor)
                                                 running --null value, recurrent--> recurred (successor)

A value whose process ends after one of its own streams closed with an error completes
as stream_errored (retried like a failure), or after an idle timeout as stream_timeout.
Queued executions may instead be handed off: deferred to a newer duplicate, cached
from an earlier equal call, or spawned as a run of their own.

A failure (errored, abandoned, crashed, timeout, stream_errored) may get a successor
attempt from the retry policy. Suspended, recurred and hand-off completions always have one. A
consumer never sees an intermediate link: ``resolve`` follows successors until it
reaches a value, a final failure, a cancellation, or a still-pending execution.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

from pycoflux.orchestration import model, ports

# Edges of the diagram above, checked against docs/lifecycle.md by a test.
TRANSITIONS: frozenset[tuple[str, str]] = frozenset(
    {
        ("queued", "assigned"),
        ("queued", "cancelled"),
        ("queued", "spawned"),
        ("queued", "cached"),
        ("queued", "deferred"),
        ("assigned", "running"),
        ("assigned", "cancelled"),
        ("assigned", "suspended"),
        ("assigned", "crashed"),
        ("assigned", "abandoned"),
        ("running", "draining"),
        ("running", "errored"),
        ("running", "crashed"),
        ("running", "timeout"),
        ("running", "abandoned"),
        ("running", "cancelled"),
        ("running", "suspended"),
        ("running", "recurred"),
        ("draining", "succeeded"),
        ("draining", "abandoned"),
        ("draining", "cancelled"),
        ("draining", "stream_errored"),
        ("draining", "stream_timeout"),
        ("draining", "suspended"),
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolution:
    """What an execution evaluates to right now."""

    pending: int | None = None  # the execution still being waited for
    value: model.Value | None = None
    error: model.ErrorInfo | None = None
    status: str = "ok"  # ok | error | cancelled | abandoned | crashed | timeout


def resolve(store: ports.OrchestrationStore, execution_id: int) -> Resolution:
    """Follow successors until something stands (``semantics.md`` §3.5)."""
    seen: set[int] = set()
    current = execution_id
    while current not in seen:
        seen.add(current)
        result = store.result(current)
        if result is not None and result.value is not None:
            return Resolution(value=result.value)
        completion = store.completion(current)
        if completion is None:
            return Resolution(pending=current)
        kind, successor = completion
        if successor is not None and kind is not model.Completion.CANCELLED:
            current = successor
            continue
        if kind is model.Completion.ERRORED and result is not None:
            return Resolution(status="error", error=result.error)
        if kind is model.Completion.CANCELLED:
            return Resolution(status="cancelled")
        if kind in (model.Completion.ABANDONED, model.Completion.CRASHED, model.Completion.TIMEOUT):
            return Resolution(status=kind.name.lower())
        return Resolution(pending=current)
    return Resolution(pending=current)


def select_result(index: int, resolution: Resolution) -> dict[str, Any]:
    """The worker-wire reply for a select won by handle ``index``."""
    return {"winner": index, **select_fields(resolution)}


def select_fields(resolution: Resolution) -> dict[str, Any]:
    """``status`` and ``value`` or ``error`` of a resolved execution handle."""
    reply: dict[str, Any] = {"status": resolution.status}
    if resolution.value is not None:
        reply["value"] = resolution.value
    if resolution.error is not None:
        error: dict[str, Any] = {
            "type": resolution.error.type,
            "message": resolution.error.message,
        }
        if resolution.error.frames:
            error["traceback"] = "\n".join(
                f'  File "{f[0]}", line {f[1]}, in {f[2]}\n    {f[3] or ""}'
                for f in resolution.error.frames
            )
        reply["error"] = error
    return reply


def retry_delay(
    retries: model.Retries | None,
    *,
    retryable: bool,
    previous: list[model.Completion | None],
    rng: random.Random,
) -> int | None:
    """Milliseconds until the retry attempt, or None when the failure is final.

    ``previous`` lists the outcomes of the step's earlier attempts, newest first.
    """
    if retries is None or not retryable or retries.limit == 0:
        return None
    spread = retries.backoff_max - retries.backoff_min
    if retries.limit is None:
        return retries.backoff_min + int(rng.random() * spread)
    failures = 0
    for kind in previous[: retries.limit + 1]:
        if kind is None or not kind.is_failure:
            break
        failures += 1
    if failures >= retries.limit:
        return None
    return retries.backoff_min + int(failures / max(retries.limit - 1, 1) * spread)


def is_null(value: model.Value) -> bool:
    return value[0] == "raw" and value[1] is None


def replace_requires(options: model.StepOptions, requires: model.TagSet) -> model.StepOptions:
    return dataclasses.replace(options, requires=requires)


def follow_spawns(store: ports.OrchestrationStore, execution_id: int) -> int:
    """The execution currently standing for this one across spawned hand-offs."""
    current = execution_id
    for _ in range(1000):
        completion = store.completion(current)
        if completion is None or completion[0] is not model.Completion.SPAWNED:
            return current
        if completion[1] is None:
            return current
        current = completion[1]
    return current


def unsettled_reference(store: ports.OrchestrationStore, value: model.Value) -> int | None:
    """The pending execution behind the first unresolved reference in a value
    (recursively), or ``None`` when every one has resolved."""
    stack = [value]
    seen: set[int] = set()
    while stack:
        for reference in model.value_references(stack.pop()):
            if reference[0] != "execution":
                continue
            execution = store.execution_by_external_id(str(reference[1]))
            if execution is None or execution.id in seen:
                continue
            seen.add(execution.id)
            resolution = resolve(store, execution.id)
            if resolution.pending is not None:
                return resolution.pending
            if resolution.value is not None:
                stack.append(resolution.value)
    return None


def expand_references(store: ports.OrchestrationStore, value: model.Value) -> model.Value:
    """Add what workers expect to references: module and target of executions, the
    name, entry count and size of assets."""
    references = model.value_references(value)
    if not references:
        return value
    expanded = []
    for reference in references:
        if reference[0] == "execution":
            execution = store.execution_by_external_id(str(reference[1]))
            if execution is not None:
                reference = ["execution", execution.external_id, execution.module, execution.target]
        elif reference[0] == "asset":
            asset = store.asset_by_external_id(str(reference[1]))
            if asset is not None:
                reference = asset.reference()
        expanded.append(reference)
    if value[0] == "raw":
        return ["raw", value[1], expanded]
    return ["blob", value[1], value[2], expanded]
