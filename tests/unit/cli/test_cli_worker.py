"""``coflux worker`` settings resolution and hand-over (cli.md §4.3)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from pycoflux.worker.config import default_concurrency

from .conftest import Run


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Replace ``pycoflux.worker.main`` with a module whose run() records its config."""
    calls: list[Any] = []

    def run(config: Any) -> int:
        calls.append(config)
        return 0

    module = types.ModuleType("pycoflux.worker.main")
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycoflux.worker.main", module)
    return calls


def test_harness_command_line(coflux: Run, started: list[Any]) -> None:
    result = coflux(
        "--host",
        "p1.localhost:8000",
        "--workspace",
        "w",
        "worker",
        "--register",
        "--adapter",
        "python3,/abs/adapter.py,--manifest,/abs/m.json",
        "--concurrency",
        "1",
        "--log-level",
        "debug",
        "--provides",
        "gpu:a100,region:eu",
        "--accepts",
        "x:1",
        "test",
        env={"COFLUX_LOGS_STORE_FLUSH_INTERVAL": "0"},
    )
    assert result.exit_code == 0, result.stderr
    [config] = started
    assert config.host == "p1.localhost:8000"
    assert config.secure is False
    assert config.workspace == "w"
    assert config.register is True and config.watch is False
    assert config.adapter == ("python3", "/abs/adapter.py", "--manifest", "/abs/m.json")
    assert config.concurrency == 1
    assert config.log_level == "debug"
    assert config.provides == ("gpu:a100", "region:eu")
    assert config.accepts == ("x:1",)
    assert config.modules == ("test",)
    assert config.logs_flush_interval == 0
    assert config.drain_timeout == 120


def test_pool_launched_worker_environment(coflux: Run, started: list[Any]) -> None:
    env = {
        "COFLUX_HOST": "h.example.com",
        "COFLUX_PROJECT": "p",
        "COFLUX_WORKSPACE": "w",
        "COFLUX_SESSION": "sess.secret",
        "COFLUX_WORKER_ADAPTER": "python3,-m,coflux",
        "COFLUX_WORKER_CONCURRENCY": "3",
        "COFLUX_SECURE": "false",
        "COFLUX_DATA_DIR": "/ignored",
        "COFLUX_CLI_PATH": "/ignored",
    }
    result = coflux("worker", "m1", "m2", env=env)
    assert result.exit_code == 0, result.stderr
    [config] = started
    assert (config.host, config.project, config.workspace) == ("h.example.com", "p", "w")
    assert config.secure is False
    assert config.session == "sess.secret"
    assert config.token is None
    assert config.adapter == ("python3", "-m", "coflux")
    assert config.concurrency == 3
    assert config.modules == ("m1", "m2")


def test_file_settings_and_flag_appends(coflux: Run, started: list[Any], tmp_path: Path) -> None:
    (tmp_path / "coflux.toml").write_text(
        "[worker]\nmodules = ['a']\nadapter = ['py', '-m', 'coflux']\nprovides = ['k:v']\n"
        "concurrency = 7\n"
        "[blobs]\nthreshold = 50\nstores = [{type = 'http', url = 'http://b'}]\n"
        "[logs]\nbatch_size = 5\nflush_interval = 0.1\n"
        "[metrics]\nbatch_size = 0\nflush_interval = 0\n"
    )
    result = coflux("worker", "--provides", "k2:v2", "--dev", "--drain-timeout", "1m30s")
    assert result.exit_code == 0, result.stderr
    [config] = started
    assert config.modules == ("a",)
    assert config.adapter == ("py", "-m", "coflux")
    assert config.provides == ("k:v", "k2:v2")
    assert config.concurrency == 7
    assert config.register is True and config.watch is True
    assert config.drain_timeout == 90
    assert config.blobs_threshold == 50
    assert config.blob_stores == ({"type": "http", "url": "http://b"},)
    assert (config.logs_batch_size, config.logs_flush_interval) == (5, 0.1)
    assert (config.metrics_batch_size, config.metrics_flush_interval) == (100, 0.5)


def test_defaults(coflux: Run, started: list[Any]) -> None:
    coflux("worker", "--adapter", "x", "m")
    [config] = started
    assert config.concurrency == default_concurrency()
    assert config.drain_timeout == 120
    assert config.host == "localhost:7777"


def test_no_modules(coflux: Run, started: list[Any]) -> None:
    result = coflux("worker", "--adapter", "x")
    assert result.exit_code == 1
    assert result.stderr == (
        "no modules specified; pass them as arguments or set 'worker.modules' in coflux.toml\n"
    )


def test_unknown_file_key_fails(coflux: Run, started: list[Any], tmp_path: Path) -> None:
    (tmp_path / "coflux.toml").write_text("modules = ['a']\n")
    result = coflux("worker", "--adapter", "x", "m")
    assert result.exit_code == 1
    assert result.stderr.startswith("failed to unmarshal config:")
    assert started == []


def test_adapter_auto_detection(coflux: Run, started: list[Any], tmp_path: Path) -> None:
    venv_python = tmp_path / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text("")
    coflux("worker", "m")
    assert started[0].adapter == (".venv/bin/python", "-m", "coflux")


def test_exit_code_is_the_workers(coflux: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("pycoflux.worker.main")
    module.run = lambda config: 1  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycoflux.worker.main", module)
    assert coflux("worker", "--adapter", "x", "m").exit_code == 1


def test_team_without_login(
    coflux: Run, started: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    result = coflux("--team", "t", "worker", "--adapter", "x", "m")
    assert result.exit_code == 1
    assert result.stderr == "not logged in to Studio (run 'coflux login' to authenticate)\n"
