"""A running project copies its log into the main file on its own, off the commit path."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest

from pycoflux.orchestration import commands
from pycoflux.server import projects, rotation


def test_a_project_checkpoints_what_it_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rotation, "CHECKPOINT_INTERVAL", 0.05)

    async def main() -> None:
        host = projects.ProjectHost("p", tmp_path / "p")
        await host.start()
        try:
            for name in ("one", "two", "three"):
                await host.execute(commands.CreateWorkspace(name=name, base_id=None))
            for _ in range(200):
                if host._checkpointed_sequence == host._committed_sequence:
                    break
                await asyncio.sleep(0.05)
            assert host._checkpointed_sequence == host._committed_sequence
            copy = tmp_path / "main-only.sqlite"  # the main file alone, without the log
            shutil.copyfile(tmp_path / "p" / "orchestration.sqlite", copy)
            with sqlite3.connect(copy) as db:
                names = {name for (name,) in db.execute("SELECT name FROM workspaces")}
            assert {"one", "two", "three"} <= names
        finally:
            await host.stop()

    asyncio.run(main())
