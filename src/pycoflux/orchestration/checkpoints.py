"""Checkpoints: named values that survive across attempts of a step (``semantics.md`` §9.2).

State is scoped to (step, workspace). A reader at attempt A in workspace W walks W's
ancestry nearest-first; in each workspace it looks for the highest attempt below A
that has written anything, and the first workspace with one wins (so a workspace
that wrote its own state never falls back to its base). The state is that attempt's
rows minus the resets (tombstones).

A writer first materialises the state it inherited (tombstones included, so a reset
keeps masking older values), then applies resets before sets. Writes only ever touch
the writing execution's own rows; base workspaces are read-only.
"""

from __future__ import annotations

from pycoflux.orchestration import model, ports

Rows = dict[str, model.Value | None]  # None: reset (tombstone)


def _source(store: ports.OrchestrationStore, execution: model.Execution) -> int | None:
    if execution.attempt == 1:
        return None  # the step's first attempt: there is nothing before it
    for workspace_id in store.workspace_chain(execution.workspace_id):
        source = store.checkpoint_source(execution.step_id, workspace_id, execution.attempt)
        if source is not None:
            return source
    return None


def live(rows: Rows) -> dict[str, model.Value]:
    return {name: value for name, value in rows.items() if value is not None}


def before(store: ports.OrchestrationStore, execution: model.Execution) -> dict[str, model.Value]:
    """The state handed to this attempt."""
    source = _source(store, execution)
    return {} if source is None else live(store.checkpoint_rows(source))


def after(store: ports.OrchestrationStore, execution: model.Execution) -> dict[str, model.Value]:
    """The state this attempt left: its own rows, or what it was handed if it wrote nothing."""
    own = store.checkpoint_rows(execution.id)
    return live(own) if own else before(store, execution)


def apply(
    store: ports.OrchestrationStore,
    execution: model.Execution,
    sets: dict[str, model.Value],
    resets: list[str],
    now: int,
) -> None:
    rows = store.checkpoint_rows(execution.id)
    if not rows:
        source = _source(store, execution)
        rows = {} if source is None else dict(store.checkpoint_rows(source))
    for name in resets:
        rows[name] = None
    rows.update(sets)
    store.put_checkpoints(execution.id, rows, now)
