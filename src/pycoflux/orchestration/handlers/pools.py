"""Pools and the workers they launch (``semantics.md`` §2.16, §4.7, §4.8).

Pool commands change a workspace's pool history; any change to a pool drains its
active workers, which the scheduler then replaces. At the end of every scheduling pass
``_maintain_pools`` looks at what is still queued: for a due, ready execution that no
session took, a pool of its workspace that hosts its module and fits its tags launches
a worker - unless that pool already has one starting, or launched one less than 10 s
ago. Launching creates the worker and a session for it, and asks the shell to run the
launcher (``effects.Launch``). The same pass polls launched workers, drains the ones
idle for 5 s and stops drained ones once they hold nothing; what launchers report
comes back as ``LaunchSucceeded``/``LaunchFailed``, ``WorkerPolled`` and
``WorkerStopped``. A worker that exited, failed to launch or whose session never came
is deactivated, which also ends its session.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pycoflux.orchestration import commands, effects, model, ports
from pycoflux.orchestration import pools as pool_model
from pycoflux.orchestration import queue as queue_index
from pycoflux.orchestration.handlers.base import Base
from pycoflux.orchestration.handlers.sessions import ACTIVATION_TIMEOUT_MS, LiveSession
from pycoflux.orchestration.pools import WorkerState

POOLS_TIMER = ("pools",)


@dataclass(slots=True, kw_only=True)
class LivePool:
    row_id: int
    pool: pool_model.Pool
    definition_hash: str


@dataclass(slots=True, kw_only=True)
class LiveWorker:
    """A launched worker until it is deactivated."""

    id: int
    external_id: str
    workspace_id: int
    pool_name: str
    launcher: dict[str, Any]
    session: str | None  # its session's external id, while the session lives
    created_at: int
    launched: bool = False  # the launcher answered
    data: dict[str, Any] | None = None  # the launcher's handle (a successful launch)
    state: WorkerState = WorkerState.ACTIVE
    stopping: bool = False
    stopped: bool = False
    polling: bool = False
    polled_at: int | None = None
    idle_since: int | None = None
    executions: int = 0  # its session's assignments, as the pool topic last showed them


class Pools(Base):
    """Pool definitions, launching, and the upkeep of launched workers."""

    def __init__(
        self, store: ports.OrchestrationStore, *, rng: random.Random | None = None
    ) -> None:
        super().__init__(store, rng=rng)
        self._pools: dict[int, dict[str, LivePool]] = {}  # workspace -> name -> pool
        self._disabled: set[tuple[int, str]] = set()
        self._workers: dict[str, LiveWorker] = {}
        # When each pool last launched, so a launch that fails at once is not retried
        # before the throttle allows (workspace, name) -> time.
        self._launched_at: dict[tuple[int, str], int] = {}
        # Launchers of workers deactivated before their launch answered, so that a late
        # success can still be stopped.
        self._abandoned: dict[str, dict[str, Any]] = {}

    if TYPE_CHECKING:

        def _ready(self, execution: model.Execution) -> bool: ...

    # --- Start-up ---------------------------------------------------------------------

    def _restore_pools(self) -> None:
        """Reload pools and live workers (after the sessions were reloaded)."""
        for row in self._store.current_pools():
            assert row.pool is not None and row.definition_hash is not None
            self._pools.setdefault(row.workspace_id, {})[row.name] = LivePool(
                row_id=row.id, pool=row.pool, definition_hash=row.definition_hash
            )
        self._disabled = self._store.disabled_pools()
        sessions = {session.id: session for session in self._sessions.values()}
        for worker_row in self._store.live_workers():
            pool_row = self._store.pool_row(worker_row.pool_id)
            session = sessions.get(worker_row.session_id or 0)
            worker = LiveWorker(
                id=worker_row.id,
                external_id=worker_row.external_id,
                workspace_id=pool_row.workspace_id,
                pool_name=pool_row.name,
                launcher=(pool_row.pool.launcher if pool_row.pool else None) or {},
                session=None if session is None else session.external_id,
                created_at=worker_row.created_at,
                launched=worker_row.launched,
                data=worker_row.data,
                state=worker_row.state,
                stopping=worker_row.stopping,
                stopped=worker_row.stopped,
            )
            self._workers[worker.external_id] = worker
            key = (worker.workspace_id, worker.pool_name)
            self._launched_at[key] = max(self._launched_at.get(key, 0), worker.created_at)
            if session is not None:
                session.pool_name = worker.pool_name
                self._sync_session(worker)
            elif not worker.launched:
                self._deactivate(worker, "server_restarted")

    # --- Pool commands ------------------------------------------------------------------

    def _create_pool(self, command: commands.CreatePool) -> None:
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        if command.name in self._pools.get(workspace.id, {}):
            return self._reject("already_exists", status=409)
        self._put_pool(workspace, command.name, command.pool, command.principal)
        self._reply()

    def _update_pool(self, command: commands.UpdatePool) -> None:
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        current = self._pools.get(workspace.id, {}).get(command.name)
        if current is None:
            return self._reject("not_found", status=404)
        if command.patch is None:
            self._put_pool(workspace, command.name, None, command.principal)
            return self._reply()
        try:
            merged = pool_model.merge(current.pool, command.patch)
        except pool_model.TypeChangeError:
            return self._reject("type_change", status=409)
        except pool_model.InvalidPoolError:
            return self._reject("bad_request", details={"pool": "invalid"})
        self._put_pool(workspace, command.name, merged, command.principal)
        self._reply()

    def _replace_pools(self, command: commands.ReplacePools) -> None:
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        current = self._pools.get(workspace.id, {})
        etag = pool_model.pools_etag({n: p.definition_hash for n, p in current.items()})
        if command.expected is not None and command.expected != etag:
            return self._reject(
                "conflict", status=412, details={"message": "Pool configuration has changed"}
            )
        for name in sorted(set(current) - set(command.pools)):
            self._put_pool(workspace, name, None, command.principal)
        for name in sorted(command.pools):
            self._put_pool(workspace, name, command.pools[name], command.principal)
        self._reply()

    def _put_pool(
        self,
        workspace: ports.WorkspaceRow,
        name: str,
        pool: pool_model.Pool | None,
        principal: commands.Principal,
    ) -> None:
        """Record a pool's new definition (None deletes it), if it differs from the current."""
        pools = self._pools.setdefault(workspace.id, {})
        current = pools.get(name)
        digest = None if pool is None else pool_model.definition_hash(pool)
        if (current.definition_hash if current else None) == digest:
            return
        row_id = self._store.insert_pool(
            external_id=self._unique_id("P", 8, self._store.pool_external_id_used),
            workspace_id=workspace.id,
            name=name,
            pool=pool,
            created_at=self._now,
            created_by=principal,
        )
        if pool is None or digest is None:
            pools.pop(name, None)
        else:
            pools[name] = LivePool(row_id=row_id, pool=pool, definition_hash=digest)
        for worker in self._pool_workers(workspace.id, name):
            if worker.state is WorkerState.ACTIVE:
                self._set_worker_state(worker, WorkerState.DRAINING, principal)
        self._publish_pool(workspace.external_id, name)
        self._tick_requested = True

    def _disable_pool(self, command: commands.DisablePool) -> None:
        self._toggle_pool(command.workspace_id, command.name, True, command.principal)

    def _enable_pool(self, command: commands.EnablePool) -> None:
        self._toggle_pool(command.workspace_id, command.name, False, command.principal)

    def _toggle_pool(
        self, workspace_id: str, name: str, disabled: bool, principal: commands.Principal
    ) -> None:
        workspace = self._workspace_row(workspace_id)
        if workspace is None or name not in self._pools.get(workspace.id, {}):
            return self._reject("not_found", status=404)
        key = (workspace.id, name)
        if (key in self._disabled) != disabled:
            self._store.insert_pool_state(workspace.id, name, disabled, self._now, principal)
            if disabled:
                self._disabled.add(key)
            else:
                self._disabled.discard(key)
            for worker in self._pool_workers(workspace.id, name):
                self._sync_session(worker)
            self._publish_pool(workspace.external_id, name)
            self._tick_requested = True
        self._reply()

    def _stop_worker(self, command: commands.StopWorker) -> None:
        self._change_worker(command.workspace_id, command.worker_id, WorkerState.DRAINING, command)

    def _resume_worker(self, command: commands.ResumeWorker) -> None:
        self._change_worker(command.workspace_id, command.worker_id, WorkerState.ACTIVE, command)

    def _change_worker(
        self,
        workspace_id: str,
        worker_id: str,
        state: WorkerState,
        command: commands.StopWorker | commands.ResumeWorker,
    ) -> None:
        workspace = self._workspace_row(workspace_id)
        worker = self._workers.get(worker_id)
        if workspace is None or worker is None or worker.workspace_id != workspace.id:
            return self._reject("not_found", status=404)
        if worker.state is not state:
            self._set_worker_state(worker, state, command.principal)
            if state is WorkerState.ACTIVE:
                worker.idle_since = self._now  # give it a fresh idle period
            self._tick_requested = True
        self._reply()

    # --- Launcher outcomes ----------------------------------------------------------------

    def _launch_succeeded(self, command: commands.LaunchSucceeded) -> None:
        worker = self._workers.get(command.worker_id)
        if worker is None:
            # Deactivated while starting (its session never came): stop what did start.
            row = self._store.worker_external_id_used(command.worker_id)
            launcher = self._abandoned.pop(command.worker_id, None)
            if row is not None:
                self._store.insert_launch_result(row, command.data, None, self._now)
            if launcher is not None:
                self._effects.append(
                    effects.HaltWorker(
                        worker_id=command.worker_id, launcher=launcher, data=command.data
                    )
                )
            return
        self._store.insert_launch_result(worker.id, command.data, None, self._now)
        worker.launched = True
        worker.data = command.data
        self._publish_worker(worker)
        self._tick_requested = True

    def _launch_failed(self, command: commands.LaunchFailed) -> None:
        worker = self._workers.get(command.worker_id)
        if worker is None:
            return
        self._store.insert_launch_result(worker.id, None, command.error, self._now)
        worker.launched = True
        self._deactivate(worker, command.error)

    def _worker_polled(self, command: commands.WorkerPolled) -> None:
        worker = self._workers.get(command.worker_id)
        if worker is None:
            return
        worker.polling = False
        worker.polled_at = self._now
        if command.poll_error:
            self._deactivate(worker, "poll_error")
        elif not command.running:
            self._deactivate(worker, command.error, command.logs)
        else:
            self._tick_requested = True  # re-arm the upkeep timer

    def _worker_stopped(self, command: commands.WorkerStopped) -> None:
        worker = self._workers.get(command.worker_id)
        row = worker.id if worker else self._store.worker_external_id_used(command.worker_id)
        if row is not None:
            self._store.insert_worker_stop_result(row, command.error, self._now)
        if worker is not None:
            worker.stopping = False
            worker.stopped = True
            worker.polled_at = None  # look soon whether it is gone
            self._publish_worker(worker)
            self._tick_requested = True

    # --- Hooks from sessions and scheduling ----------------------------------------------------

    def _session_removed(self, session: LiveSession) -> None:
        """A session ended: unlink its worker (deactivate it if it never got launched)."""
        for worker in self._workers.values():
            if worker.session == session.external_id:
                worker.session = None
                if not worker.launched:
                    self._deactivate(worker, "launch_incomplete")
                else:
                    self._publish_worker(worker)
                return

    def _maintain_pools(self) -> None:
        """Launch for what no session took, then poll, drain and stop launched workers."""
        if not self._workers and not self._pools:
            return
        wake: list[int] = []
        self._launch_for_queue(wake)
        for worker in list(self._workers.values()):
            self._upkeep(worker, wake)
        if wake:
            self._effects.append(effects.ArmTimer(key=POOLS_TIMER, at=max(min(wake), self._now)))
        else:
            self._effects.append(effects.DisarmTimer(key=POOLS_TIMER))

    # --- Launching -----------------------------------------------------------------------------

    def _launchable(self, wake: list[int]) -> dict[int, dict[str, LivePool]]:
        """Pools that may launch right now: enabled, with a launcher, none of their workers
        still starting, and their last launch at least the throttle ago."""
        found: dict[int, dict[str, LivePool]] = {}
        for workspace_id, pools in self._pools.items():
            for name, live in pools.items():
                key = (workspace_id, name)
                if live.pool.launcher is None or key in self._disabled:
                    continue
                if any(
                    (session := self._sessions.get(worker.session or "")) is not None
                    and not session.targets  # not connected, or has declared nothing yet
                    for worker in self._pool_workers(workspace_id, name)
                ):
                    continue
                latest = self._launched_at.get(key)
                if latest is not None and self._now - latest < pool_model.LAUNCH_THROTTLE_MS:
                    wake.append(latest + pool_model.LAUNCH_THROTTLE_MS)
                    continue
                found.setdefault(workspace_id, {})[name] = live
        return found

    def _launch_for_queue(self, wake: list[int]) -> None:
        """One launch per pool chosen for a due, ready execution that no session took."""
        launchable = self._launchable(wake)
        if not launchable:
            return
        queue = self._store.queue()
        chosen: dict[int, set[str]] = {}
        states: dict[int, bool] = {}
        for key in queue.groups():
            workspace_id, module = key[0], key[1]
            options = {
                name: live
                for name, live in launchable.get(workspace_id, {}).items()
                if pool_model.serves(live.pool, module)
            }
            if not options:
                continue
            if workspace_id not in states:
                states[workspace_id] = (
                    self._store.workspace_state(workspace_id) is model.WorkspaceState.ACTIVE
                )
            if not states[workspace_id]:
                continue
            # One group requires one set of tags, so the pools that fit are the group's.
            requires = queue_index.thawed(key[4])
            fitting = sorted(
                name
                for name, live in options.items()
                if model.tags_match(requires, live.pool.provides, live.pool.accepts)
            )
            if not fitting:
                continue
            picked = chosen.setdefault(workspace_id, set())
            for execution in queue.due(key, self._now):
                if picked.issuperset(fitting):
                    break
                if self._ready(execution):
                    picked.add(self._rng.choice(fitting))
        for workspace_id, names in chosen.items():
            for name in sorted(names):
                self._launched_at[(workspace_id, name)] = self._now
                self._launch(workspace_id, name, launchable[workspace_id][name])

    def _launch(self, workspace_id: int, name: str, live: LivePool) -> None:
        assert live.pool.launcher is not None
        external_id = self._unique_id("", 12, self._store.session_by_external_id)
        secret = secrets.token_urlsafe(18)
        secret_hash = hashlib.sha256(secret.encode()).hexdigest()
        session_id = self._store.insert_session(
            external_id=external_id,
            secret_hash=secret_hash,
            workspace_id=workspace_id,
            provides=live.pool.provides,
            accepts=live.pool.accepts,
            created_at=self._now,
        )
        session = LiveSession(
            id=session_id,
            external_id=external_id,
            secret_hash=secret_hash,
            workspace_id=workspace_id,
            provides=live.pool.provides,
            accepts=live.pool.accepts,
            activated=False,
            pool_name=name,
            worker_state=WorkerState.ACTIVE.label,
        )
        self._sessions[external_id] = session
        self._effects.append(
            effects.ArmTimer(key=("session", external_id), at=self._now + ACTIVATION_TIMEOUT_MS)
        )
        worker_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        while self._store.worker_external_id_used(worker_id) is not None:
            worker_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        row = self._store.insert_worker(
            external_id=worker_id, pool_id=live.row_id, session_id=session_id, created_at=self._now
        )
        worker = LiveWorker(
            id=row,
            external_id=worker_id,
            workspace_id=workspace_id,
            pool_name=name,
            launcher=live.pool.launcher,
            session=external_id,
            created_at=self._now,
        )
        self._workers[worker_id] = worker
        self._effects.append(
            effects.Launch(
                worker_id=worker_id,
                launcher=live.pool.launcher,
                modules=live.pool.modules,
                workspace=self._store.workspace(workspace_id).name,
                session=f"{external_id}.{secret}",
            )
        )
        self._publish_worker(worker)

    # --- Upkeep ----------------------------------------------------------------------------------

    def _upkeep(self, worker: LiveWorker, wake: list[int]) -> None:
        session = self._sessions.get(worker.session or "")
        if session is None and worker.session is not None:
            worker.session = None
        self._sync_session(worker)
        if session is not None and session.executions != worker.executions:
            worker.executions = session.executions
            self._publish_worker(worker)
        if session is not None and session.connected and session.targets:
            if session.held:
                worker.idle_since = None
            elif worker.idle_since is None:
                worker.idle_since = self._now
        if worker.data is None:
            return  # not launched yet: nothing to poll or stop
        if not worker.polling:
            connected = session is not None and session.connected
            interval = (
                pool_model.POLL_CONNECTED_MS if connected else pool_model.POLL_DISCONNECTED_MS
            )
            if worker.polled_at is None or self._now - worker.polled_at > interval:
                worker.polling = True
                self._effects.append(
                    effects.PollWorker(
                        worker_id=worker.external_id, launcher=worker.launcher, data=worker.data
                    )
                )
            else:
                wake.append(worker.polled_at + interval + 1)
        idle = session is not None and not session.held
        if worker.state is WorkerState.ACTIVE and idle and worker.idle_since is not None:
            if self._now - worker.idle_since >= pool_model.IDLE_DRAIN_MS:
                self._set_worker_state(worker, WorkerState.DRAINING, None)
            else:
                wake.append(worker.idle_since + pool_model.IDLE_DRAIN_MS)
        if worker.stopping or worker.stopped:
            return
        if (worker.state is WorkerState.DRAINING and (session is None or idle)) or session is None:
            self._store.insert_worker_stop(worker.id, self._now)
            worker.stopping = True
            self._effects.append(
                effects.HaltWorker(
                    worker_id=worker.external_id, launcher=worker.launcher, data=worker.data
                )
            )
            self._publish_worker(worker)

    def _deactivate(self, worker: LiveWorker, error: str | None, logs: str | None = None) -> None:
        """The worker is gone for good: record it, forget it, end its session."""
        self._store.insert_worker_deactivation(worker.id, error, logs, self._now)
        self._workers.pop(worker.external_id, None)
        if not worker.launched:
            self._abandoned[worker.external_id] = worker.launcher
        session, worker.session = worker.session, None
        if session is not None:
            self._remove_session(session, reason="session_invalid")
        self._publish_worker(worker)

    # --- Helpers ---------------------------------------------------------------------------------

    def _pool_workers(self, workspace_id: int, name: str) -> list[LiveWorker]:
        return [
            w
            for w in self._workers.values()
            if w.workspace_id == workspace_id and w.pool_name == name
        ]

    def _set_worker_state(
        self, worker: LiveWorker, state: WorkerState, principal: commands.Principal
    ) -> None:
        worker.state = state
        self._store.insert_worker_state(worker.id, state, self._now, principal)
        self._sync_session(worker)
        self._publish_worker(worker)

    def _sync_session(self, worker: LiveWorker) -> None:
        """Mirror the worker's state on its session: only an active worker of an enabled
        pool takes new work."""
        session = self._sessions.get(worker.session or "")
        if session is None:
            return
        withheld = (
            worker.state is not WorkerState.ACTIVE
            or (worker.workspace_id, worker.pool_name) in self._disabled
        )
        if session.withheld != withheld or session.worker_state != worker.state.label:
            if session.withheld and not withheld:
                self._tick_requested = True
            session.withheld = withheld
            session.worker_state = worker.state.label
            self._publish("sessions", self._store.workspace_external_id(session.workspace_id))

    def _publish_pool(self, workspace: str, name: str) -> None:
        self._publish("pools", workspace)
        self._publish("pool", workspace, name)

    def _publish_worker(self, worker: LiveWorker) -> None:
        self._publish(
            "pool", self._store.workspace_external_id(worker.workspace_id), worker.pool_name
        )
