"""The narrow port through which the core reads and writes a project's durable state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pycoflux.orchestration import commands, model


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
    def queued_executions(self) -> list[model.Execution]: ...
    def insert_child(
        self, parent_id: int, child_id: int, group_id: int | None, now: int
    ) -> None: ...
    def descendant_candidates(self, execution_id: int) -> list[int]: ...
    def insert_group(self, execution_id: int, group_id: int, name: str | None) -> None: ...
    def insert_dependency(self, execution_id: int, dependency_id: int, now: int) -> bool: ...
    def dependencies(self, execution_id: int) -> list[int]: ...

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
        self, execution_id: int, kind: model.Completion, successor_id: int | None, now: int
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
