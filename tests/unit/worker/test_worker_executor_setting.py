"""``coflux worker --executor``: flag > ``COFLUX_WORKER_EXECUTOR`` > ``worker.executor``."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pycoflux.cli.main import cli


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Any]:
    """Run the CLI in an empty directory; record the config ``worker.main.run`` receives."""
    for key in list(os.environ):
        if key.startswith("COFLUX_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    calls: list[Any] = []
    module = types.ModuleType("pycoflux.worker.main")
    module.run = lambda config: calls.append(config) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycoflux.worker.main", module)
    return calls


def coflux(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["worker", "--adapter", "py,-m,coflux", *args, "m"], env=env)


def test_unset_means_the_platform_default(started: list[Any]) -> None:
    assert coflux().exit_code == 0
    assert started[0].executor is None


def test_flag_beats_environment_beats_file(started: list[Any], tmp_path: Path) -> None:
    (tmp_path / "coflux.toml").write_text("[worker]\nexecutor = 'spawn'\n")
    assert coflux().exit_code == 0
    assert coflux(env={"COFLUX_WORKER_EXECUTOR": "Reuse"}).exit_code == 0
    assert coflux("--executor", "fork", env={"COFLUX_WORKER_EXECUTOR": "reuse"}).exit_code == 0
    assert [config.executor for config in started] == ["spawn", "reuse", "fork"]


def test_an_unknown_mode_is_refused(started: list[Any]) -> None:
    result = coflux("--executor", "threads")
    assert result.exit_code == 1
    assert "invalid executor mode 'threads'; expected one of: fork, spawn, reuse" in result.output
    assert not started
