"""Starting runs and steps: submissions from the API and from executions, re-runs and
cancellation by the API (``semantics.md`` §4.1-4.2, §7.3, §7.11-7.12).
"""

from __future__ import annotations

import hashlib

from pycoflux.orchestration import caching, commands, lifecycle, model
from pycoflux.orchestration.handlers.base import Base

IDEMPOTENCY_WINDOW_MS = 86_400_000


class Runs(Base):
    """Runs, steps and what a running execution adds to its run."""

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
        parent = self._held_by(command.session_id, command.parent_id)
        if parent is None:
            return
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
        execution = self._held_by(command.session_id, command.execution_id)
        if execution is None:
            return
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

    def _cancel_execution(self, command: commands.CancelExecution) -> None:
        workspace = self._workspace_row(command.workspace_id)
        execution = self._store.execution_by_external_id(command.execution_id)
        if workspace is None or execution is None:
            return self._reject("not_found", status=404)
        target = lifecycle.follow_spawns(self._store, execution.id)
        # Cancelling what already finished is a no-op that succeeds (server-api.md §4.6),
        # as the worker's cancel is.
        if self._cancel(target, workspace.id, principal=command.principal):
            self._tick()
        self._reply({})

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
                self._cancel(live, workspace.id, own_streams_only=True, principal=command.principal)
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
