"""The installed ``coflux`` console script, run the way the upstream harness runs it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).parent / "coflux"

pytestmark = pytest.mark.skipif(
    not SCRIPT.exists(), reason="console script not installed (pip install -e .)"
)


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path
) -> subprocess.CompletedProcess[str]:
    # Only PATH and COFLUX_* (no HOME, no TMPDIR), from an unrelated directory.
    base = {"PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [str(SCRIPT), *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_version(tmp_path: Path) -> None:
    result = run("--version", cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "coflux version 0.12.0\n", "")


def test_help_is_fast(tmp_path: Path) -> None:
    run("--help", cwd=tmp_path)  # warm the bytecode cache
    started = time.perf_counter()
    result = run("--help", cwd=tmp_path)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0
    assert "submit" in result.stdout and "workspaces" in result.stdout
    assert elapsed < 1.0  # generous for loaded CI machines; typically ~0.12 s


def test_server_down(tmp_path: Path) -> None:
    result = run(
        "--host",
        "127.0.0.1:9",
        "--workspace",
        "default",
        "--output",
        "json",
        "runs",
        "result",
        "R1",
        env={"COFLUX_LOGS_STORE_FLUSH_INTERVAL": "0", "COFLUX_UNKNOWN": "x"},
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "request failed: " in result.stderr
    assert result.stderr.count("\n") == 1


def test_usage_errors_exit_1(tmp_path: Path) -> None:
    result = run("submit", "--bogus", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("unknown flag: --bogus\n")
    result = run("bogus", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (1, 'unknown command "bogus" for "coflux"\n')


def test_no_arguments_prints_help(tmp_path: Path) -> None:
    result = run(cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: coflux")


def test_runs_from_any_directory_via_absolute_path(tmp_path: Path) -> None:
    assert run("runs", cwd=tmp_path).returncode == 0
