"""Commands: everything that can change a project's orchestration state, as plain data.

The shell turns HTTP requests, worker frames and fired timers into these and hands
them to ``Orchestrator.handle`` one at a time. Names are imperative.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pycoflux.orchestration import model, pools

Principal = dict[str, str] | None


# --- Management API ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateWorkspace:
    name: str
    base_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateWorkspace:
    workspace_id: str
    name: str | None = None
    base_id: str | None = None
    set_base: bool = False  # base_id None with set_base clears the base


@dataclass(frozen=True, slots=True, kw_only=True)
class PauseWorkspace:
    workspace_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeWorkspace:
    workspace_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveWorkspace:
    workspace_id: str


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
class RespondInput:
    input_id: str
    value: Any
    principal: Principal = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DismissInput:
    input_id: str
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
    stream_wait: tuple[str, int] | None = None  # (stream id, sequence)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterGroup:
    session_id: str
    execution_id: str
    group_id: int
    name: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DefineMetric:
    session_id: str
    execution_id: str
    key: str
    definition: dict[str, Any]


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


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitInput:
    session_id: str
    request_id: int
    execution_id: str
    template: str
    placeholders: dict[str, model.Value]
    schema: str | None
    key: str | None
    title: str | None
    actions: Any
    initial: Any
    has_initial: bool
    requires: model.TagSet


@dataclass(frozen=True, slots=True, kw_only=True)
class PutAsset:
    session_id: str
    request_id: int
    execution_id: str
    name: str | None
    entries: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class GetAsset:
    session_id: str
    request_id: int
    execution_id: str
    asset_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateCheckpoints:
    session_id: str
    request_id: int | None
    execution_id: str
    sets: dict[str, model.Value]
    resets: list[str]


# --- Streams ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterStream:
    session_id: str
    request_id: int
    execution_id: str
    position: int
    buffer: int | None
    timeout_ms: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendStream:
    session_id: str
    execution_id: str
    index: int
    sequence: int
    value: model.Value


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseStream:
    session_id: str
    request_id: int | None
    execution_id: str
    index: int
    error: model.ErrorInfo | None
    timeout: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscribeStream:
    session_id: str
    subscription_id: int
    execution_id: str
    stream_id: str
    from_sequence: int
    stride: model.Stride | None
    prefetch: int
    progress: tuple[int, int, int] | None = None  # delivered, acked count, acked sequence


@dataclass(frozen=True, slots=True, kw_only=True)
class AckStream:
    session_id: str
    execution_id: str
    subscription_id: int
    count: int
    sequence: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UnsubscribeStream:
    session_id: str
    execution_id: str
    subscription_id: int


# --- Pools and launched workers ----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatePool:
    workspace_id: str
    name: str
    pool: pools.Pool
    principal: Principal = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdatePool:
    """Patch a pool (``pools.check_patch`` form); a ``None`` patch deletes it."""

    workspace_id: str
    name: str
    patch: dict[str, Any] | None
    principal: Principal = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplacePools:
    """Make the workspace's pool set exactly ``pools``, if it is still at ``expected``."""

    workspace_id: str
    pools: dict[str, pools.Pool]
    expected: str | None = None  # the etag the caller read, if it gave one
    principal: Principal = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DisablePool:
    workspace_id: str
    name: str
    principal: Principal = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EnablePool:
    workspace_id: str
    name: str
    principal: Principal = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StopWorker:
    workspace_id: str
    worker_id: str
    principal: Principal = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeWorker:
    workspace_id: str
    worker_id: str
    principal: Principal = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchSucceeded:
    """A launcher started the worker; ``data`` is its handle for polls and stops."""

    worker_id: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchFailed:
    worker_id: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerPolled:
    """What a poll found: still running, exited (``error`` None for a clean exit), or a
    poll that failed (``poll_error``)."""

    worker_id: str
    running: bool
    error: str | None = None
    logs: str | None = None
    poll_error: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStopped:
    worker_id: str
    error: str | None = None


# --- Time ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired:
    key: tuple[Any, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Start:
    """The project host started: rebuild in-memory state from the store."""


Command = (
    CreateWorkspace
    | UpdateWorkspace
    | PauseWorkspace
    | ResumeWorkspace
    | ArchiveWorkspace
    | RespondInput
    | DismissInput
    | SubmitInput
    | PutAsset
    | GetAsset
    | UpdateCheckpoints
    | RegisterStream
    | AppendStream
    | CloseStream
    | SubscribeStream
    | AckStream
    | UnsubscribeStream
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
    | DefineMetric
    | SubmitChild
    | Select
    | CancelHandles
    | CreatePool
    | UpdatePool
    | ReplacePools
    | DisablePool
    | EnablePool
    | StopWorker
    | ResumeWorker
    | LaunchSucceeded
    | LaunchFailed
    | WorkerPolled
    | WorkerStopped
    | TimerFired
    | Start
)
