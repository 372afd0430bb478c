"""Workspace and manifest commands: create, update, pause, resume, archive, register.

A paused workspace keeps its queue; archiving ends its sessions (what they held is
abandoned), cancels what is left and hides it (``semantics.md`` §2.2). Manifests are
inherited, so a change is published to the workspace and its descendants.
"""

from __future__ import annotations

import re

from pycoflux.orchestration import commands, model
from pycoflux.orchestration.handlers.base import Base

WORKSPACE_NAME = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")


class Workspaces(Base):
    """Creating and changing workspaces and what they register."""

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

    def _update_workspace(self, command: commands.UpdateWorkspace) -> None:
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        errors: dict[str, str] = {}
        name, base_id = workspace.name, workspace.base_id
        if command.name is not None and command.name != workspace.name:
            existing = self._store.workspace_by_name(command.name)
            if not WORKSPACE_NAME.match(command.name):
                errors["name"] = "invalid"
            elif existing is not None and existing.id != workspace.id:
                errors["name"] = "exists"
            name = command.name
        if command.set_base:
            if command.base_id is None:
                base_id = None
            else:
                base = self._workspace_row(command.base_id)
                # The new base must not be the workspace itself or one of its descendants.
                if base is None or workspace.id in self._store.workspace_lineage(base.id):
                    errors["baseId"] = "invalid"
                else:
                    base_id = base.id
        if errors:
            return self._reject("bad_request", details=errors)
        self._store.update_workspace(workspace.id, name, base_id)
        if base_id != workspace.base_id:
            self._store.queue().cache_lineage_changed()
        self._publish("workspaces")
        self._publish_manifests(workspace.id)
        self._tick()
        self._reply()

    def _publish_manifests(self, workspace_id: int) -> None:
        """Manifests are inherited: a change shows in the workspace and its descendants."""
        pending, seen = [workspace_id], set()
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            external_id = self._store.workspace_external_id(current)
            self._publish("manifests", external_id)
            self._publish("modules", external_id)
            self._publish("workflows", external_id)
            pending.extend(self._store.workspace_dependants(current))

    def _pause_workspace(self, command: commands.PauseWorkspace) -> None:
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        if workspace.state is model.WorkspaceState.ACTIVE:
            self._store.set_workspace_state(workspace.id, model.WorkspaceState.PAUSED)
            self._publish("workspaces")
        self._reply()

    def _resume_workspace(self, command: commands.ResumeWorkspace) -> None:
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        if workspace.state is model.WorkspaceState.PAUSED:
            self._store.set_workspace_state(workspace.id, model.WorkspaceState.ACTIVE)
            self._publish("workspaces")
        self._tick()
        self._reply()

    def _archive_workspace(self, command: commands.ArchiveWorkspace) -> None:
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        if self._store.workspace_dependants(workspace.id):
            return self._reject("bad_request", details={"workspaceId": "has_dependencies"})
        for session in list(self._sessions.values()):
            if session.workspace_id == workspace.id:
                self._remove_session(session.external_id, reason="workspace_not_found")
        for execution_id in self._store.live_executions_in_workspace(workspace.id):
            self._cancel(execution_id, workspace.id)
        self._store.set_workspace_state(workspace.id, model.WorkspaceState.ARCHIVED)
        self._publish("workspaces")
        self._publish("sessions", workspace.external_id)
        self._publish("queue", workspace.external_id)
        self._publish_manifests(workspace.id)
        self._reply()

    def _register_manifests(self, command: commands.RegisterManifests) -> None:
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        for module, workflows in command.manifests.items():
            self._store.replace_manifest(workspace.id, module, workflows, self._now)
        self._publish_manifests(workspace.id)
        self._reply()

    def _archive_module(self, command: commands.ArchiveModule) -> None:
        workspace = self._workspace_row(command.workspace_id)
        if workspace is None:
            return self._reject("not_found", status=404)
        self._store.replace_manifest(workspace.id, command.module, {}, self._now)
        self._publish_manifests(workspace.id)
        self._reply()
