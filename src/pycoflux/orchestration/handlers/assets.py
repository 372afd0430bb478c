"""Asset commands: persisting and reading assets from executions (``semantics.md`` §2.13)."""

from __future__ import annotations

from pycoflux.orchestration import assets, commands
from pycoflux.orchestration.handlers.base import Base


class Assets(Base):
    """Assets persisted and read by executions."""

    def _put_asset(self, command: commands.PutAsset) -> None:
        execution = self._held_by(command.session_id, command.execution_id)
        if execution is None:
            return
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
        execution = self._held_by(command.session_id, command.execution_id)
        if execution is None:
            return
        asset = self._store.asset_by_external_id(command.asset_id)
        if asset is None:
            return self._send(command.session_id, [3, command.request_id, "not_found"])
        if self._store.insert_asset_dependency(execution.id, asset.id, self._now):
            self._publish_run(execution)
        self._send(command.session_id, [2, command.request_id, asset.entries])
