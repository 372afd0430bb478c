"""The per-project orchestration core: commands in, effects out, time as an input.

Theory of operation. ``Orchestrator.handle`` applies one command inside the caller's
transaction on the project's store and returns the effects the shell must perform
(frames to workers, replies, timers, topic notifications). It never awaits, never
reads a clock and never touches a socket, so the server, tests and replays drive it
the same way.

Durable state (workspaces, runs, steps, executions, results, completions, sessions,
inputs, assets, checkpoints, stream items) lives in the store. Live state that only
matters while the project is up (which sessions are connected, what they declared,
which executions each one holds, which select requests are waiting, stream
subscriptions and producer credit) lives here and is rebuilt by ``Start``: sessions
are reloaded disconnected with a fresh expiry, and the executions assigned to them are
held again so that a reconnecting worker can deliver what it buffered.

An execution's outcome is split in two records: a *result* (the value or error the
worker reported) and a *completion* (the terminal marker). Waiters resolve on a
value as soon as it is recorded; errors only count once the retry decision is made
at termination, so a retried failure is never seen by a consumer.

The handlers live in ``handlers/``, one family per concept (workspaces, runs, sessions,
results, selects, inputs, assets, checkpoints, streams, scheduling), on a shared base
that holds the live state and what recording an outcome sets off; this module only
composes them and dispatches commands.

Waiting. A select waits on *keys*: ``("execution", id)`` for the execution its handle
currently resolves to, ``("input", id)`` and ``("stream", id)``. Whatever records an
outcome, a response or a stream item wakes the key; the wait then answers or, when an
execution handed off to another pending one, moves to the new key. Queued executions
are not tracked that way: the scheduling pass re-checks their dependencies each time.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from pycoflux.orchestration import commands, effects, model, ports
from pycoflux.orchestration.handlers import (
    assets,
    checkpoints,
    inputs,
    pools,
    results,
    runs,
    scheduling,
    selects,
    sessions,
    streams,
    workspaces,
)
from pycoflux.orchestration.handlers.sessions import (
    ACTIVATION_TIMEOUT_MS,
    RECONNECTION_TIMEOUT_MS,
    LiveSession,
)

__all__ = ["ACTIVATION_TIMEOUT_MS", "RECONNECTION_TIMEOUT_MS", "LiveSession", "Orchestrator"]


class Orchestrator(
    workspaces.Workspaces,
    runs.Runs,
    sessions.Sessions,
    results.Results,
    selects.Selects,
    inputs.Inputs,
    assets.Assets,
    checkpoints.Checkpoints,
    streams.Streams,
    scheduling.Scheduling,
    pools.Pools,
):
    """Applies commands to one project's store and says what must happen next."""

    def __init__(
        self, store: ports.OrchestrationStore, *, rng: random.Random | None = None
    ) -> None:
        super().__init__(store, rng=rng)
        self._handlers: dict[type[Any], Callable[[Any], None]] = {
            commands.Start: self._start,
            commands.CreateWorkspace: self._create_workspace,
            commands.UpdateWorkspace: self._update_workspace,
            commands.PauseWorkspace: self._pause_workspace,
            commands.ResumeWorkspace: self._resume_workspace,
            commands.ArchiveWorkspace: self._archive_workspace,
            commands.RegisterManifests: self._register_manifests,
            commands.ArchiveModule: self._archive_module,
            commands.SubmitWorkflow: self._submit_workflow,
            commands.CancelExecution: self._cancel_execution,
            commands.RerunStep: self._rerun_step,
            commands.RespondInput: self._respond_input,
            commands.DismissInput: self._dismiss_input,
            commands.CreateSession: self._create_session,
            commands.ConnectSession: self._connect_session,
            commands.DisconnectSession: self._disconnect_session,
            commands.DeclareTargets: self._declare_targets,
            commands.DrainSession: self._drain_session,
            commands.RecordHeartbeats: self._record_heartbeats,
            commands.RecordResult: self._record_result,
            commands.RecordError: self._record_error,
            commands.RecordTimeout: self._record_timeout,
            commands.RecordTermination: self._record_termination,
            commands.Suspend: self._suspend,
            commands.RegisterGroup: self._register_group,
            commands.DefineMetric: self._define_metric,
            commands.SubmitChild: self._submit_child,
            commands.Select: self._select,
            commands.CancelHandles: self._cancel_handles,
            commands.SubmitInput: self._submit_input,
            commands.PutAsset: self._put_asset,
            commands.GetAsset: self._get_asset,
            commands.UpdateCheckpoints: self._update_checkpoints,
            commands.RegisterStream: self._register_stream,
            commands.AppendStream: self._append_stream,
            commands.CloseStream: self._close_stream,
            commands.SubscribeStream: self._subscribe_stream,
            commands.AckStream: self._ack_stream,
            commands.UnsubscribeStream: self._unsubscribe_stream,
            commands.CreatePool: self._create_pool,
            commands.UpdatePool: self._update_pool,
            commands.ReplacePools: self._replace_pools,
            commands.DisablePool: self._disable_pool,
            commands.EnablePool: self._enable_pool,
            commands.StopWorker: self._stop_worker,
            commands.ResumeWorker: self._resume_worker,
            commands.LaunchSucceeded: self._launch_succeeded,
            commands.LaunchFailed: self._launch_failed,
            commands.WorkerPolled: self._worker_polled,
            commands.WorkerStopped: self._worker_stopped,
            commands.TimerFired: self._timer_fired,
        }

    # --- Entry point ----------------------------------------------------------------

    def handle(self, command: commands.Command, now: int) -> list[effects.Effect]:
        """Apply one command within the caller's transaction; return what the shell must do."""
        self._effects = []
        self._topics = set()
        self._now = now
        self._handlers[type(command)](command)
        if self._tick_requested:
            self._tick()
        if self._topics:
            self._effects.append(effects.Publish(topics=frozenset(self._topics)))
        return self._effects

    # --- Read-only views for the shell ------------------------------------------------

    def session_view(self, workspace_id: int) -> dict[str, dict[str, Any]]:
        """The sessions topic value of a workspace."""
        view: dict[str, dict[str, Any]] = {}
        for session in self._sessions.values():
            if session.workspace_id != workspace_id:
                continue
            targets: dict[str, list[str]] = {}
            for module, target in session.targets:
                targets.setdefault(module, []).append(target)
            view[session.external_id] = {
                "connected": session.connected,
                "executing": len(session.held),
                "concurrency": session.concurrency,
                "poolName": session.pool_name,
                "targets": {module: sorted(names) for module, names in targets.items()},
                "provides": session.provides,
                "accepts": session.accepts,
                "workerState": session.worker_state,
                "executions": session.executions,
            }
        return view

    def live_subscriptions(self, stream_id: int) -> bool:
        """Whether a consumer is subscribed to the stream right now (for topics)."""
        return self._streams.subscribed(stream_id)

    @property
    def idle(self) -> bool:
        return not self._sessions

    # --- Start-up and timers -------------------------------------------------------------

    def _start(self, _: commands.Start) -> None:
        self._serving_index = None
        for row in self._store.live_sessions():
            session = LiveSession(
                id=row.id,
                external_id=row.external_id,
                secret_hash=row.secret_hash,
                workspace_id=row.workspace_id,
                provides=row.provides,
                accepts=row.accepts,
                activated=row.activated_at is not None,
            )
            session.starting = set(self._store.held_executions(row.id))
            self._sessions[session.external_id] = session
            timeout = RECONNECTION_TIMEOUT_MS if session.activated else ACTIVATION_TIMEOUT_MS
            self._effects.append(
                effects.ArmTimer(key=("session", session.external_id), at=self._now + timeout)
            )
        # Work assigned to sessions that no longer exist can never be reported.
        held = {e for s in self._sessions.values() for e in s.held}
        for execution_id in self._store.orphaned_assignments():
            if execution_id not in held:
                self._fail(execution_id, model.Completion.ABANDONED)
        self._restore_pools()
        self._streams.restore()
        self._tick()

    def _timer_fired(self, command: commands.TimerFired) -> None:
        kind, *rest = command.key
        if kind in ("tick", "pools"):
            self._tick()
        elif kind == "session":
            session = self._sessions.get(rest[0])
            if session is not None and not session.connected:
                self._remove_session(rest[0], reason="session_invalid")
        elif kind == "select":
            self._select_expired(rest[0], rest[1])
