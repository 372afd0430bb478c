"""The narrow port through which the core reads and writes a project's durable state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pycoflux.orchestration import assets, commands, inputs, model, pools, queue


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceRow:
    id: int
    external_id: str
    name: str
    base_id: int | None
    state: model.WorkspaceState


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRow:
    id: int
    external_id: str
    secret_hash: str
    workspace_id: int
    provides: model.TagSet
    accepts: model.TagSet
    activated_at: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResultRow:
    value: model.Value | None
    error: model.ErrorInfo | None
    retryable: bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class InputRow:
    id: int
    external_id: str
    run_id: int
    workspace_id: int
    prompt: inputs.Prompt
    title: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamRow:
    id: int
    external_id: str
    step_id: int
    workspace_id: int
    index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamClosure:
    reason: int
    label: str  # what consumers are told: complete, errored, cancelled, timeout, ...
    error: dict[str, Any] | None  # {type, message, frames} for errored closes
    execution_id: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolRow:
    """One row of a workspace's pool history; ``pool`` is None for a deletion."""

    id: int
    workspace_id: int
    name: str
    pool: pools.Pool | None
    definition_hash: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRow:
    """A launched worker that was not deactivated, as the core reloads it."""

    id: int
    external_id: str
    pool_id: int
    session_id: int | None  # its session's row, while that session has not expired
    created_at: int
    launched: bool  # a launch result was recorded
    data: dict[str, Any] | None  # the launcher's handle, if the launch succeeded
    state: pools.WorkerState
    stopping: bool  # a stop was requested and has no result yet
    stopped: bool  # a stop has a result


