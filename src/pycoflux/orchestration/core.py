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

Waiting. A select waits on *keys*: ``("execution", id)`` for the execution its handle
currently resolves to, ``("input", id)`` and ``("stream", id)``. Whatever records an
outcome, a response or a stream item wakes the key; the wait then answers or, when an
execution handed off to another pending one, moves to the new key. Queued executions
are not tracked that way: the scheduling pass re-checks their dependencies each time.
"""

from __future__ import annotations

import hashlib
import random
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pycoflux.orchestration import (
    assets,
    caching,
    checkpoints,
    commands,
    deferral,
    effects,
    inputs,
    lifecycle,
    model,
    ports,
    streams,
)
from pycoflux.orchestration.lifecycle import Resolution

ACTIVATION_TIMEOUT_MS = 600_000
RECONNECTION_TIMEOUT_MS = 30_000
IDEMPOTENCY_WINDOW_MS = 86_400_000

WORKSPACE_NAME = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")

# A select handle as the core tracks it: ("execution", id), ("input", id) or
# ("stream", stream id, sequence); and the key a pending handle waits under.
Handle = tuple[Any, ...]
WaitKey = tuple[str, int]


@dataclass(slots=True, kw_only=True)
class LiveSession:
    """A worker session as the core tracks it between connections."""

    id: int
    external_id: str
    secret_hash: str
    workspace_id: int
    provides: model.TagSet
    accepts: model.TagSet
    activated: bool
    connected: bool = False
    draining: bool = False
    concurrency: int = 0
    targets: dict[tuple[str, str], set[model.TargetType]] = field(default_factory=dict)
    starting: set[int] = field(default_factory=set)
    executing: set[int] = field(default_factory=set)
    executions: int = 0

    @property
    def held(self) -> set[int]:
        return self.starting | self.executing

    @property
    def full(self) -> bool:
        return self.concurrency > 0 and len(self.starting) + len(self.executing) >= self.concurrency


@dataclass(slots=True, kw_only=True)
class SelectWait:
    """A select request that found nothing ready and is waiting."""

    session_id: str
    request_id: int
    execution_id: int  # the caller
    handles: list[Handle]  # in the caller's order
    suspend: bool
    cancel_remaining: bool


class Orchestrator:
    """Applies commands to one project's store and says what must happen next."""

    def __init__(
        self, store: ports.OrchestrationStore, *, rng: random.Random | None = None
    ) -> None:
        self._store = store
        self._rng = rng or random.Random()
        self._sessions: dict[str, LiveSession] = {}
        self._waits: dict[WaitKey, SelectWait] = {}
        self._waiting_on: dict[WaitKey, set[WaitKey]] = {}
        self._streams = streams.StreamHub(store, self._send, self._session_of, self._expand)
        self._effects: list[effects.Effect] = []
        self._topics: set[tuple[str, ...]] = set()
        self._now = 0
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
                "poolName": None,
                "targets": {module: sorted(names) for module, names in targets.items()},
                "provides": session.provides,
                "accepts": session.accepts,
                "workerState": None,
                "executions": session.executions,
            }
        return view

    def session_token_valid(self, token: str) -> bool:
        external_id, _, secret = token.partition(".")
        session = self._sessions.get(external_id)
        return (
            session is not None
            and bool(secret)
            and secrets.compare_digest(
                hashlib.sha256(secret.encode()).hexdigest(), session.secret_hash
            )
        )

    def live_subscriptions(self, stream_id: int) -> bool:
        """Whether a consumer is subscribed to the stream right now (for topics)."""
        return self._streams.subscribed(stream_id)

    @property
    def idle(self) -> bool:
        return not self._sessions

    # --- Helpers ---------------------------------------------------------------------

    def _reply(self, result: Any = None) -> None:
        self._effects.append(effects.Reply(result=result))

    def _reject(self, error: str, status: int = 400, details: Any = None) -> None:
        self._effects.append(effects.Rejected(error=error, status=status, details=details))

    def _send(self, session_id: str, frame: list[Any]) -> None:
        self._effects.append(effects.Send(session_id=session_id, frame=frame))

    def _publish(self, *topic: str) -> None:
        self._topics.add(topic)

    def _workspace_row(self, external_id: str) -> ports.WorkspaceRow | None:
        workspace = self._store.workspace_by_external_id(external_id)
        if workspace is None or workspace.state is model.WorkspaceState.ARCHIVED:
            return None
        return workspace

    def _held_by(
        self, session_id: str, execution_id: str
    ) -> tuple[LiveSession, model.Execution] | None:
        """The execution if this session holds it; otherwise close the connection (strict)."""
        session = self._sessions.get(session_id)
        execution = self._store.execution_by_external_id(execution_id)
        if session is None or execution is None or execution.id not in session.held:
            self._effects.append(
                effects.CloseSession(session_id=session_id, reason="execution_invalid")
            )
            return None
        return session, execution

    def _session_of(self, execution_id: int) -> str | None:
        """The session an execution is assigned to, while it still holds it."""
        session_row = self._store.assigned_session(execution_id)
        for session in self._sessions.values():
            if session.id == session_row and execution_id in session.held:
                return session.external_id
        return None

    def _expand(self, value: model.Value) -> model.Value:
        return lifecycle.expand_references(self._store, value)

    def _publish_run(self, execution: model.Execution) -> None:
        workspace = self._store.workspace_external_id(execution.workspace_id)
        self._publish("run", workspace, execution.run_external_id)
        self._publish("queue", workspace)

    def _unique_id(self, prefix: str, length: int, lookup: Callable[[str], object]) -> str:
        while True:
            candidate = model.random_id(prefix, length)
            if lookup(candidate) is None:
                return candidate
            length += 1

    def _command(self, session_id: str, name: str, params: list[Any]) -> None:
        self._send(session_id, [1, {"command": name, "params": params}])

    # --- Start-up ----------------------------------------------------------------------

    def _start(self, _: commands.Start) -> None:
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
        self._streams.restore()
        self._tick()

    # --- Workspaces and manifests ---------------------------------------------------------

    def _create_workspace(self, command: commands.CreateWorkspace) -> None:
        if not WORKSPACE_NAME.match(command.name):
            return self._reject("bad_request", details={"name": "invalid"})
        if self._store.workspace_by_name(command.name) is not None:
            return self._reject("bad_request", details={"name": "exists"})
        base_id = None
        if command.base_id is not None:
            base = self._workspace_row(command.base_id)
            if base is None:
                return self._reject("bad_request", details={"baseId": "invalid"})
            base_id = base.id
        external_id = self._unique_id("W", 2, self._store.workspace_by_external_id)
        self._store.insert_workspace(external_id, command.name, base_id, self._now)
        self._publish("workspaces")
        self._reply({"id": external_id})

    def _update_workspace(self, command: commands.UpdateWorkspace) -> None:
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        errors: dict[str, str] = {}
        name, base_id = workspace.name, workspace.base_id
        if command.name is not None and command.name != workspace.name:
            existing = self._store.workspace_by_name(command.name)
            if not WORKSPACE_NAME.match(command.name):
                errors["name"] = "invalid"
            elif existing is not None and existing.id != workspace.id:
                errors["name"] = "exists"
            name = command.name
        if command.set_base:
            if command.base_id is None:
                base_id = None
            else:
                base = self._workspace_row(command.base_id)
                # The new base must not be the workspace itself or one of its descendants.
                if base is None or workspace.id in self._store.workspace_lineage(base.id):
                    errors["baseId"] = "invalid"
                else:
                    base_id = base.id
        if errors:
            return self._reject("bad_request", details=errors)
        self._store.update_workspace(workspace.id, name, base_id)
        self._publish("workspaces")
        self._publish_manifests(workspace.id)
        self._tick()
        self._reply()

    def _publish_manifests(self, workspace_id: int) -> None:
        """Manifests are inherited: a change shows in the workspace and its descendants."""
        pending, seen = [workspace_id], set()
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            external_id = self._store.workspace_external_id(current)
            self._publish("manifests", external_id)
            self._publish("modules", external_id)
            self._publish("workflows", external_id)
            pending.extend(self._store.workspace_dependants(current))

    def _pause_workspace(self, command: commands.PauseWorkspace) -> None:
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        if workspace.state is model.WorkspaceState.ACTIVE:
            self._store.set_workspace_state(workspace.id, model.WorkspaceState.PAUSED)
            self._publish("workspaces")
        self._reply()

    def _resume_workspace(self, command: commands.ResumeWorkspace) -> None:
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        if workspace.state is model.WorkspaceState.PAUSED:
            self._store.set_workspace_state(workspace.id, model.WorkspaceState.ACTIVE)
            self._publish("workspaces")
        self._tick()
        self._reply()

    def _archive_workspace(self, command: commands.ArchiveWorkspace) -> None:
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        if self._store.workspace_dependants(workspace.id):
            return self._reject("bad_request", details={"workspaceId": "has_dependencies"})
        for session in list(self._sessions.values()):
            if session.workspace_id == workspace.id:
                self._remove_session(session.external_id, reason="workspace_not_found")
        for execution_id in self._store.live_executions_in_workspace(workspace.id):
            self._cancel(execution_id, workspace.id)
        self._store.set_workspace_state(workspace.id, model.WorkspaceState.ARCHIVED)
        self._publish("workspaces")
        self._publish("sessions", workspace.external_id)
        self._publish("queue", workspace.external_id)
        self._publish_manifests(workspace.id)
        self._reply()

    def _register_manifests(self, command: commands.RegisterManifests) -> None:
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        for module, workflows in command.manifests.items():
            self._store.replace_manifest(workspace.id, module, workflows, self._now)
        self._publish_manifests(workspace.id)
        self._reply()

    def _archive_module(self, command: commands.ArchiveModule) -> None:
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        self._store.replace_manifest(workspace.id, command.module, {}, self._now)
        self._publish_manifests(workspace.id)
        self._reply()

    # --- Runs --------------------------------------------------------------------------------

    def _submit_workflow(self, command: commands.SubmitWorkflow) -> None:
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        key = None
        if command.idempotency_key is not None:
            key = hashlib.sha256(
                command.workspace_id.encode() + b"\x00" + command.idempotency_key.encode()
            ).hexdigest()
            existing = self._store.run_by_idempotency_key(key, self._now - IDEMPOTENCY_WINDOW_MS)
            if existing is not None:
                return self._reply(
                    {"runId": existing, "stepId": f"{existing}:1", "executionId": f"{existing}:1:1"}
                )
        run_external_id = self._create_run(
            workspace_id=workspace.id,
            module=command.module,
            target=command.target,
            arguments=command.arguments,
            options=command.options,
            parent_execution_id=None,
            idempotency_key=key,
            principal=command.principal,
        )
        self._publish("workflow", command.workspace_id, command.module, command.target)
        self._publish("modules", command.workspace_id)
        self._tick()
        self._reply(
            {
                "runId": run_external_id,
                "stepId": f"{run_external_id}:1",
                "executionId": f"{run_external_id}:1:1",
            }
        )

    def _create_run(
        self,
        *,
        workspace_id: int,
        module: str,
        target: str,
        arguments: list[model.Value],
        options: model.StepOptions,
        parent_execution_id: int | None,
        idempotency_key: str | None,
        principal: commands.Principal,
    ) -> str:
        external_id = self._unique_id("R", 2, self._store.run_by_external_id)
        run_id = self._store.insert_run(
            external_id=external_id,
            parent_execution_id=parent_execution_id,
            idempotency_key=idempotency_key,
            requires=options.requires,
            memo=options.memo is True,
            created_at=self._now,
            created_by=principal,
        )
        # The root step's requirements live on the run.
        step_options = lifecycle.replace_requires(options, {})
        step_id = self._insert_step(
            run_id=run_id,
            number=1,
            parent_execution_id=None,
            module=module,
            target=target,
            type=model.TargetType.WORKFLOW,
            options=step_options,
            memo=options.memo,
            arguments=arguments,
        )
        execute_after = self._now + options.delay if options.delay > 0 else None
        execution = self._store.insert_execution(
            step_id=step_id,
            attempt=1,
            workspace_id=workspace_id,
            execute_after=execute_after,
            created_at=self._now,
            created_by=principal,
        )
        self._publish_run(self._store.execution(execution))
        return external_id

    def _insert_step(
        self,
        *,
        run_id: int,
        number: int,
        parent_execution_id: int | None,
        module: str,
        target: str,
        type: model.TargetType,
        options: model.StepOptions,
        memo: caching.Selector,
        arguments: list[model.Value],
    ) -> int:
        return self._store.insert_step(
            run_id=run_id,
            number=number,
            parent_execution_id=parent_execution_id,
            module=module,
            target=target,
            type=type,
            options=options,
            arguments=arguments,
            created_at=self._now,
            cache_key=caching.cache_key(options.cache, module, target, arguments),
            memo_key=caching.memo_key(memo, module, target, arguments),
            defer_key=caching.defer_key(options.defer, module, target, arguments),
        )

    def _submit_child(self, command: commands.SubmitChild) -> None:
        held = self._held_by(command.session_id, command.parent_id)
        if held is None:
            return
        _, parent = held
        if self._store.completion(parent.id) is not None:
            # A finished (or aborted) execution's children would outlive the cancellation
            # cascade that already ran.
            return self._send(command.session_id, [3, command.request_id, "execution_completed"])
        memo = caching.effective_memo(command.options.memo, self._store.run_memo(parent.run_id))
        key = caching.memo_key(memo, command.module, command.target, command.arguments)
        if key is not None:
            hit = caching.memo_hit(self._store, parent.run_id, key, parent.workspace_id)
            if hit is not None:
                # A memo hit creates nothing: the parent is linked to the existing execution.
                self._store.insert_child(parent.id, hit, command.group_id, self._now)
                existing = self._store.execution(hit)
                self._publish_run(parent)
                self._send(
                    command.session_id,
                    [
                        2,
                        command.request_id,
                        [existing.external_id, existing.module, existing.target],
                    ],
                )
                return
        number = self._store.next_step_number(parent.run_id)
        step_id = self._insert_step(
            run_id=parent.run_id,
            number=number,
            parent_execution_id=parent.id,
            module=command.module,
            target=command.target,
            type=command.type,
            options=command.options,
            memo=memo,
            arguments=command.arguments,
        )
        delay = command.options.delay
        child_id = self._store.insert_execution(
            step_id=step_id,
            attempt=1,
            workspace_id=parent.workspace_id,
            execute_after=self._now + delay if delay > 0 else None,
            created_at=self._now,
            created_by=None,
        )
        self._store.insert_child(parent.id, child_id, command.group_id, self._now)
        child = self._store.execution(child_id)
        self._publish_run(child)
        self._send(
            command.session_id,
            [2, command.request_id, [child.external_id, child.module, child.target]],
        )
        self._tick()

    def _register_group(self, command: commands.RegisterGroup) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is None:
            return
        _, execution = held
        self._store.insert_group(execution.id, command.group_id, command.name)
        self._publish_run(execution)

    def _define_metric(self, command: commands.DefineMetric) -> None:
        session = self._sessions.get(command.session_id)
        execution = self._store.execution_by_external_id(command.execution_id)
        if session is None or execution is None or execution.id not in session.held:
            return  # lenient: metric definitions for unknown executions are ignored
        if self._store.insert_metric_definition(
            execution.id, command.key, command.definition, self._now
        ):
            self._publish_run(execution)

    # --- Sessions --------------------------------------------------------------------------------

    def _create_session(self, command: commands.CreateSession) -> None:
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        external_id = self._unique_id("", 12, self._store.session_by_external_id)
        secret = secrets.token_urlsafe(18)  # 24 characters
        secret_hash = hashlib.sha256(secret.encode()).hexdigest()
        session_id = self._store.insert_session(
            external_id=external_id,
            secret_hash=secret_hash,
            workspace_id=workspace.id,
            provides=command.provides,
            accepts=command.accepts,
            created_at=self._now,
        )
        self._sessions[external_id] = LiveSession(
            id=session_id,
            external_id=external_id,
            secret_hash=secret_hash,
            workspace_id=workspace.id,
            provides=command.provides,
            accepts=command.accepts,
            activated=False,
        )
        self._effects.append(
            effects.ArmTimer(key=("session", external_id), at=self._now + ACTIVATION_TIMEOUT_MS)
        )
        self._reply({"sessionId": f"{external_id}.{secret}"})

    def _connect_session(self, command: commands.ConnectSession) -> None:
        token = command.token or ""
        external_id = token.partition(".")[0]
        session = self._sessions.get(external_id)
        if session is None or not self.session_token_valid(token):
            return self._reject("session_invalid")
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None or workspace.id != session.workspace_id:
            return self._reject("workspace_mismatch")
        if not session.activated:
            session.activated = True
            self._store.activate_session(session.id, self._now)
        session.connected = True
        self._effects.append(effects.DisarmTimer(key=("session", external_id)))
        held = [self._store.execution(e).external_id for e in sorted(session.held)]
        self._reply([0, external_id, held])
        self._publish("sessions", command.workspace_id)
        self._tick()

    def _disconnect_session(self, command: commands.DisconnectSession) -> None:
        session = self._sessions.get(command.session_id)
        if session is None or not session.connected:
            return
        session.connected = False
        self._streams.drop_session(session.external_id)
        self._effects.append(
            effects.ArmTimer(
                key=("session", session.external_id), at=self._now + RECONNECTION_TIMEOUT_MS
            )
        )
        self._publish("sessions", self._store.workspace_external_id(session.workspace_id))

    def _remove_session(self, external_id: str, *, reason: str) -> None:
        """End a session for good: close it, forget its waits, abandon what it held."""
        session = self._sessions.pop(external_id, None)
        if session is None:
            return
        self._store.expire_session(session.id, self._now)
        self._streams.drop_session(external_id)
        for key in [k for k in self._waits if k[0] == external_id]:
            self._drop_wait(key)
        for execution_id in sorted(session.held):
            if self._store.completion(execution_id) is None:
                self._fail(execution_id, model.Completion.ABANDONED)
        self._effects.append(
            effects.CloseSession(session_id=external_id, reason=reason, forget=True)
        )
        self._publish("sessions", self._store.workspace_external_id(session.workspace_id))
        self._tick_requested = True

    def _declare_targets(self, command: commands.DeclareTargets) -> None:
        session = self._sessions.get(command.session_id)
        if session is None:
            return
        session.targets = {}
        for module, kinds in command.targets.items():
            for kind, names in kinds.items():
                for name in names:
                    session.targets.setdefault((module, name), set()).add(
                        model.TargetType.parse(kind)
                    )
        session.concurrency = max(command.concurrency, 0)
        self._publish("sessions", self._store.workspace_external_id(session.workspace_id))
        self._tick()

    def _drain_session(self, command: commands.DrainSession) -> None:
        session = self._sessions.get(command.session_id)
        if session is not None:
            session.draining = True
            self._publish("sessions", self._store.workspace_external_id(session.workspace_id))

    def _record_heartbeats(self, command: commands.RecordHeartbeats) -> None:
        session = self._sessions.get(command.session_id)
        if session is None:
            return
        reported: set[int] = set()
        for external_id in command.statuses:
            execution = self._store.execution_by_external_id(external_id)
            if execution is None:
                continue
            if execution.id in session.held:
                reported.add(execution.id)
            elif self._store.completion(execution.id) is not None:
                self._command(session.external_id, "abort", [external_id])
        if not reported:
            return  # an empty heartbeat reconciles nothing
        for execution_id in session.executing - reported:
            if self._store.completion(execution_id) is None:
                session.executing.discard(execution_id)
                self._fail(execution_id, model.Completion.ABANDONED)
        session.starting -= reported
        session.executing = reported  # exactly what the worker runs (server-api.md §9.6)
        self._publish("sessions", self._store.workspace_external_id(session.workspace_id))
        self._tick()

    # --- Outcomes ---------------------------------------------------------------------------------

    def _record_result(self, command: commands.RecordResult) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is None:
            return
        _, execution = held
        if self._store.result(execution.id) is not None or self._store.completion(execution.id):
            return  # results are idempotent: the first one stands
        options = self._store.step_options(execution.step_id)
        if options.recurrent and lifecycle.is_null(command.value):
            # A recurrent step's null is not its result: the next iteration is.
            successor = self._successor(execution, options.delay)
            self._complete(execution.id, model.Completion.RECURRED, successor)
            return
        self._store.insert_result(execution.id, value=command.value, created_at=self._now)
        self._publish_run(execution)
        self._resolved(execution.id)

    def _record_error(self, command: commands.RecordError) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is None:
            return
        _, execution = held
        if self._store.result(execution.id) is not None or self._store.completion(execution.id):
            return
        self._store.insert_result(
            execution.id,
            error=command.error,
            retryable=command.retryable,
            created_at=self._now,
        )
        self._publish_run(execution)

    def _record_timeout(self, command: commands.RecordTimeout) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is None:
            return
        _, execution = held
        if self._store.completion(execution.id) is not None:
            return
        result = self._store.result(execution.id)
        if result is not None and result.value is not None:
            # Draining: the value stands; its open streams time out and the completion
            # (stream_timeout) follows at termination.
            for stream_id in self._store.open_streams_registered_by(execution.id):
                self._close_stream_now(
                    stream_id, streams.Reason.TIMEOUT, "timeout", None, execution.id
                )
            return
        self._fail(execution.id, model.Completion.TIMEOUT)
        self._cancel_descendants(execution.id, execution.workspace_id)
        self._tick()

    def _record_termination(self, command: commands.RecordTermination) -> None:
        session = self._sessions.get(command.session_id)
        if session is None:
            return
        for external_id in command.execution_ids:
            execution = self._store.execution_by_external_id(external_id)
            if execution is None or execution.id not in session.held:
                continue
            session.starting.discard(execution.id)
            session.executing.discard(execution.id)
            self._streams.drop_consumer(execution.id)
            if self._store.completion(execution.id) is not None:
                continue
            result = self._store.result(execution.id)
            if result is not None and result.value is not None:
                closes = self._store.own_stream_closures(execution.id)
                if streams.Reason.ERRORED in closes:
                    self._fail(execution.id, model.Completion.STREAM_ERRORED)
                elif streams.Reason.TIMEOUT in closes:
                    self._complete(execution.id, model.Completion.STREAM_TIMEOUT, None)
                else:
                    self._complete(execution.id, model.Completion.SUCCEEDED, None)
            elif result is not None:
                self._fail(execution.id, model.Completion.ERRORED, retryable=result.retryable)
            else:
                self._fail(execution.id, model.Completion.CRASHED)
        self._publish("sessions", self._store.workspace_external_id(session.workspace_id))
        self._tick()

    def _suspend(self, command: commands.Suspend) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is None:
            return
        _, execution = held
        if self._store.completion(execution.id) is not None:
            return
        handles: list[Handle] = []
        if command.stream_wait is not None:
            stream = self._store.stream_by_external_id(command.stream_wait[0])
            if stream is not None:
                if self._store.insert_stream_dependency(execution.id, stream.id, self._now):
                    self._publish_run(execution)
                handles.append(("stream", stream.id, command.stream_wait[1]))
        self._suspend_execution(execution, command.execute_after, handles)
        self._tick()

    def _suspend_execution(
        self, execution: model.Execution, execute_after: int | None, handles: list[Handle]
    ) -> None:
        """Complete as suspended; the successor waits for any still-pending handle."""
        successor = self._store.insert_execution(
            step_id=execution.step_id,
            attempt=self._store.next_attempt(execution.step_id),
            workspace_id=execution.workspace_id,
            execute_after=execute_after,
            created_at=self._now,
            created_by=None,
        )
        demand: list[int] = []
        for handle in handles:
            if handle[0] == "execution":
                pending = self._resolve(handle[1]).pending
                if pending is not None:
                    self._store.insert_dependency(successor, pending, self._now)
            elif handle[0] == "input":
                if self._store.input_response(handle[1]) is None:
                    self._store.insert_input_dependency(successor, handle[1], self._now)
            elif not self._stream_reached(handle[1], handle[2]):
                self._store.insert_stream_wait(successor, handle[1], handle[2], self._now)
                demand.append(handle[1])
        self._complete(execution.id, model.Completion.SUSPENDED, successor)
        self._abort(execution)
        for stream_id in demand:
            self._streams.refresh_demand(stream_id)

    def _abort(self, execution: model.Execution) -> None:
        """Tell the session running it to stop, and unblock its pending selects."""
        for key in [k for k, w in self._waits.items() if w.execution_id == execution.id]:
            wait = self._waits[key]
            self._drop_wait(key)
            self._send(wait.session_id, [2, wait.request_id, None])
        session_id = self._session_of(execution.id)
        if session_id is not None:
            self._command(session_id, "abort", [execution.external_id])

    def _successor(self, execution: model.Execution, delay: int) -> int:
        return self._store.insert_execution(
            step_id=execution.step_id,
            attempt=self._store.next_attempt(execution.step_id),
            workspace_id=execution.workspace_id,
            execute_after=self._now + delay if delay > 0 else None,
            created_at=self._now,
            created_by=None,
        )

    def _fail(
        self, execution_id: int, kind: model.Completion, *, retryable: bool | None = None
    ) -> None:
        """Record a failure completion, creating a retry attempt when the policy allows."""
        execution = self._store.execution(execution_id)
        options = self._store.step_options(execution.step_id)
        delay = lifecycle.retry_delay(
            options.retries,
            retryable=retryable is not False,
            previous=self._store.previous_outcomes(execution.step_id, execution.id),
            rng=self._rng,
        )
        successor = self._successor(execution, delay) if delay is not None else None
        self._complete(execution_id, kind, successor)

    def _complete(
        self,
        execution_id: int,
        kind: model.Completion,
        successor: int | None,
        *,
        own_streams_only: bool = False,
    ) -> None:
        self._store.insert_completion(execution_id, kind, successor, self._now)
        execution = self._store.execution(execution_id)
        self._publish_run(execution)
        self._publish("modules", self._store.workspace_external_id(execution.workspace_id))
        self._streams.drop_consumer(execution_id)
        self._close_streams_on_completion(execution, kind, own_streams_only)
        for input_id in self._store.input_dependencies(execution_id):
            self._publish_input(self._store.input(input_id))  # it may no longer be awaited
        self._resolved(execution_id)

    def _close_streams_on_completion(
        self, execution: model.Execution, kind: model.Completion, own_only: bool
    ) -> None:
        if kind in streams.LIFECYCLE_LABELS:
            reason, label = streams.Reason.LIFECYCLE, streams.LIFECYCLE_LABELS[kind]
        elif kind in (
            model.Completion.SUCCEEDED,
            model.Completion.STREAM_ERRORED,
            model.Completion.STREAM_TIMEOUT,
        ):
            reason, label = streams.Reason.COMPLETE, "complete"
        else:
            return  # suspended: the streams stay open (paused) for the successor
        error = None
        if kind is model.Completion.ERRORED:
            result = self._store.result(execution.id)
            error = result.error if result is not None else None
        if own_only:
            open_streams = self._store.open_streams_registered_by(execution.id)
        else:
            open_streams = self._store.open_streams(execution.step_id, execution.workspace_id)
        for stream_id in open_streams:
            self._close_stream_now(stream_id, reason, label, error, execution.id)

    # --- Resolution and waiting ---------------------------------------------------------------------

    def _resolve(self, execution_id: int) -> Resolution:
        return lifecycle.resolve(self._store, execution_id)

    def _resolved(self, execution_id: int) -> None:
        """Something was recorded for this execution: re-check whoever waits on it."""
        self._wake(("execution", execution_id))

    def _wake(self, key: WaitKey) -> None:
        for wait_key in sorted(self._waiting_on.pop(key, set())):
            wait = self._waits.get(wait_key)
            if wait is None:
                continue
            # Dropped first so a cascade from cancel_remaining can't answer it twice; its
            # timer keeps running while the wait moves on to a successor (a hand-off).
            self._drop_wait(wait_key, disarm=False)
            if self._answer(wait):
                self._effects.append(effects.DisarmTimer(key=("select", *wait_key)))
            else:
                self._register_wait(wait_key, wait)
        self._tick_requested = True

    def _stream_reached(self, stream_id: int, sequence: int) -> bool:
        return (
            self._store.stream_head(stream_id) >= sequence
            or self._store.stream_closure(stream_id) is not None
        )

    def _outcome(self, handle: Handle) -> tuple[dict[str, Any] | None, WaitKey | None]:
        """A handle's select reply fields when it has resolved, else the key it waits under."""
        if handle[0] == "execution":
            resolution = self._resolve(handle[1])
            if resolution.pending is not None:
                return None, ("execution", resolution.pending)
            fields = lifecycle.select_fields(resolution)
            if "value" in fields:
                fields["value"] = self._expand(fields["value"])
            return fields, None
        if handle[0] == "input":
            status = inputs.select_status(self._store.input_response(handle[1]))
            return status, None if status is not None else ("input", handle[1])
        if self._stream_reached(handle[1], handle[2]):
            return {"status": "ok"}, None
        return None, ("stream", handle[1])

    def _answer(self, wait: SelectWait) -> bool:
        """Reply to a select if one of its handles resolved; returns whether it did."""
        for index, handle in enumerate(wait.handles):
            fields, _ = self._outcome(handle)
            if fields is None:
                continue
            self._send(wait.session_id, [2, wait.request_id, {"winner": index, **fields}])
            if wait.cancel_remaining:
                for other in wait.handles:
                    if other != handle and other[0] == "execution":
                        self._cancel(lifecycle.follow_spawns(self._store, other[1]), None)
            return True
        return False

    def _register_wait(self, key: WaitKey, wait: SelectWait) -> None:
        self._waits[key] = wait
        for handle in wait.handles:
            _, pending = self._outcome(handle)
            if pending is not None:
                self._waiting_on.setdefault(pending, set()).add(key)

    def _drop_wait(self, key: WaitKey, *, disarm: bool = True) -> None:
        wait = self._waits.pop(key, None)
        if wait is None:
            return
        for keys in self._waiting_on.values():
            keys.discard(key)
        if disarm:
            self._effects.append(effects.DisarmTimer(key=("select", *key)))

    def _handles(self, request: list[dict[str, Any]]) -> list[Handle] | str:
        """Select/cancel handles as the core tracks them, or the error to reply with."""
        handles: list[Handle] = []
        for handle in request:
            kind, identifier = handle.get("type"), str(handle.get("id", ""))
            if kind == "execution":
                execution = self._store.execution_by_external_id(identifier)
                if execution is None:
                    return "not_found"
                handles.append(("execution", execution.id))
            elif kind == "input":
                row = self._store.input_by_external_id(identifier)
                if row is None:
                    return "input_not_found"
                handles.append(("input", row.id))
            elif kind == "stream":
                stream = self._store.stream_by_external_id(identifier)
                if stream is None:
                    return "not_found"
                handles.append(("stream", stream.id, int(handle.get("sequence") or 0)))
            else:
                return "invalid_handle"
        return handles

    def _waits_on_caller(self, caller: int, handles: list[Handle]) -> bool:
        """Whether waiting on these handles would wait, directly or not, on the caller itself."""
        frontier = [
            pending
            for handle in handles
            if handle[0] == "execution"
            for pending in [self._resolve(handle[1]).pending]
            if pending is not None
        ]
        seen: set[int] = set()
        while frontier:
            current = frontier.pop()
            if current == caller:
                return True
            if current in seen:
                continue
            seen.add(current)
            waited: list[int] = [
                h[1]
                for wait in self._waits.values()
                if wait.execution_id == current
                for h in wait.handles
                if h[0] == "execution"
            ]
            if self._store.assigned_session(current) is None:
                waited += self._store.dependencies(current)
            for execution_id in waited:
                pending = self._resolve(execution_id).pending
                if pending is not None:
                    frontier.append(pending)
        return False

    def _select(self, command: commands.Select) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is None:
            return
        _, caller = held
        if self._store.completion(caller.id) is not None:
            # Already suspended, cancelled, ...: it is being aborted, so it neither waits
            # nor suspends again (that would start a second live attempt of its step).
            return self._send(command.session_id, [2, command.request_id, None])
        handles = self._handles(command.handles)
        if isinstance(handles, str):
            return self._send(command.session_id, [3, command.request_id, handles])
        if self._waits_on_caller(caller.id, handles):
            return self._send(command.session_id, [3, command.request_id, "wait_cycle"])
        for handle in handles:
            if handle[0] == "execution":
                recorded = self._store.insert_dependency(caller.id, handle[1], self._now)
            elif handle[0] == "input":
                recorded = self._store.insert_input_dependency(caller.id, handle[1], self._now)
                if recorded:
                    self._publish_input(self._store.input(handle[1]))
            else:
                recorded = self._store.insert_stream_dependency(caller.id, handle[1], self._now)
            if recorded:
                self._publish_run(caller)
        wait = SelectWait(
            session_id=command.session_id,
            request_id=command.request_id,
            execution_id=caller.id,
            handles=handles,
            suspend=command.suspend,
            cancel_remaining=command.cancel_remaining,
        )
        if self._answer(wait):
            return
        if command.timeout_ms == 0:
            self._send(command.session_id, [2, command.request_id, None])
            if command.suspend:
                self._suspend_execution(caller, None, handles)
                self._tick()
            return
        key = (command.session_id, command.request_id)
        self._register_wait(key, wait)
        if command.timeout_ms is not None:
            self._effects.append(
                effects.ArmTimer(key=("select", *key), at=self._now + command.timeout_ms)
            )

    def _select_expired(self, session_id: str, request_id: int) -> None:
        wait = self._waits.get((session_id, request_id))
        if wait is None:
            return
        self._drop_wait((session_id, request_id))
        self._send(session_id, [2, request_id, None])
        if wait.suspend and self._store.completion(wait.execution_id) is None:
            self._suspend_execution(self._store.execution(wait.execution_id), None, wait.handles)
            self._tick()

    # --- Cancellation ---------------------------------------------------------------------------

    def _cancel(
        self, execution_id: int, workspace_id: int | None, *, own_streams_only: bool = False
    ) -> bool:
        """Cancel a live execution and its live descendants (in ``workspace_id``).

        Returns whether anything was cancelled.
        """
        execution = self._store.execution(execution_id)
        cancelled = False
        if self._store.completion(execution_id) is None:
            self._complete(
                execution_id,
                model.Completion.CANCELLED,
                None,
                own_streams_only=own_streams_only,
            )
            self._abort(execution)
            cancelled = True
        return self._cancel_descendants(execution_id, workspace_id or execution.workspace_id) or (
            cancelled
        )

    def _cancel_descendants(self, execution_id: int, workspace_id: int) -> bool:
        cancelled = False
        for child in self._store.descendant_candidates(execution_id):
            if self._store.execution(child).workspace_id == workspace_id:
                cancelled = self._cancel(child, workspace_id) or cancelled
        return cancelled

    def _cancel_execution(self, command: commands.CancelExecution) -> None:
        workspace = self._workspace_row(command.workspace_id)
        execution = self._store.execution_by_external_id(command.execution_id)
        if workspace is None or execution is None:
            return self._reject("not_found", status=404)
        target = lifecycle.follow_spawns(self._store, execution.id)
        if not self._cancel(target, workspace.id):
            # Nothing was live: say so rather than pretend (the worker's cancel is silent).
            return self._reject("already_completed", status=409)
        self._tick()
        self._reply({})

    def _cancel_handles(self, command: commands.CancelHandles) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is None:
            return
        _, caller = held
        handles: list[Handle] = []
        for requested in command.handles:
            if requested.get("type") not in ("execution", "input"):
                return self._send(command.session_id, [3, command.request_id, "invalid_handle"])
            resolved = self._handles([requested])
            if not isinstance(resolved, str):
                handles += resolved  # unknown handles are skipped
        for handle in handles:
            if handle[0] == "execution":
                self._cancel(lifecycle.follow_spawns(self._store, handle[1]), caller.workspace_id)
            elif self._store.input_response(handle[1]) is None:
                self._store.insert_input_response(
                    handle[1], inputs.Response.CANCELLED, None, self._now, None
                )
                self._input_answered(self._store.input(handle[1]))
        self._send(command.session_id, [2, command.request_id, None])
        self._tick()

    def _rerun_step(self, command: commands.RerunStep) -> None:
        parsed = model.parse_step_id(command.step_id)
        if parsed is None:
            return self._reject("bad_request", details={"stepId": "invalid"})
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        step = self._store.step_by_number(*parsed)
        if step is None:
            return self._reject("not_found", status=404)
        base = self._store.base_execution(step)
        if base is None or base.workspace_id not in self._store.workspace_lineage(workspace.id):
            return self._reject("not_found", status=404)
        # One live attempt per step per workspace. Cancelling a suspension's pending
        # successor closes only its own streams, so paused streams carry on.
        for live in self._store.live_executions_of_step(step):
            if self._store.execution(live).workspace_id == workspace.id:
                self._cancel(live, workspace.id, own_streams_only=True)
        attempt = self._store.next_attempt(step)
        execution_id = self._store.insert_execution(
            step_id=step,
            attempt=attempt,
            workspace_id=workspace.id,
            execute_after=None,
            created_at=self._now,
            created_by=command.principal,
        )
        execution = self._store.execution(execution_id)
        self._publish_run(execution)
        self._publish("modules", command.workspace_id)
        if execution.step_number == 1:
            self._publish("workflow", command.workspace_id, execution.module, execution.target)
        self._tick()
        self._reply({"executionId": execution.external_id, "attempt": attempt})

    # --- Inputs -------------------------------------------------------------------------------

    def _publish_input(self, row: ports.InputRow) -> None:
        """Topics showing this input: its own, the inputs listing and runs depending on it."""
        self._publish("input", row.external_id)
        executions = {self._store.execution(e) for e in self._store.input_dependants(row.id)}
        workspaces = {row.workspace_id} | {e.workspace_id for e in executions}
        for workspace_id in workspaces:
            self._publish("inputs", self._store.workspace_external_id(workspace_id))
        run_external_id = row.external_id.partition("/")[0]
        self._publish("run", self._store.workspace_external_id(row.workspace_id), run_external_id)
        for execution in executions:
            self._publish_run(execution)

    def _input_answered(self, row: ports.InputRow) -> None:
        self._publish_input(row)
        self._wake(("input", row.id))

    def _submit_input(self, command: commands.SubmitInput) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is None:
            return
        _, execution = held
        try:
            inputs.check_request(command.schema, command.initial, command.has_initial)
        except inputs.InputError as e:
            return self._send(command.session_id, [3, command.request_id, str(e)])
        prompt = inputs.Prompt(
            template=command.template,
            placeholders=command.placeholders,
            schema=command.schema,
            requires=command.requires,
        )
        row = None
        if command.key is not None:
            row = self._store.input_by_key(
                execution.run_id, command.key, self._store.workspace_chain(execution.workspace_id)
            )
            if row is not None and row.prompt != prompt:
                return self._send(command.session_id, [3, command.request_id, "input_mismatch"])
        if row is None:
            row = self._store.insert_input(
                run_id=execution.run_id,
                workspace_id=execution.workspace_id,
                key=command.key,
                prompt=prompt,
                title=command.title,
                actions=command.actions,
                initial=command.initial,
                has_initial=command.has_initial,
                created_at=self._now,
            )
        self._store.insert_execution_input(execution.id, row.id, self._now)
        self._publish_run(execution)
        self._publish_input(row)
        self._send(command.session_id, [2, command.request_id, row.external_id])

    def _respond_input(self, command: commands.RespondInput) -> None:
        row = self._store.input_by_external_id(command.input_id)
        if row is None:
            return self._reject("not_found", status=404)
        failure = inputs.validate_response(row.prompt.schema, command.value)
        if failure is not None:
            return self._reject("validation_failed", status=422, details=failure)
        self._answer_input(row, inputs.Response.VALUE, command.value, command.principal)

    def _dismiss_input(self, command: commands.DismissInput) -> None:
        row = self._store.input_by_external_id(command.input_id)
        if row is None:
            return self._reject("not_found", status=404)
        self._answer_input(row, inputs.Response.DISMISSED, None, command.principal)

    def _answer_input(
        self,
        row: ports.InputRow,
        kind: inputs.Response,
        value: Any,
        principal: commands.Principal,
    ) -> None:
        if self._store.input_response(row.id) is not None:
            return self._reject("already_responded", status=409)
        self._store.insert_input_response(row.id, kind, value, self._now, principal)
        self._input_answered(row)
        self._reply({})

    # --- Assets ----------------------------------------------------------------------------------

    def _put_asset(self, command: commands.PutAsset) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is None:
            return
        _, execution = held
        try:
            entries = assets.normalise(command.entries)
        except assets.AssetError as e:
            return self._send(command.session_id, [3, command.request_id, f"invalid: {e}"])
        content_hash = assets.content_hash(command.name, entries)
        asset = self._store.asset_by_hash(content_hash)
        if asset is None:
            external_id = self._unique_id("A", 2, self._store.asset_by_external_id)
            asset = self._store.insert_asset(
                external_id, content_hash, command.name, entries, self._now
            )
        if self._store.insert_execution_asset(execution.id, asset.id, self._now):
            self._publish_run(execution)
        self._send(command.session_id, [2, command.request_id, asset.reference()[1:]])

    def _get_asset(self, command: commands.GetAsset) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is None:
            return
        _, execution = held
        asset = self._store.asset_by_external_id(command.asset_id)
        if asset is None:
            return self._send(command.session_id, [3, command.request_id, "not_found"])
        if self._store.insert_asset_dependency(execution.id, asset.id, self._now):
            self._publish_run(execution)
        self._send(command.session_id, [2, command.request_id, asset.entries])

    # --- Checkpoints --------------------------------------------------------------------------------

    def _update_checkpoints(self, command: commands.UpdateCheckpoints) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is None:
            return
        _, execution = held
        if self._store.completion(execution.id) is not None:
            # A superseded attempt can never affect its successor.
            if command.request_id is not None:
                self._send(command.session_id, [3, command.request_id, "execution_completed"])
            return
        checkpoints.apply(self._store, execution, command.sets, command.resets, self._now)
        self._publish_run(execution)
        if command.request_id is not None:
            self._send(command.session_id, [2, command.request_id, None])

    # --- Streams ------------------------------------------------------------------------------

    def _close_stream_now(
        self,
        stream_id: int,
        reason: streams.Reason,
        label: str,
        error: model.ErrorInfo | None,
        execution_id: int | None,
    ) -> bool:
        if not self._streams.close(stream_id, reason, label, error, execution_id, self._now):
            return False
        self._stream_changed(self._store.stream(stream_id), run=True)
        return True

    def _stream_changed(self, stream: ports.StreamRow, *, run: bool) -> None:
        self._publish("stream", stream.external_id)
        if run:
            run_external_id = stream.external_id.partition(":")[0]
            self._publish(
                "run", self._store.workspace_external_id(stream.workspace_id), run_external_id
            )
        self._wake(("stream", stream.id))

    def _register_stream(self, command: commands.RegisterStream) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is None:
            return
        _, execution = held
        if self._store.completion(execution.id) is not None:
            return self._send(command.session_id, [3, command.request_id, "execution_completed"])
        stream = self._streams.register(
            execution, command.position, command.buffer, command.timeout_ms, self._now
        )
        self._publish_run(execution)
        self._publish("stream", stream.external_id)
        self._send(
            command.session_id,
            [
                2,
                command.request_id,
                {
                    "id": stream.external_id,
                    "index": stream.index,
                    "head": self._store.stream_head(stream.id),
                },
            ],
        )

    def _append_stream(self, command: commands.AppendStream) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is None:
            return
        _, execution = held
        if self._store.completion(execution.id) is not None:
            return
        stream = self._streams.append(
            execution, command.index, command.sequence, command.value, self._now
        )
        if stream is not None:
            self._stream_changed(stream, run=False)

    def _close_stream(self, command: commands.CloseStream) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is None:
            return
        _, execution = held
        closed = False
        stream = self._store.stream_by_step(execution.step_id, command.index)
        if (
            stream is not None
            and self._store.completion(execution.id) is None
            and self._store.stream_registered_by(stream.id, execution.id)
        ):
            if command.timeout:
                # Declined while every consumer is suspended waiting on the stream.
                if not self._streams.paused(stream.id):
                    closed = self._close_stream_now(
                        stream.id, streams.Reason.TIMEOUT, "timeout", None, execution.id
                    )
            elif command.error is not None:
                closed = self._close_stream_now(
                    stream.id, streams.Reason.ERRORED, "errored", command.error, execution.id
                )
            else:
                closed = self._close_stream_now(
                    stream.id, streams.Reason.COMPLETE, "complete", None, execution.id
                )
        if command.request_id is not None:
            self._send(command.session_id, [2, command.request_id, closed])

    def _subscribe_stream(self, command: commands.SubscribeStream) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is None:
            return
        _, consumer = held
        if self._store.completion(consumer.id) is not None:
            return
        stream = self._store.stream_by_external_id(command.stream_id)
        if stream is not None and self._store.insert_stream_dependency(
            consumer.id, stream.id, self._now
        ):
            self._publish_run(consumer)
        self._streams.subscribe(
            session_id=command.session_id,
            consumer=consumer,
            subscription_id=command.subscription_id,
            stream=stream,
            from_sequence=command.from_sequence,
            stride=command.stride,
            prefetch=command.prefetch,
            progress=command.progress,
        )

    def _ack_stream(self, command: commands.AckStream) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is not None:
            self._streams.ack(held[1].id, command.subscription_id, command.count, command.sequence)

    def _unsubscribe_stream(self, command: commands.UnsubscribeStream) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is not None:
            self._streams.unsubscribe(held[1].id, command.subscription_id)

    # --- Timers -------------------------------------------------------------------------------

    def _timer_fired(self, command: commands.TimerFired) -> None:
        kind, *rest = command.key
        if kind == "tick":
            self._tick()
        elif kind == "session":
            session = self._sessions.get(rest[0])
            if session is not None and not session.connected:
                self._remove_session(rest[0], reason="session_invalid")
        elif kind == "select":
            self._select_expired(rest[0], rest[1])

    # --- Scheduling -----------------------------------------------------------------------------

    _tick_requested = False

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

    def _spawn(self, execution: model.Execution) -> None:
        """A workflow called from an execution becomes a run of its own (a hand-off)."""
        options = self._store.step_options(execution.step_id)
        requires = model.merge_requires(
            self._store.run_requires(execution.run_id), options.requires
        )
        spawned_options = model.StepOptions(
            cache=options.cache, retries=options.retries, requires=requires
        )
        run_external_id = self._create_run(
            workspace_id=execution.workspace_id,
            module=execution.module,
            target=execution.target,
            arguments=self._store.step_arguments(execution.step_id),
            options=spawned_options,
            parent_execution_id=execution.id,
            idempotency_key=None,
            principal=None,
        )
        root = self._store.execution_by_external_id(f"{run_external_id}:1:1")
        assert root is not None
        self._complete(execution.id, model.Completion.SPAWNED, root.id)
        workspace = self._store.workspace_external_id(execution.workspace_id)
        self._publish("workflow", workspace, execution.module, execution.target)
