"""Orchestration epochs: rotation, copy-forward and lookups across archived epochs.

Theory of operation. The orchestration database of a project is a partitioned store
(``epochs.Partitions``): ``orchestration.sqlite`` is the active epoch, and
``orchestration/<YYYYMMDD_NNNN>.sqlite`` are archives listed in
``orchestration/index.json`` with Bloom filters over the spec's three fields, ``runs``
(run external ids), ``cache_keys`` and ``idempotency_keys`` (32-byte keys, stored as
hex), plus ``assets`` (asset external ids; readers that don't know it ignore it).

Rotation (``OrchestrationEpochs.rotate``, on the project's writer, between batches):

1. ``Partitions.rotate`` does the file work: the index entry first, then checkpoint,
   rename, fresh active file (``epochs.py``).
2. ``seed`` copies forward, in one transaction, the configuration (``CONFIGURATION``:
   workspaces, manifests, module tombstones, unexpired sessions) and every run that has
   an execution without a completion, plus the runs those reference. Rows keep their
   internal ids: the new file is empty, so nothing collides, and the core's in-memory
   state (workspace, session, execution ids) stays valid without remapping. The same
   transaction records the archive it was seeded from (``epoch_seed``).
3. Bloom filters are built later, off the writer thread.

A crash between 1 and 2 leaves a fresh active file without ``epoch_seed`` for the
newest archive; ``open`` notices and seeds again before anything else reads it. So a
crash mid-rotation loses nothing: every row is in the archive, in the active file, or
in both.

Reads that miss the active epoch (``Archives``) visit unindexed archives newest first,
then indexed archives whose filter may hold the key, newest first. Read-only look-ups
(idempotency keys, the run topic) stop there; a reference that must act on an archived
run (re-run, select, resolve, cancel, a cache hit, an input) *copies the run forward*
with fresh internal ids (``copy_runs``): the run, the runs it references (parent runs,
child runs, dependencies, hand-off successors), recursively, skipping runs already
present; the archive keeps its copy as history.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pycoflux.storage import epochs, sqlite

log = logging.getLogger("pycoflux.storage")

T = TypeVar("T")


SCHEMA = epochs.Schema(
    name="orchestration",
    migrations=sqlite.packaged_migrations(),
    filters={
        "runs": "SELECT external_id FROM runs",
        "cache_keys": "SELECT DISTINCT cache_key FROM steps WHERE cache_key IS NOT NULL",
        "idempotency_keys": (
            "SELECT DISTINCT idempotency_key FROM runs WHERE idempotency_key IS NOT NULL"
        ),
        # Ours: an asset id is looked up whenever one is minted (ids must stay unique).
        "assets": "SELECT external_id FROM assets",
    },
    decode={"cache_keys": bytes.fromhex, "idempotency_keys": bytes.fromhex},
)

# Configuration copied forward at rotation, rows and ids unchanged: (table, condition on
# the archive). Adding a configuration table is one more line here.
_LIVE_WORKERS = (
    "SELECT id FROM workers WHERE id NOT IN (SELECT worker_id FROM worker_deactivations)"
)
_CURRENT_POOLS = (
    "SELECT max(id) FROM pools GROUP BY workspace_id, name"
    f" UNION SELECT pool_id FROM workers WHERE id IN ({_LIVE_WORKERS})"
)
CONFIGURATION: tuple[tuple[str, str], ...] = (
    ("workspaces", "1"),  # one row per workspace: its current name, state and base
    ("manifests", "1"),  # the current targets of each workspace's modules
    ("module_tombstones", "1"),
    # Unexpired sessions, and those of live pool workers.
    (
        "sessions",
        f"expired_at IS NULL OR id IN (SELECT session_id FROM workers WHERE id IN ({_LIVE_WORKERS}))",
    ),
    # The current pool row per (workspace, name), deleted ones included (they stay
    # deleted), plus the rows live workers were launched for; their definitions.
    (
        "launchers",
        f"id IN (SELECT d.launcher_id FROM pool_definitions d JOIN pools p ON p.definition_id = d.id WHERE p.id IN ({_CURRENT_POOLS}))",
    ),
    ("pool_definitions", f"id IN (SELECT definition_id FROM pools WHERE id IN ({_CURRENT_POOLS}))"),
    ("pools", f"id IN ({_CURRENT_POOLS})"),
    ("pool_states", "id IN (SELECT max(id) FROM pool_states GROUP BY workspace_id, name)"),
    # Workers not deactivated, with their launch result, latest state and stops.
    ("workers", f"id IN ({_LIVE_WORKERS})"),
    ("worker_launch_results", f"worker_id IN ({_LIVE_WORKERS})"),
    (
        "worker_states",
        f"id IN (SELECT max(id) FROM worker_states WHERE worker_id IN ({_LIVE_WORKERS}) GROUP BY worker_id)",
    ),
    ("worker_stops", f"worker_id IN ({_LIVE_WORKERS})"),
    (
        "worker_stop_results",
        f"stop_id IN (SELECT id FROM worker_stops WHERE worker_id IN ({_LIVE_WORKERS}))",
    ),
)


# --- Copying runs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Table:
    """Rows of one table belonging to the copied runs: selected by ``owner`` (a column
    holding an id of kind ``kind``); ``refs`` maps columns to the kind of id they hold."""

    name: str
    owner: str
    kind: str
    refs: tuple[tuple[str, str], ...]
    entity: bool = False  # the table's ``id`` is an id of kind ``name``


_LATE = "late"  # an execution id set once every execution is copied (parent links)

_ENTITIES = (
    _Table("runs", "id", "runs", (("parent_execution_id", _LATE),), entity=True),
    _Table("steps", "run_id", "runs", (("run_id", "runs"), ("parent_execution_id", _LATE)), True),
    _Table(
        "executions",
        "step_id",
        "steps",
        (("step_id", "steps"), ("workspace_id", "workspaces")),
        entity=True,
    ),
    _Table("inputs", "run_id", "runs", (("run_id", "runs"), ("workspace_id", "workspaces")), True),
    _Table(
        "streams", "step_id", "steps", (("step_id", "steps"), ("workspace_id", "workspaces")), True
    ),
)

_E = ("execution_id", "executions")
_LINKS = (
    _Table("assignments", "execution_id", "executions", (_E, ("session_id", "sessions"))),
    _Table("results", "execution_id", "executions", (_E,)),
    _Table("completions", "execution_id", "executions", (_E, ("successor_id", "executions"))),
    _Table("queue", "execution_id", "executions", (_E,)),
    _Table(
        "children",
        "parent_id",
        "executions",
        (("parent_id", "executions"), ("child_id", "executions")),
    ),
    _Table("groups", "execution_id", "executions", (_E,)),
    _Table("dependencies", "execution_id", "executions", (_E, ("dependency_id", "executions"))),
    _Table("input_responses", "input_id", "inputs", (("input_id", "inputs"),)),
    _Table("execution_inputs", "execution_id", "executions", (_E, ("input_id", "inputs"))),
    _Table("input_dependencies", "execution_id", "executions", (_E, ("input_id", "inputs"))),
    _Table("execution_assets", "execution_id", "executions", (_E, ("asset_id", "assets"))),
    _Table("asset_dependencies", "execution_id", "executions", (_E, ("asset_id", "assets"))),
    _Table("metric_definitions", "execution_id", "executions", (_E,)),
    _Table("checkpoints", "execution_id", "executions", (_E,)),
    _Table("stream_registrations", "stream_id", "streams", (("stream_id", "streams"), _E)),
    _Table("stream_items", "stream_id", "streams", (("stream_id", "streams"), _E)),
    _Table("stream_closures", "stream_id", "streams", (("stream_id", "streams"), _E)),
    _Table("stream_dependencies", "execution_id", "executions", (_E, ("stream_id", "streams"))),
    _Table("stream_waits", "execution_id", "executions", (_E, ("stream_id", "streams"))),
)

# The runs a set of runs refers to (parents, children, waits, hand-offs, inputs, streams).
_REFERENCED_RUNS = """
WITH x AS (SELECT e.id FROM executions e JOIN steps s ON s.id = e.step_id
           WHERE s.run_id IN ({ids})),
