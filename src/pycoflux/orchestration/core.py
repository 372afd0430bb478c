"""The per-project orchestration core: commands in, effects out, time as an input.

Theory of operation. ``Orchestrator.handle`` applies one command inside the caller's
transaction on the project's store and returns the effects the shell must perform
(frames to workers, replies, timers, topic notifications). It never awaits, never
reads a clock and never touches a socket, so the server, tests and replays drive it
the same way.

Durable state (workspaces, runs, steps, executions, results, completions, sessions)
lives in the store. Live state that only matters while the project is up (which
sessions are connected, what they declared, which executions each one holds, which
select requests are waiting) lives here and is rebuilt by ``Start``: sessions are
reloaded disconnected with a fresh expiry, and the executions assigned to them are
held again so that a reconnecting worker can deliver what it buffered.

An execution's outcome is split in two records: a *result* (the value or error the
worker reported) and a *completion* (the terminal marker). Waiters resolve on a
value as soon as it is recorded; errors only count once the retry decision is made
at termination, so a retried failure is never seen by a consumer.
"""

from __future__ import annotations

import hashlib
import random
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pycoflux.orchestration import commands, effects, lifecycle, model, ports
from pycoflux.orchestration.lifecycle import Resolution

ACTIVATION_TIMEOUT_MS = 600_000
RECONNECTION_TIMEOUT_MS = 30_000
IDEMPOTENCY_WINDOW_MS = 86_400_000

