"""Commands: everything that can change a project's orchestration state, as plain data.

The shell turns HTTP requests, worker frames and fired timers into these and hands
them to ``Orchestrator.handle`` one at a time. Names are imperative.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pycoflux.orchestration import model

Principal = dict[str, str] | None


# --- Management API ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateWorkspace:
    name: str
    base_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterManifests:
    workspace_id: str
    manifests: dict[str, dict[str, dict[str, Any]]]  # module -> workflow -> definition


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveModule:
    workspace_id: str
    module: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitWorkflow:
    workspace_id: str
    module: str
    target: str
    arguments: list[model.Value]
    options: model.StepOptions
    idempotency_key: str | None = None
    principal: Principal = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelExecution:
    workspace_id: str
    execution_id: str
    principal: Principal = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RerunStep:
    workspace_id: str
    step_id: str
    principal: Principal = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateSession:
    workspace_id: str
    provides: model.TagSet = field(default_factory=dict)
    accepts: model.TagSet = field(default_factory=dict)


# --- Worker sessions ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectSession:
    """A worker opened a WebSocket with a session token."""

    token: str | None
    workspace_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DisconnectSession:
    session_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeclareTargets:
    session_id: str
    targets: dict[str, dict[str, list[str]]]  # module -> {"workflow": [...], "task": [...]}
    concurrency: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DrainSession:
    session_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordHeartbeats:
    session_id: str
    statuses: dict[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordResult:
    session_id: str
    execution_id: str
    value: model.Value


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordError:
    session_id: str
    execution_id: str
    error: model.ErrorInfo
    retryable: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordTimeout:
    session_id: str
    execution_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordTermination:
    session_id: str
    execution_ids: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Suspend:
    session_id: str
    execution_id: str
    execute_after: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterGroup:
    session_id: str
    execution_id: str
    group_id: int
    name: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitChild:
    session_id: str
    request_id: int
    parent_id: str
    module: str
    target: str
    type: model.TargetType
    arguments: list[model.Value]
    group_id: int | None
    options: model.StepOptions


@dataclass(frozen=True, slots=True, kw_only=True)
class Select:
    session_id: str
    request_id: int
    execution_id: str
    handles: list[dict[str, Any]]
    timeout_ms: int | None
    suspend: bool
    cancel_remaining: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelHandles:
    session_id: str
    request_id: int
    execution_id: str
    handles: list[dict[str, Any]]


# --- Time ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired:
    key: tuple[Any, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Start:
    """The project host started: rebuild in-memory state from the store."""


Command = (
    CreateWorkspace
    | RegisterManifests
    | ArchiveModule
    | SubmitWorkflow
    | CancelExecution
    | RerunStep
    | CreateSession
    | ConnectSession
    | DisconnectSession
    | DeclareTargets
    | DrainSession
    | RecordHeartbeats
    | RecordResult
    | RecordError
    | RecordTimeout
    | RecordTermination
    | Suspend
    | RegisterGroup
    | SubmitChild
    | Select
    | CancelHandles
    | TimerFired
    | Start
)