refs(id) AS (
  SELECT parent_execution_id FROM runs WHERE id IN ({ids})
  UNION SELECT parent_execution_id FROM steps WHERE run_id IN ({ids})
  UNION SELECT child_id FROM children WHERE parent_id IN x
  UNION SELECT dependency_id FROM dependencies WHERE execution_id IN x
  UNION SELECT successor_id FROM completions WHERE execution_id IN x
)
SELECT s.run_id FROM executions e JOIN steps s ON s.id = e.step_id WHERE e.id IN refs
UNION SELECT run_id FROM inputs WHERE id IN (
  SELECT input_id FROM execution_inputs WHERE execution_id IN x
  UNION SELECT input_id FROM input_dependencies WHERE execution_id IN x)
UNION SELECT s.run_id FROM streams st JOIN steps s ON s.id = st.step_id WHERE st.id IN (
  SELECT stream_id FROM stream_dependencies WHERE execution_id IN x
  UNION SELECT stream_id FROM stream_waits WHERE execution_id IN x)
"""

# How an id of each kind is named outside one file (source query, target query).
_EXTERNAL = {
    "executions": (
        "SELECT r.external_id, s.number, e.attempt FROM executions e"
        " JOIN steps s ON s.id = e.step_id JOIN runs r ON r.id = s.run_id WHERE e.id = ?",
        "SELECT e.id FROM executions e JOIN steps s ON s.id = e.step_id"
        " JOIN runs r ON r.id = s.run_id WHERE r.external_id = ? AND s.number = ? AND e.attempt = ?",
    ),
    "inputs": (
        "SELECT r.external_id, i.number FROM inputs i JOIN runs r ON r.id = i.run_id WHERE i.id = ?",
        "SELECT i.id FROM inputs i JOIN runs r ON r.id = i.run_id"
        " WHERE r.external_id = ? AND i.number = ?",
    ),
    "streams": (
        "SELECT r.external_id, s.number, st.number FROM streams st"
        " JOIN steps s ON s.id = st.step_id JOIN runs r ON r.id = s.run_id WHERE st.id = ?",
        "SELECT st.id FROM streams st JOIN steps s ON s.id = st.step_id"
        " JOIN runs r ON r.id = s.run_id WHERE r.external_id = ? AND s.number = ? AND st.number = ?",
    ),
    "workspaces": (
        "SELECT external_id FROM workspaces WHERE id = ?",
        "SELECT id FROM workspaces WHERE external_id = ?",
    ),
    "sessions": (
        "SELECT external_id FROM sessions WHERE id = ?",
        "SELECT id FROM sessions WHERE external_id = ?",
    ),
    "runs": (
        "SELECT external_id FROM runs WHERE id = ?",
        "SELECT id FROM runs WHERE external_id = ?",
    ),
}


class _Copier:
    """Copies rows from a source epoch into the target inside the caller's transaction.

    ``keep_ids``: rows keep their internal ids (rotation, into an empty file); otherwise
    the target assigns new ids and every reference is remapped (copy-on-reference).
    """

    def __init__(self, source: sqlite3.Connection, target: sqlite3.Connection, keep_ids: bool):
        self.source = source
        self.target = target
        self.keep_ids = keep_ids
        self.maps: dict[str, dict[int, int]] = {}
        self._columns: dict[tuple[int, str], list[str]] = {}

    def columns(self, table: str) -> list[str]:
        """Columns both files have (an archive may predate a later migration)."""
        key = (id(self.source), table)
        if key not in self._columns:

            def names(db: sqlite3.Connection) -> list[str]:
                return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]

            theirs = set(names(self.source))
            self._columns[key] = [c for c in names(self.target) if c in theirs]
        return self._columns[key]

    # --- Configuration (rotation) -------------------------------------------------------

    def configuration(self) -> None:
        for table, condition in CONFIGURATION:
            columns = self.columns(table)
            if not columns:
                continue  # not in the archive's schema
            listed = ", ".join(columns)
            rows = self.source.execute(f"SELECT {listed} FROM {table} WHERE {condition}")
            self.target.executemany(
                f"INSERT OR IGNORE INTO {table} ({listed}) VALUES ({sqlite.marks(columns)})", rows
            )

    # --- Runs ---------------------------------------------------------------------------

    def present(self, run_id: int) -> bool:
        return self.resolve("runs", run_id) is not None

    def closure(self, seeds: Iterable[int]) -> set[int]:
        """The seed runs and every run they reference, transitively, not yet in the target."""
        chosen = {run_id for run_id in seeds if not self.present(run_id)}
        frontier = set(chosen)
        while frontier:
            found: set[int] = set()
            for chunk in sqlite.chunks(frontier):
                sql = _REFERENCED_RUNS.format(ids=sqlite.marks(chunk))
                found.update(row[0] for row in self.source.execute(sql, chunk * 3))
            frontier = {r for r in found if r not in chosen and not self.present(r)}
            chosen |= frontier
        return chosen

    def resolve(self, kind: str, source_id: int) -> int | None:
        """The target id of a source row of ``kind`` copied earlier or present already."""
        mapped = self.maps.get(kind, {}).get(source_id)
        if mapped is not None:
            return mapped
        if kind == "assets":
            return self.asset(source_id)
        queries = _EXTERNAL.get(kind)
        if queries is None:
            return None
        name = self.source.execute(queries[0], (source_id,)).fetchone()
        if name is None:
            return None
        row = self.target.execute(queries[1], tuple(name)).fetchone()
        if row is None:
            return None
        self.maps.setdefault(kind, {})[source_id] = int(row[0])
        return int(row[0])

    def asset(self, source_id: int) -> int | None:
        """Ensure an asset (by external id, then content hash) in the target."""
        columns = self.columns("assets")
        row = self.source.execute(
            f"SELECT {', '.join(columns)} FROM assets WHERE id = ?", (source_id,)
        ).fetchone()
        if row is None:
            return None
        values = dict(zip(columns, row, strict=True))
        existing = self.target.execute(
            "SELECT id FROM assets WHERE external_id = ? OR hash = ?",
            (values["external_id"], values["hash"]),
        ).fetchone()
        if existing is not None:
            target_id = int(existing[0])
        else:
            if not self.keep_ids:
                del values["id"]
            cursor = self.target.execute(
                f"INSERT INTO assets ({', '.join(values)}) VALUES ({sqlite.marks(list(values.values()))})",
                tuple(values.values()),
            )
            target_id = int(cursor.lastrowid or 0)
        self.maps.setdefault("assets", {})[source_id] = target_id
        return target_id

    def runs(self, run_ids: set[int]) -> None:
        """Copy these runs (source ids, none present in the target) and all their rows."""
        owned: dict[str, set[int]] = {"runs": set(run_ids)}
        late: list[tuple[str, int, int]] = []  # (table, target row id, source execution id)
        for table in _ENTITIES:
            owned.setdefault(table.name, set())
            for row in self._rows(table, owned[table.kind]):
                values = dict(row)
                source_id = values["id"]
                owned[table.name].add(source_id)
                mapped = self._map(table, values, late_out=late, row_id=source_id)
                if mapped is None:
                    continue
                if not self.keep_ids:
                    del mapped["id"]
                cursor = self.target.execute(
                    f"INSERT INTO {table.name} ({', '.join(mapped)})"
                    f" VALUES ({sqlite.marks(list(mapped.values()))})",
                    tuple(mapped.values()),
                )
                target_id = source_id if self.keep_ids else int(cursor.lastrowid or 0)
                self.maps.setdefault(table.name, {})[source_id] = target_id
        for table_name, source_row, execution_id in late:
            target_row = self.maps[table_name][source_row]
            self.target.execute(
                f"UPDATE {table_name} SET parent_execution_id = ? WHERE id = ?",
                (self.resolve("executions", execution_id), target_row),
            )
        for table in _LINKS:
            rows = []
            for row in self._rows(table, owned[table.kind]):
                mapped = self._map(table, dict(row))
                if mapped is not None:
                    rows.append(mapped)
            if rows:
                columns = list(rows[0])
                self.target.executemany(
                    f"INSERT OR IGNORE INTO {table.name} ({', '.join(columns)})"
                    f" VALUES ({sqlite.marks(columns)})",
                    [tuple(r[c] for c in columns) for r in rows],
                )
        # An archive older than the ``live`` flag leaves it at its default: settle it from
        # the completions just copied.
        copied = self.maps.get("executions", {})
        for chunk in sqlite.chunks(copied[i] for i in owned.get("executions", ()) if i in copied):
            self.target.execute(
                f"UPDATE executions SET live = NULL WHERE id IN ({sqlite.marks(chunk)})"
                " AND id IN (SELECT execution_id FROM completions)",
                chunk,
            )

    def _rows(self, table: _Table, owners: set[int]) -> Iterator[list[tuple[str, Any]]]:
        columns = self.columns(table.name)
        if not columns:
            return
        for chunk in sqlite.chunks(owners):
            for row in self.source.execute(
                f"SELECT {', '.join(columns)} FROM {table.name}"
                f" WHERE {table.owner} IN ({sqlite.marks(chunk)})",
                chunk,
            ):
                yield list(zip(columns, row, strict=True))

    def _map(
        self,
        table: _Table,
        values: dict[str, Any],
        *,
        late_out: list[tuple[str, int, int]] | None = None,
        row_id: int = 0,
    ) -> dict[str, Any] | None:
        """Remap a row's references; None drops the row (a reference that is gone)."""
        for column, kind in table.refs:
            value = values.get(column)
            if value is None:
                continue
            if kind == _LATE:
                if late_out is not None:
                    late_out.append((table.name, row_id, value))
                values[column] = None
                continue
            mapped = self.resolve(kind, value)
            if mapped is None:
                if kind == "sessions":  # an assignment to a session not carried over
                    return None
                log.warning("copy %s: %s %s not found; row dropped", table.name, kind, value)
                return None
            values[column] = mapped
        return values


