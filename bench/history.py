"""History for the benchmark: a project database that already holds many finished runs.

``python -m bench --history 1000000`` seeds each mode's fresh data directory with that
many finished executions before the server starts, so W1-W3 measure a server whose
database is large (issue: W3 with a million executions in history within 20% of its
value on an empty server). Each run is one workflow step with one succeeded attempt, its
result and completion, written through the store itself so that the rows are the ones
the server writes, in batches of one transaction each.
"""

from __future__ import annotations

import time
from pathlib import Path

from pycoflux.orchestration import model
from pycoflux.storage import orchestration, sqlite

_BATCH = 10_000
_OPTIONS = model.StepOptions()
_VALUE: model.Value = ["raw", 42, []]


def populate(project_dir: Path, executions: int, *, progress: bool = True) -> None:
    """Write ``executions`` finished one-step runs into the project's orchestration file."""
    project_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite.connect(project_dir / "orchestration.sqlite", synced_by_caller=True)
    try:
        store = orchestration.SqliteOrchestrationStore(db)
        found = store.workspace_by_name("default")
        workspace = (
            found.id
            if found is not None
            else store.insert_workspace(model.random_id("W", 4), "default", None, 0)
        )
        now = int(time.time() * 1000) - executions  # in the past, one per millisecond
        started = time.monotonic()
        for first in range(0, executions, _BATCH):
            db.execute("BEGIN")
            for n in range(first, min(first + _BATCH, executions)):
                _finished_run(store, workspace, n, now + n)
            db.execute("COMMIT")
            store.discard_caches()  # keep the writer's caches from growing with the seed
            if progress:
                done = min(first + _BATCH, executions)
                rate = done / max(time.monotonic() - started, 1e-9)
                print(f"\r-- history: {done:,}/{executions:,} ({rate:,.0f}/s)", end="", flush=True)
        if progress:
            print(flush=True)
    finally:
        db.close()


def _finished_run(
    store: orchestration.SqliteOrchestrationStore, workspace: int, n: int, at: int
) -> None:
    run = store.insert_run(
        external_id=f"H{n:08d}",
        parent_execution_id=None,
        idempotency_key=None,
        requires={},
        memo=False,
        created_at=at,
        created_by=None,
    )
    step = store.insert_step(
        run_id=run,
        number=1,
        parent_execution_id=None,
        module="benchflows",
        target="trivial",
        type=model.TargetType.WORKFLOW,
        options=_OPTIONS,
        arguments=[],
        created_at=at,
    )
    execution = store.insert_execution(
        step_id=step,
        attempt=1,
        workspace_id=workspace,
        execute_after=None,
        created_at=at,
        created_by=None,
    )
    store.insert_result(execution, value=_VALUE, created_at=at)
    store.insert_completion(execution, model.Completion.SUCCEEDED, None, at)