class OrchestrationStore(Protocol):
    """Everything the core needs from storage; called inside one transaction per batch."""

    # Workspaces and manifests
    def workspace_by_external_id(self, external_id: str) -> WorkspaceRow | None: ...
    def workspace_by_name(self, name: str) -> WorkspaceRow | None: ...
    def insert_workspace(
        self, external_id: str, name: str, base_id: int | None, now: int
    ) -> int: ...
    def workspace_external_id(self, workspace_id: int) -> str: ...
    def workspace_state(self, workspace_id: int) -> model.WorkspaceState: ...
    def workspace_lineage(self, workspace_id: int) -> set[int]: ...
    def workspace_chain(self, workspace_id: int) -> list[int]: ...
    def workspace(self, workspace_id: int) -> WorkspaceRow: ...
    def update_workspace(self, workspace_id: int, name: str, base_id: int | None) -> None: ...
    def set_workspace_state(self, workspace_id: int, state: model.WorkspaceState) -> None: ...
    def workspace_dependants(self, workspace_id: int) -> list[int]: ...
    def live_executions_in_workspace(self, workspace_id: int) -> list[int]: ...
    def manifest_targets(self, workspace_id: int, module: str) -> list[str]: ...
    def replace_manifest(
        self, workspace_id: int, module: str, workflows: dict[str, dict[str, object]], now: int
    ) -> None: ...

    # Runs, steps, executions
    def run_by_external_id(self, external_id: str) -> int | None: ...
    def run_by_idempotency_key(self, key: str, since: int) -> str | None: ...
    def insert_run(
        self,
        *,
        external_id: str,
        parent_execution_id: int | None,
        idempotency_key: str | None,
        requires: model.TagSet,
        memo: bool,
        created_at: int,
        created_by: commands.Principal,
    ) -> int: ...
    def run_requires(self, run_id: int) -> model.TagSet: ...
    def run_memo(self, run_id: int) -> bool: ...
    def insert_step(
        self,
        *,
        run_id: int,
        number: int,
        parent_execution_id: int | None,
        module: str,
        target: str,
        type: model.TargetType,
        options: model.StepOptions,
        arguments: list[model.Value],
        created_at: int,
        cache_key: str | None = None,
        memo_key: str | None = None,
        defer_key: str | None = None,
    ) -> int: ...
    def next_step_number(self, run_id: int) -> int: ...
    def step_by_number(self, run_external_id: str, number: int) -> int | None: ...
    def step_options(self, step_id: int) -> model.StepOptions: ...
    def step_arguments(self, step_id: int) -> list[model.Value]: ...
    def insert_execution(
        self,
        *,
        step_id: int,
        attempt: int,
        workspace_id: int,
        execute_after: int | None,
        created_at: int,
        created_by: commands.Principal,
    ) -> int: ...
    def next_attempt(self, step_id: int) -> int: ...
    def execution(self, execution_id: int) -> model.Execution: ...
    def execution_by_external_id(self, external_id: str) -> model.Execution | None: ...
    def base_execution(self, step_id: int) -> model.Execution | None: ...
    def live_executions_of_step(self, step_id: int) -> list[int]: ...
    def previous_outcomes(self, step_id: int, exclude: int) -> list[model.Completion | None]: ...
    def queue(self) -> queue.QueueIndex: ...
    def insert_child(
        self, parent_id: int, child_id: int, group_id: int | None, now: int
    ) -> None: ...
    def descendant_candidates(self, execution_id: int) -> list[int]: ...
    def insert_group(self, execution_id: int, group_id: int, name: str | None) -> None: ...
    def insert_metric_definition(
        self, execution_id: int, key: str, definition: dict[str, Any], now: int
    ) -> bool: ...
    def insert_dependency(self, execution_id: int, dependency_id: int, now: int) -> bool: ...
    def dependencies(self, execution_id: int) -> list[int]: ...
    def find_reusable(
        self,
        *,
        workspaces: list[int],
        cache_key: str | None = None,
        memo_key: str | None = None,
        run_id: int | None = None,
        exclude_step: int | None = None,
        succeeded_since: int | None = None,
    ) -> int | None: ...

    # Outcomes
    def insert_assignment(self, execution_id: int, session_id: int, now: int) -> None: ...
    def assigned_session(self, execution_id: int) -> int | None: ...
    def insert_result(
        self,
        execution_id: int,
        *,
        value: model.Value | None = None,
        error: model.ErrorInfo | None = None,
        retryable: bool | None = None,
        created_at: int,
    ) -> None: ...
    def result(self, execution_id: int) -> ResultRow | None: ...
    def insert_completion(
        self,
        execution_id: int,
        kind: model.Completion,
        successor_id: int | None,
        now: int,
        created_by: commands.Principal = None,
    ) -> None: ...
    def completion(self, execution_id: int) -> tuple[model.Completion, int | None] | None: ...

    # Sessions
    def session_by_external_id(self, external_id: str) -> int | None: ...
    def insert_session(
        self,
        *,
        external_id: str,
        secret_hash: str,
        workspace_id: int,
        provides: model.TagSet,
        accepts: model.TagSet,
        created_at: int,
    ) -> int: ...
    def activate_session(self, session_id: int, now: int) -> None: ...
    def expire_session(self, session_id: int, now: int) -> None: ...
    def live_sessions(self) -> list[SessionRow]: ...
    def held_executions(self, session_id: int) -> list[int]: ...
    def orphaned_assignments(self) -> list[int]: ...

    # Inputs
    def insert_input(
        self,
        *,
        run_id: int,
        workspace_id: int,
        key: str | None,
        prompt: inputs.Prompt,
        title: str | None,
        actions: Any,
        initial: Any,
        has_initial: bool,
        created_at: int,
    ) -> InputRow: ...
    def input(self, input_id: int) -> InputRow: ...
    def input_by_external_id(self, external_id: str) -> InputRow | None: ...
    def input_by_key(self, run_id: int, key: str, workspaces: list[int]) -> InputRow | None: ...
    def insert_execution_input(self, execution_id: int, input_id: int, now: int) -> bool: ...
    def insert_input_response(
        self,
        input_id: int,
        kind: inputs.Response,
        value: Any,
        now: int,
        principal: commands.Principal,
    ) -> None: ...
    def input_response(self, input_id: int) -> tuple[inputs.Response, Any] | None: ...
    def insert_input_dependency(self, execution_id: int, input_id: int, now: int) -> bool: ...
    def input_dependencies(self, execution_id: int) -> list[int]: ...
    def input_dependants(self, input_id: int) -> list[int]: ...

    # Assets
    def asset_by_hash(self, content_hash: str) -> assets.Asset | None: ...
    def asset_by_external_id(self, external_id: str) -> assets.Asset | None: ...
    def insert_asset(
        self,
        external_id: str,
        content_hash: str,
        name: str | None,
        entries: assets.Entries,
        now: int,
    ) -> assets.Asset: ...
    def insert_execution_asset(self, execution_id: int, asset_id: int, now: int) -> bool: ...
    def insert_asset_dependency(self, execution_id: int, asset_id: int, now: int) -> bool: ...

    # Checkpoints
    def checkpoint_rows(self, execution_id: int) -> dict[str, model.Value | None]: ...
    def checkpoint_source(self, step_id: int, workspace_id: int, below: int) -> int | None: ...
    def put_checkpoints(
        self, execution_id: int, rows: dict[str, model.Value | None], now: int
    ) -> None: ...

    # Streams
    def stream(self, stream_id: int) -> StreamRow: ...
    def stream_by_external_id(self, external_id: str) -> StreamRow | None: ...
    def stream_by_step(self, step_id: int, index: int) -> StreamRow | None: ...
    def stream_registered_at(self, execution_id: int, position: int) -> StreamRow | None: ...
    def paused_stream(self, step_id: int, workspace_id: int, position: int) -> int | None: ...
    def next_stream_number(self, step_id: int) -> int: ...
    def insert_stream(self, step_id: int, workspace_id: int, number: int, now: int) -> int: ...
    def insert_stream_registration(
        self,
        stream_id: int,
        execution_id: int,
        position: int,
        buffer: int | None,
        timeout_ms: int | None,
        now: int,
    ) -> None: ...
    def stream_registered_by(self, stream_id: int, execution_id: int) -> bool: ...
    def stream_head(self, stream_id: int) -> int: ...
    def insert_stream_item(
        self, stream_id: int, sequence: int, value: model.Value, execution_id: int, now: int
    ) -> bool: ...
    def stream_items(
        self, stream_id: int, from_sequence: int, limit: int
    ) -> list[tuple[int, model.Value]]: ...
    def stream_closure(self, stream_id: int) -> StreamClosure | None: ...
    def insert_stream_closure(
        self,
        stream_id: int,
        reason: int,
        label: str,
        error: model.ErrorInfo | None,
        execution_id: int | None,
        now: int,
    ) -> bool: ...
    def open_streams(self, step_id: int, workspace_id: int) -> list[int]: ...
    def open_streams_registered_by(self, execution_id: int) -> list[int]: ...
    def own_stream_closures(self, execution_id: int) -> list[int]: ...
    def insert_stream_dependency(self, execution_id: int, stream_id: int, now: int) -> bool: ...
    def insert_stream_wait(
        self, execution_id: int, stream_id: int, sequence: int, now: int
    ) -> None: ...
    def stream_waits(self, execution_id: int) -> list[tuple[int, int]]: ...
    def live_stream_waits(self, stream_id: int) -> list[int]: ...
    def live_producers(self) -> list[tuple[int, int, int]]: ...

    # Pools and workers
    def current_pools(self, workspace_id: int | None = None) -> list[PoolRow]: ...
    def pool_row(self, pool_id: int) -> PoolRow: ...
    def pool_external_id_used(self, external_id: str) -> int | None: ...
    def insert_pool(
        self,
        *,
        external_id: str,
        workspace_id: int,
        name: str,
        pool: pools.Pool | None,
        created_at: int,
        created_by: commands.Principal,
    ) -> int: ...
    def disabled_pools(self) -> set[tuple[int, str]]: ...
    def insert_pool_state(
        self,
        workspace_id: int,
        name: str,
        disabled: bool,
        now: int,
        principal: commands.Principal,
    ) -> None: ...
    def worker_external_id_used(self, external_id: str) -> int | None: ...
    def insert_worker(
        self, *, external_id: str, pool_id: int, session_id: int, created_at: int
    ) -> int: ...
    def insert_launch_result(
        self, worker_id: int, data: dict[str, Any] | None, error: str | None, now: int
    ) -> None: ...
    def insert_worker_state(
        self, worker_id: int, state: pools.WorkerState, now: int, principal: commands.Principal
    ) -> None: ...
    def insert_worker_stop(self, worker_id: int, now: int) -> int: ...
    def insert_worker_stop_result(self, worker_id: int, error: str | None, now: int) -> None: ...
    def insert_worker_deactivation(
        self, worker_id: int, error: str | None, logs: str | None, now: int
    ) -> None: ...
    def live_workers(self) -> list[WorkerRow]: ...
