"""Worker sessions: creation, connection, loss and expiry, targets and heartbeats
(``semantics.md`` §2.15, §5.2).

A session survives disconnects for the reconnection timeout; it holds the executions
assigned to it until the worker reports them terminated, and anything it still holds
when it expires is abandoned.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

from pycoflux.orchestration import commands, effects, model
from pycoflux.orchestration.handlers.base import Base

ACTIVATION_TIMEOUT_MS = 600_000
RECONNECTION_TIMEOUT_MS = 30_000


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
    # A pool-launched worker's session: its pool, the worker's state, and whether it is
    # withheld from new work (the worker is not active, or its pool is disabled).
    pool_name: str | None = None
    worker_state: str | None = None
    withheld: bool = False

    @property
    def held(self) -> set[int]:
        return self.starting | self.executing

    @property
    def full(self) -> bool:
        """No room for new work: at its concurrency, or withheld."""
        if self.withheld:
            return True
        return self.concurrency > 0 and len(self.starting) + len(self.executing) >= self.concurrency


class Sessions(Base):
    """The sessions of workers and what they hold."""

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
        self._serving_index = None
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
        self._session_removed(session)
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
        self._serving_index = None
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