def copy_runs(
    source: sqlite3.Connection,
    target: sqlite3.Connection,
    run_ids: Iterable[int],
    *,
    keep_ids: bool = False,
) -> int:
    """Copy runs (source ids) and the runs they reference into ``target``; returns how many.

    Runs already in the target (by external id) are skipped. Runs in the caller's
    transaction: a savepoint makes the copy all or nothing.
    """
    copier = _Copier(source, target, keep_ids)
    target.execute("SAVEPOINT copy_runs")
    try:
        chosen = copier.closure(run_ids)
        copier.runs(chosen)
        target.execute("RELEASE copy_runs")
    except BaseException:
        target.execute("ROLLBACK TO copy_runs")
        target.execute("RELEASE copy_runs")
        raise
    return len(chosen)


def _live_runs(source: sqlite3.Connection) -> list[int]:
    """Runs with an execution that has no completion (running, queued, waiting ...)."""
    return [
        row[0]
        for row in source.execute(
            "SELECT DISTINCT s.run_id FROM executions e JOIN steps s ON s.id = e.step_id"
            " LEFT JOIN completions c ON c.execution_id = e.id WHERE c.execution_id IS NULL"
        )
    ]


def seed(source: sqlite3.Connection, target: sqlite3.Connection, epoch_id: str) -> int:
    """Start a fresh active epoch from the archive just made; returns the live runs copied.

    One transaction: the configuration, the live runs (same internal ids) and the
    ``epoch_seed`` marker, so a crash leaves either nothing (seeded again at open) or
    everything.
    """
    target.execute("CREATE TABLE IF NOT EXISTS epoch_seed (epoch_id TEXT NOT NULL) STRICT")
    target.execute("BEGIN IMMEDIATE")
    try:
        # Rows go in table by table; references (a workspace's base) are checked at commit.
        target.execute("PRAGMA defer_foreign_keys=ON")
        copier = _Copier(source, target, keep_ids=True)
        copier.configuration()
        live = copier.closure(_live_runs(source))
        copier.runs(live)
        target.execute("DELETE FROM epoch_seed")
        target.execute("INSERT INTO epoch_seed (epoch_id) VALUES (?)", (epoch_id,))
        target.execute("COMMIT")
    except BaseException:
        if target.in_transaction:
            target.execute("ROLLBACK")
        raise
    return len(live)


