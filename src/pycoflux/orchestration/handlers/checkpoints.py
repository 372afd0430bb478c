"""Checkpoint writes from executions (``semantics.md`` §9.2); reads happen at dispatch."""

from __future__ import annotations

from pycoflux.orchestration import checkpoints, commands
from pycoflux.orchestration.handlers.base import Base


class Checkpoints(Base):
    """Checkpoint writes."""

    def _update_checkpoints(self, command: commands.UpdateCheckpoints) -> None:
        execution = self._held_by(command.session_id, command.execution_id)
        if execution is None:
            return
        if self._store.completion(execution.id) is not None:
            # A superseded attempt can never affect its successor.
            if command.request_id is not None:
                self._send(command.session_id, [3, command.request_id, "execution_completed"])
            return
        checkpoints.apply(self._store, execution, command.sets, command.resets, self._now)
        self._publish_run(execution)
        if command.request_id is not None:
            self._send(command.session_id, [2, command.request_id, None])
