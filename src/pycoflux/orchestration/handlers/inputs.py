"""Input commands: raising an input from an execution, answering it from the API
(``semantics.md`` §7.8).
"""

from __future__ import annotations

from typing import Any

from pycoflux.orchestration import commands, inputs, ports
from pycoflux.orchestration.handlers.base import Base


class Inputs(Base):
    """Human inputs."""

    def _submit_input(self, command: commands.SubmitInput) -> None:
        execution = self._held_by(command.session_id, command.execution_id)
        if execution is None:
            return
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