def seeded_from(db: sqlite3.Connection) -> str | None:
    try:
        row = db.execute("SELECT epoch_id FROM epoch_seed").fetchone()
    except sqlite3.OperationalError:
        return None  # never seeded: the first epoch
    return None if row is None else str(row[0])


# --- The epochs of one project -------------------------------------------------------------


class OrchestrationEpochs:
    """The active orchestration file, its archives and the reads that reach into them.

    Used from the project's writer thread, except ``compute_filters`` (any thread). The
    store calls the look-ups below when a row is missing from the active epoch.
    """

    def __init__(self, directory: Path, *, rotate_size: int = epochs.ROTATE_SIZE) -> None:
        self.partitions = epochs.Partitions(
            directory, SCHEMA, rotate_size=rotate_size, synced_by_caller=True
        )

    @property
    def active(self) -> sqlite3.Connection:
        return self.partitions.active

    @property
    def active_path(self) -> Path:
        """The active epoch's file (``orchestration.sqlite``), the same across rotations."""
        return self.partitions.active_path

    def open(self) -> list[str]:
        """Open the active epoch (finishing a rotation a crash interrupted); returns the
        archives whose filters are still to build."""
        unfiltered = self.partitions.open()
        archives = self.partitions.archives()
        if archives and seeded_from(self.active) != archives[-1].epoch_id:
            newest = archives[-1].epoch_id
            if self.active.execute("SELECT 1 FROM workspaces LIMIT 1").fetchone() is None:
                # A rotation died between the rename and the copy: finish it.
                log.warning("orchestration epoch %s was not carried forward; doing it now", newest)
                self._seed(newest)
            else:  # e.g. files restored from different backups: leave them as they are
                log.warning("the active orchestration file was not seeded from %s", newest)
        return unfiltered

    def close(self) -> None:
        self.partitions.close()

    def full(self) -> bool:
        return self.partitions.full()

    def rotate(self, now: int) -> str:
        """Archive the active epoch and seed a new one; returns the archived epoch id."""
        epoch_id = self.partitions.rotate(now)
        self._seed(epoch_id)
        return epoch_id

    def _seed(self, epoch_id: str) -> None:
        source = epochs.open_read_only(self.partitions.archive_path(epoch_id))
        try:
            copied = seed(source, self.active, epoch_id)
        finally:
            source.close()
        log.info("orchestration epoch %s archived; %d live runs carried forward", epoch_id, copied)

    def compute_filters(self, epoch_id: str) -> dict[str, Any] | None:
        return self.partitions.compute_filters(epoch_id)

    def set_filters(self, epoch_id: str, filters: dict[str, Any]) -> None:
        self.partitions.set_filters(epoch_id, filters)

    # --- Reading across epochs ----------------------------------------------------------

    def candidates(self, field: str | None, key: str | bytes | None) -> list[str]:
        """Archives to search for ``key``: unindexed newest first, then indexed ones whose
        filter may hold it, newest first."""
        newest_first = list(reversed(self.partitions.archives()))
        unindexed = [a.epoch_id for a in newest_first if a.filters is None]
        indexed = [
            a.epoch_id
            for a in newest_first
            if a.filters is not None and (field is None or key is None or a.may_contain(field, key))
        ]
        return unindexed + indexed

    def search(
        self,
        field: str | None,
        key: str | bytes | None,
        read: Callable[[sqlite3.Connection], T | None],
        *,
        epochs_: list[str] | None = None,
    ) -> tuple[str, T] | None:
        """The first archive (search order) where ``read`` finds something, and what."""
        for epoch_id in self.candidates(field, key) if epochs_ is None else epochs_:
            try:
                db = epochs.open_read_only(self.partitions.archive_path(epoch_id))
            except sqlite3.Error as e:
                log.error("cannot open orchestration archive %s: %s", epoch_id, e)
                continue
            try:
                found = read(db)
            except sqlite3.Error as e:
                log.error("cannot read orchestration archive %s: %s", epoch_id, e)
                found = None
            finally:
                db.close()
            if found is not None:
                return epoch_id, found
        return None

    def newest(self, count: int) -> list[str]:
        return [a.epoch_id for a in reversed(self.partitions.archives())][:count]

    def read_run(
        self, run_external_id: str, read: Callable[[sqlite3.Connection], T | None]
    ) -> T | None:
        """Read-only: ``read`` on the newest archive holding the run (the run topic)."""
        found = self.search("runs", run_external_id, read)
        return None if found is None else found[1]

    # The look-ups the store falls back to (``orchestration.ArchiveFallback``).

    def copy_run(self, target: sqlite3.Connection, run_external_id: str) -> bool:
        """Copy-on-reference: make an archived run (and what it references) present."""

        def source_id(db: sqlite3.Connection) -> int | None:
            row = db.execute("SELECT id FROM runs WHERE external_id = ?", (run_external_id,))
            found = row.fetchone()
            return None if found is None else int(found[0])

        found = self.search("runs", run_external_id, source_id)
        if found is None:
            return False
        epoch_id, run_id = found
        self._copy_run_from(epoch_id, target, run_id)
        log.info("run %s copied forward from epoch %s", run_external_id, epoch_id)
        return True

    def _copy_run_from(self, epoch_id: str, target: sqlite3.Connection, run_id: int) -> None:
        db = epochs.open_read_only(self.partitions.archive_path(epoch_id))
        try:
            copy_runs(db, target, [run_id])
        finally:
            db.close()

    def idempotent_run(self, key: str, since: int) -> str | None:
        """Read-only: the newest archived run with this idempotency key created since ``since``."""
        eligible = [
            epoch_id
            for epoch_id in self.candidates("idempotency_keys", bytes.fromhex(key))
            if self.partitions.index.archives[epoch_id].archived_at >= since
        ]

        def lookup(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT external_id FROM runs WHERE idempotency_key = ? AND created_at >= ?"
                " ORDER BY created_at DESC LIMIT 1",
                (key, since),
            ).fetchone()
            return None if row is None else str(row[0])

        found = self.search("idempotency_keys", None, lookup, epochs_=eligible)
        return None if found is None else found[1]

    def copy_cached(
        self,
        target: sqlite3.Connection,
        cache_key: str,
        workspaces: list[str],
        succeeded_since: int | None,
    ) -> bool:
        """A cache hit in an archive (a success with the key in one of these workspaces,
        by external id): its run is copied forward so the hit can be linked to."""
        if not workspaces:
            return False

        def lookup(db: sqlite3.Connection) -> int | None:
            row = db.execute(
                "SELECT s.run_id FROM steps s JOIN executions e ON e.step_id = s.id"
                " JOIN workspaces w ON w.id = +e.workspace_id"
                " JOIN completions c ON c.execution_id = e.id"
                " JOIN results res ON res.execution_id = e.id"
                f" WHERE s.cache_key = ? AND w.external_id IN ({sqlite.marks(workspaces)})"
                " AND c.kind = 0 AND (? IS NULL OR res.created_at >= ?)"
                " ORDER BY e.created_at DESC, e.id DESC LIMIT 1",
                (cache_key, *workspaces, succeeded_since, succeeded_since),
            ).fetchone()
            return None if row is None else int(row[0])

        found = self.search("cache_keys", bytes.fromhex(cache_key), lookup)
        if found is None:
            return False
        epoch_id, run_id = found
        self._copy_run_from(epoch_id, target, run_id)
        return True

    def copy_asset(self, target: sqlite3.Connection, external_id: str) -> bool:
        """An asset only referenced by values: copy its row forward (no run to go with it)."""

        def lookup(db: sqlite3.Connection) -> int | None:
            row = db.execute("SELECT id FROM assets WHERE external_id = ?", (external_id,))
            found = row.fetchone()
            return None if found is None else int(found[0])

        found = self.search("assets", external_id, lookup)
        if found is None:
            return False
        epoch_id, asset_id = found
        db = epochs.open_read_only(self.partitions.archive_path(epoch_id))
        try:
            _Copier(db, target, keep_ids=False).asset(asset_id)
        finally:
            db.close()
        return True