WORKSPACE_NAME = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")


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
    handles: list[int]  # execution row ids, in the caller's order
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
        self._waits: dict[tuple[str, int], SelectWait] = {}
        self._waiting_on: dict[int, set[tuple[str, int]]] = {}
        self._effects: list[effects.Effect] = []
        self._topics: set[tuple[str, ...]] = set()
        self._now = 0
        self._handlers: dict[type[Any], Callable[[Any], None]] = {
            commands.Start: self._start,
            commands.CreateWorkspace: self._create_workspace,
            commands.RegisterManifests: self._register_manifests,
            commands.ArchiveModule: self._archive_module,
            commands.SubmitWorkflow: self._submit_workflow,
            commands.CancelExecution: self._cancel_execution,
            commands.RerunStep: self._rerun_step,
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
            commands.SubmitChild: self._submit_child,
            commands.Select: self._select,
            commands.CancelHandles: self._cancel_handles,
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

    def _active_workspace(self, external_id: str) -> model.WorkspaceState | None:
        workspace = self._store.workspace_by_external_id(external_id)
        if workspace is None or workspace.state is model.WorkspaceState.ARCHIVED:
            return None
        return workspace.state

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

    def _publish_run(self, execution: model.Execution) -> None:
        workspace = self._store.workspace_external_id(execution.workspace_id)
        self._publish("run", workspace, execution.run_external_id)
        self._publish("queue", workspace)

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

    def _unique_id(self, prefix: str, length: int, lookup: Callable[[str], object]) -> str:
        while True:
            candidate = model.random_id(prefix, length)
            if lookup(candidate) is None:
                return candidate
            length += 1

    def _register_manifests(self, command: commands.RegisterManifests) -> None:
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        for module, workflows in command.manifests.items():
            previous = self._store.manifest_targets(workspace.id, module)
            self._store.replace_manifest(workspace.id, module, workflows, self._now)
            for target in set(previous) | set(workflows):
                self._publish("workflow", command.workspace_id, module, target)
        self._publish("manifests", command.workspace_id)
        self._publish("modules", command.workspace_id)
        self._reply()

    def _archive_module(self, command: commands.ArchiveModule) -> None:
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        for target in self._store.manifest_targets(workspace.id, command.module):
            self._publish("workflow", command.workspace_id, command.module, target)
        self._store.replace_manifest(workspace.id, command.module, {}, self._now)
        self._publish("manifests", command.workspace_id)
        self._publish("modules", command.workspace_id)
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
        step_id = self._store.insert_step(
            run_id=run_id,
            number=1,
            parent_execution_id=None,
            module=module,
            target=target,
            type=model.TargetType.WORKFLOW,
            options=step_options,
            arguments=arguments,
            created_at=self._now,
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

    def _submit_child(self, command: commands.SubmitChild) -> None:
        held = self._held_by(command.session_id, command.parent_id)
        if held is None:
            return
        _, parent = held
        number = self._store.next_step_number(parent.run_id)
        step_id = self._store.insert_step(
            run_id=parent.run_id,
            number=number,
            parent_execution_id=parent.id,
            module=command.module,
            target=command.target,
            type=command.type,
            options=command.options,
            arguments=command.arguments,
            created_at=self._now,
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
        self._effects.append(
            effects.ArmTimer(
                key=("session", session.external_id), at=self._now + RECONNECTION_TIMEOUT_MS
            )
        )
        self._publish("sessions", self._store.workspace_external_id(session.workspace_id))

    def _expire_session(self, external_id: str) -> None:
        session = self._sessions.pop(external_id, None)
        if session is None:
            return
        self._store.expire_session(session.id, self._now)
        for key in [k for k in self._waits if k[0] == external_id]:
            self._drop_wait(key)
        for execution_id in sorted(session.held):
            if self._store.completion(execution_id) is None:
                self._fail(execution_id, model.Completion.ABANDONED)
        self._effects.append(
            effects.CloseSession(session_id=external_id, reason="session_invalid", forget=True)
        )
        self._publish("sessions", self._store.workspace_external_id(session.workspace_id))
        self._tick()

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
                self._send(session.external_id, [1, {"command": "abort", "params": [external_id]}])
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
        self._store.insert_result(execution.id, value=command.value, created_at=self._now)
        options = self._store.step_options(execution.step_id)
        if options.recurrent and lifecycle.is_null(command.value):
            successor = self._successor(execution, options.delay)
            self._complete(execution.id, model.Completion.RECURRED, successor)
        else:
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
        if self._store.completion(execution.id) is None:
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
            if self._store.completion(execution.id) is not None:
                continue
            result = self._store.result(execution.id)
            if result is not None and result.value is not None:
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
        if self._store.completion(execution.id) is None:
            self._suspend_execution(execution, command.execute_after, [])
            self._tick()

    def _suspend_execution(
        self, execution: model.Execution, execute_after: int | None, dependencies: list[int]
    ) -> None:
        successor = self._store.insert_execution(
            step_id=execution.step_id,
            attempt=self._store.next_attempt(execution.step_id),
            workspace_id=execution.workspace_id,
            execute_after=execute_after,
            created_at=self._now,
            created_by=None,
        )
        for dependency in dependencies:
            self._store.insert_dependency(successor, dependency, self._now)
        self._complete(execution.id, model.Completion.SUSPENDED, successor)
        self._abort(execution)

    def _abort(self, execution: model.Execution) -> None:
        """Tell the session running it to stop, and unblock its pending selects."""
        for key in [k for k, w in self._waits.items() if w.execution_id == execution.id]:
            wait = self._waits[key]
            self._drop_wait(key)
            self._send(wait.session_id, [2, wait.request_id, None])
        session_id = self._store.assigned_session(execution.id)
        if session_id is None:
            return
        for session in self._sessions.values():
            if session.id == session_id and execution.id in session.held:
                self._send(
                    session.external_id,
                    [1, {"command": "abort", "params": [execution.external_id]}],
                )

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

    def _complete(self, execution_id: int, kind: model.Completion, successor: int | None) -> None:
        self._store.insert_completion(execution_id, kind, successor, self._now)
        execution = self._store.execution(execution_id)
        self._publish_run(execution)
        self._publish("modules", self._store.workspace_external_id(execution.workspace_id))
        self._resolved(execution_id)

    # --- Resolution and waiting ---------------------------------------------------------------------

    def _resolve(self, execution_id: int) -> Resolution:
        return lifecycle.resolve(self._store, execution_id)

    def _resolved(self, execution_id: int) -> None:
        """Something was recorded for this execution: re-check whoever waits on it."""
        for key in sorted(self._waiting_on.pop(execution_id, set())):
            wait = self._waits.get(key)
            if wait is None:
                continue
            # Dropped first so a cascade from cancel_remaining can't answer it twice; its
            # timer keeps running while the wait moves on to a successor (a hand-off).
            self._drop_wait(key, disarm=False)
            if self._answer(wait):
                self._effects.append(effects.DisarmTimer(key=("select", *key)))
            else:
                self._register_wait(key, wait)
        self._tick_requested = True

    def _answer(self, wait: SelectWait) -> bool:
        """Reply to a select if one of its handles resolved; returns whether it did."""
        for index, handle in enumerate(wait.handles):
            resolution = self._resolve(handle)
            if resolution.pending is None:
                self._send(
                    wait.session_id,
                    [2, wait.request_id, lifecycle.select_result(index, resolution)],
                )
                if wait.cancel_remaining:
                    for other in wait.handles:
                        if other != handle:
                            self._cancel(other, None)
                return True
        return False

    def _register_wait(self, key: tuple[str, int], wait: SelectWait) -> None:
        self._waits[key] = wait
        for handle in wait.handles:
            pending = self._resolve(handle).pending
            if pending is not None:
                self._waiting_on.setdefault(pending, set()).add(key)

    def _drop_wait(self, key: tuple[str, int], *, disarm: bool = True) -> None:
        wait = self._waits.pop(key, None)
        if wait is None:
            return
        for keys in self._waiting_on.values():
            keys.discard(key)
        if disarm:
            self._effects.append(effects.DisarmTimer(key=("select", *key)))

    def _select(self, command: commands.Select) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is None:
            return
        _, caller = held
        handles: list[int] = []
        for handle in command.handles:
            if handle.get("type") == "input":
                return self._send(command.session_id, [3, command.request_id, "input_not_found"])
            target = self._store.execution_by_external_id(str(handle.get("id", "")))
            if handle.get("type") != "execution" or target is None:
                return self._send(command.session_id, [3, command.request_id, "not_found"])
            handles.append(target.id)
            if self._store.insert_dependency(caller.id, target.id, self._now):
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
                self._suspend_pending(caller, handles)
            return
        key = (command.session_id, command.request_id)
        self._register_wait(key, wait)
        if command.timeout_ms is not None:
            self._effects.append(
                effects.ArmTimer(key=("select", *key), at=self._now + command.timeout_ms)
            )

    def _suspend_pending(self, caller: model.Execution, handles: Iterable[int]) -> None:
        pending = [p for p in (self._resolve(h).pending for h in handles) if p is not None]
        self._suspend_execution(caller, None, pending)
        self._tick()

    def _select_expired(self, session_id: str, request_id: int) -> None:
        wait = self._waits.get((session_id, request_id))
        if wait is None:
            return
        self._drop_wait((session_id, request_id))
        self._send(session_id, [2, request_id, None])
        if wait.suspend and self._store.completion(wait.execution_id) is None:
            self._suspend_pending(self._store.execution(wait.execution_id), wait.handles)

    # --- Cancellation ---------------------------------------------------------------------------

    def _cancel(self, execution_id: int, workspace_id: int | None) -> None:
        """Cancel a live execution and its live descendants (in ``workspace_id``)."""
        execution = self._store.execution(execution_id)
        if self._store.completion(execution_id) is None:
            self._complete(execution_id, model.Completion.CANCELLED, None)
            self._abort(execution)
        self._cancel_descendants(execution_id, workspace_id or execution.workspace_id)

    def _cancel_descendants(self, execution_id: int, workspace_id: int) -> None:
        for child in self._store.descendant_candidates(execution_id):
            if self._store.execution(child).workspace_id == workspace_id:
                self._cancel(child, workspace_id)

    def _cancel_execution(self, command: commands.CancelExecution) -> None:
        workspace = self._workspace_row(command.workspace_id)
        execution = self._store.execution_by_external_id(command.execution_id)
        if workspace is None or execution is None:
            return self._reject("not_found", status=404)
        target = lifecycle.follow_spawns(self._store, execution.id)
        self._cancel(target, workspace.id)
        self._tick()
        self._reply({})

    def _cancel_handles(self, command: commands.CancelHandles) -> None:
        held = self._held_by(command.session_id, command.execution_id)
        if held is None:
            return
        _, caller = held
        for handle in command.handles:
            if handle.get("type") != "execution":
                continue
            target = self._store.execution_by_external_id(str(handle.get("id", "")))
            if target is not None:
                self._cancel(lifecycle.follow_spawns(self._store, target.id), caller.workspace_id)
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
        for live in self._store.live_executions_of_step(step):
            if self._store.execution(live).workspace_id == workspace.id:
                self._cancel(live, workspace.id)
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
        self._tick()
        self._reply({"executionId": execution.external_id, "attempt": attempt})

    # --- Timers -------------------------------------------------------------------------------

    def _timer_fired(self, command: commands.TimerFired) -> None:
        kind, *rest = command.key
        if kind == "tick":
            self._tick()
        elif kind == "session":
            session = self._sessions.get(rest[0])
            if session is not None and not session.connected:
                self._expire_session(rest[0])
        elif kind == "select":
            self._select_expired(rest[0], rest[1])

    # --- Scheduling -----------------------------------------------------------------------------

    _tick_requested = False

    def _tick(self) -> None:
        """The scheduling pass: place every due, unblocked execution on an eligible session."""
        self._tick_requested = False
        self._effects.append(effects.DisarmTimer(key=("tick",)))
        next_at: int | None = None
        workspaces: dict[int, model.WorkspaceState] = {}
        for execution in self._store.queued_executions():
            if execution.workspace_id not in workspaces:
                workspaces[execution.workspace_id] = self._store.workspace_state(
                    execution.workspace_id
                )
            if workspaces[execution.workspace_id] is not model.WorkspaceState.ACTIVE:
                continue
            if execution.execute_after is not None and execution.execute_after > self._now:
                if next_at is None or execution.execute_after < next_at:
                    next_at = execution.execute_after
                continue
            if not self._ready(execution):
                continue
            if execution.type is model.TargetType.WORKFLOW and execution.parent_id is not None:
                self._spawn(execution)
                continue
            self._assign(execution)
        if next_at is not None:
            self._effects.append(effects.ArmTimer(key=("tick",), at=next_at))
        if self._tick_requested:
            self._tick()

    def _ready(self, execution: model.Execution) -> bool:
        dependencies = self._store.dependencies(execution.id)
        if dependencies and all(self._resolve(d).pending is not None for d in dependencies):
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
        arguments = [
            lifecycle.expand_references(self._store, value)
            for value in self._store.step_arguments(execution.step_id)
        ]
        self._send(
            session.external_id,
            [
                1,
                {
                    "command": "execute",
                    "params": [
                        execution.external_id,
                        execution.module,
                        execution.target,
                        arguments,
                        execution.run_external_id,
                        self._store.workspace_external_id(execution.workspace_id),
                        options.timeout,
                        options.streams,
                        {},
                    ],
                },
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
