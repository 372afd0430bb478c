"""``pycoflux.worker.main.run`` as a real process: exit codes, errors and signals."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

from tests.support.eventually import eventually_async as eventually
from tests.support.worker_harness import SDK_ADAPTER, FakeServer

_LAUNCH = """
import sys
from pycoflux.worker.config import WorkerConfig
from pycoflux.worker.main import run
sys.exit(run(WorkerConfig(host=sys.argv[1], adapter={adapter!r}, modules=tuple(sys.argv[2:]),
                          concurrency=1, drain_timeout=5.0)))
"""


async def _launch(cwd: Path, host: str, *modules: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _LAUNCH.format(adapter=SDK_ADAPTER),
        host,
        *modules,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_sigterm_drains_an_idle_worker_quickly(
    fake_server: FakeServer, project: Path
) -> None:
    process = await _launch(project, fake_server.host, "wfmod")
    try:
        await eventually(lambda: fake_server.named("declare_targets") and fake_server.connected)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 5)
        elapsed = time.monotonic() - started
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    _, stderr = await process.communicate()
    assert code == 0, stderr.decode()
    assert elapsed < 3
    assert fake_server.named("session_draining")
    assert b"drain complete" in stderr


async def test_discovery_failure_exits_with_one_error_line(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    (tmp_path / "broken.py").write_text("import nonexistent_dependency_xyz\n")
    process = await _launch(tmp_path, fake_server.host, "broken")
    _, stderr = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 1
    lines = stderr.decode().strip().splitlines()
    error = [line for line in lines if line.startswith("worker error:")]
    assert len(error) == 1
    assert error[0].startswith("worker error: discovery failed: ")
    assert "nonexistent_dependency_xyz" in error[0]


async def test_fatal_close_reason_exits_non_zero(fake_server: FakeServer, project: Path) -> None:
    fake_server.close_reason = "session_invalid"
    process = await _launch(project, fake_server.host, "wfmod")
    _, stderr = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 1
    assert "worker error: server closed the connection: session_invalid" in stderr.decode()


async def test_unreachable_server_is_reported(tmp_path: Path) -> None:
    process = await _launch(tmp_path, "127.0.0.1:9", "wfmod")
    _, stderr = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 1
    assert "worker error: failed to get workspaces: cannot reach server" in stderr.decode()


async def test_watch_mode_reloads_on_python_changes_only(
    fake_server: FakeServer, start_worker, project: Path
) -> None:
    await start_worker(watch=True)
    assert len(fake_server.api_bodies("create_session")) == 1

    (project / "notes.txt").write_text("not code")
    await asyncio.sleep(0.5)  # several polls: a non-.py change must not reload
    assert len(fake_server.named("declare_targets")) == 1

    source = (project / "wfmod.py").read_text()
    (project / "wfmod.py").write_text(source + "\n\n@cf.task()\ndef added_later():\n    return 1\n")
    [_, redeclared] = await eventually(
        lambda: (
            fake_server.named("declare_targets")[:2]
            if len(fake_server.named("declare_targets")) >= 2
            else None
        )
    )
    assert "added_later" in redeclared["params"][0]["wfmod"]["task"]
    assert len(fake_server.api_bodies("create_session")) == 2
