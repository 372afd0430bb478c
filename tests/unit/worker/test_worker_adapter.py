"""Discovery and the executor handshake, against the real SDK and scripted stand-ins."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pycoflux import errors
from pycoflux.worker import adapter, discovery
from pycoflux.worker.executors import SpawnLauncher
from pycoflux.worker.pool import ExecutorPool
from tests.support.worker_harness import SDK_ADAPTER, WFMOD, write_module


async def test_discover_lists_sdk_targets(tmp_path: Path) -> None:
    write_module(tmp_path)
    manifest = await discovery.discover(SDK_ADAPTER, ("wfmod",), cwd=tmp_path)

    by_name = {t.name: t for t in manifest.targets}
    assert by_name["add"].type == "task"
    assert by_name["parent"].type == "workflow"
    assert "parent" in manifest.target_map()["wfmod"]["workflow"]
    assert "add" in manifest.target_map()["wfmod"]["task"]
    assert set(manifest.workflow_definitions()["wfmod"]) == {
        "parent",
        "waits_for_file",
        "canceller",
    }


async def test_discover_import_failure_carries_the_adapter_stderr(tmp_path: Path) -> None:
    write_module(tmp_path, "import nonexistent_dependency_xyz\n", name="broken")
    with pytest.raises(errors.DiscoveryError) as caught:
        await discovery.discover(SDK_ADAPTER, ("broken",), cwd=tmp_path)
    message = str(caught.value)
    assert message.startswith("discovery failed: ")
    assert "nonexistent_dependency_xyz" in message


async def test_discover_partial_manifest_is_used_on_reload(tmp_path: Path) -> None:
    write_module(tmp_path)
    write_module(tmp_path, "raise RuntimeError('half saved')\n", name="broken")
    manifest = await discovery.discover(
        SDK_ADAPTER, ("wfmod", "broken"), cwd=tmp_path, allow_partial=True
    )
    assert any(t.name == "add" for t in manifest.targets)


async def test_discover_without_targets_is_an_error(tmp_path: Path) -> None:
    write_module(tmp_path, "X = 1\n", name="empty")
    with pytest.raises(errors.DiscoveryError, match=r"no targets found in modules \[empty\]"):
        await discovery.discover(SDK_ADAPTER, ("empty",), cwd=tmp_path)


async def test_discover_tolerates_import_time_prints(tmp_path: Path) -> None:
    write_module(tmp_path, 'print("hello from import")\n' + WFMOD, name="noisy")
    manifest = await discovery.discover(SDK_ADAPTER, ("noisy",), cwd=tmp_path)
    assert any(t.name == "add" for t in manifest.targets)


def test_workflow_definition_maps_manifest_fields() -> None:
    definition = discovery.workflow_definition(
        {
            "module": "m",
            "name": "w",
            "type": "workflow",
            "parameters": [{"name": "a", "annotation": None, "default": "1"}, {"name": "b"}],
            "wait_for": True,
            "cache": {"params": [0], "max_age_ms": 5000},
            "retries": {"limit": 2},
            "delay": 1500,
            "timeout": 600000,
            "recurrent": True,
            "memo": [1],
            "streams": {"buffer": None},
        }
    )
    assert definition == {
        "parameters": [{"name": "a", "default": "1"}, {"name": "b"}],
        "waitFor": [0, 1],
        "cache": {"params": [0], "max_age": 5000, "namespace": None, "version": None},
        "defer": None,
        "delay": 1500,
        "retries": {"limit": 2, "backoff_min": 0, "backoff_max": 0},
        "recurrent": True,
        "timeout": 600000,
        "requires": None,
        "instruction": None,
        "memo": [1],
        "streams": {"buffer": None},
    }


def _script(tmp_path: Path, body: str) -> tuple[str, ...]:
    path = tmp_path / "stand_in.py"
    path.write_text("import sys, time\n" + body)
    return (sys.executable, str(path))


async def test_ready_handshake_with_the_sdk(tmp_path: Path) -> None:
    process = await adapter.AdapterProcess.spawn(SDK_ADAPTER, cwd=tmp_path, ready_timeout=30)
    assert process.alive
    await process.stop(5)  # the SDK exits on stdin EOF
    assert not process.alive


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"method":"ready","params":{"version":"0.11"}}', "adapter version mismatch"),
        ('{"method":"ready"}', "did not send a protocol version"),
        ('{"method":"hello","params":{}}', "expected ready message, got hello"),
        ("not json", "failed to parse ready message"),
        (None, "executor closed before ready"),
    ],
)
async def test_bad_handshakes_fail_the_spawn(
    tmp_path: Path, line: str | None, expected: str
) -> None:
    body = "" if line is None else f"print({line!r}, flush=True)\ntime.sleep(30)\n"
    argv = _script(tmp_path, body)
    with pytest.raises(errors.AdapterError, match=expected):
        await adapter.AdapterProcess.spawn(argv, cwd=tmp_path, ready_timeout=10)


async def test_dev_adapter_version_is_accepted(tmp_path: Path) -> None:
    argv = _script(
        tmp_path,
        'print(\'{"method":"ready","params":{"version":"dev"}}\', flush=True)\nsys.stdin.read()\n',
    )
    process = await adapter.AdapterProcess.spawn(argv, cwd=tmp_path, ready_timeout=10)
    await process.stop(5)


async def test_non_json_lines_are_skipped(tmp_path: Path) -> None:
    argv = _script(
        tmp_path,
        'print(\'{"method":"ready","params":{"version":"0.12"}}\', flush=True)\n'
        'print("stray output", flush=True)\n'
        'print(\'{"method":"log","params":{}}\', flush=True)\n',
    )
    process = await adapter.AdapterProcess.spawn(argv, cwd=tmp_path, ready_timeout=10)
    assert await process.read_message() == {"method": "log", "params": {}}
    assert await process.read_message() is None
    await process.stop(5)


async def test_pool_prespawns_warm_executors_and_tops_up(tmp_path: Path) -> None:
    launcher = SpawnLauncher(SDK_ADAPTER, cwd=tmp_path, ready_timeout=30)
    pool = ExecutorPool(launcher, concurrency=8, graceful_exit=5)
    try:
        await pool.start()
        assert pool.warm_count == 4
        process = await pool.acquire()
        assert pool.warm_count == 3
        await process.stop(5)
        pool.release(process)
        await pool.close_warm()
        assert pool.warm_count == 0
    finally:
        await pool.close()


async def test_closing_the_pool_waits_for_the_executors_it_is_stopping(tmp_path: Path) -> None:
    """A process released while the pool drains is stopped in the background; closing the
    pool reaps it rather than leaving it running with nobody to wait for it."""
    launcher = SpawnLauncher(SDK_ADAPTER, cwd=tmp_path, ready_timeout=30)
    pool = ExecutorPool(launcher, concurrency=2, graceful_exit=5)
    try:
        await pool.start()
        process = await pool.acquire()
        await pool.close_warm()
        pool.release(process, reuse=True)  # draining: stopped, not kept
    finally:
        await pool.close()
    assert not process.alive


def test_detect_adapter_prefers_a_project_venv(tmp_path: Path) -> None:
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").touch()
    assert adapter.detect_adapter(tmp_path) == (".venv/bin/python", "-m", "coflux")
    resolved = adapter.resolve_argv(adapter.detect_adapter(tmp_path), tmp_path)
    assert resolved[0] == str(tmp_path / ".venv/bin/python")


def test_decode_line_reads_utf8_and_other_encodings_like_json_loads() -> None:
    assert adapter.decode_line('{"a":"é","b":[1,2.5,null]}\n'.encode()) == {
        "a": "é",
        "b": [1, 2.5, None],
    }
    assert adapter.decode_line(b'\xef\xbb\xbf{"a":1}') == {"a": 1}  # UTF-8 BOM
    assert adapter.decode_line('{"a":1}'.encode("utf-16-le")) == {"a": 1}
    assert adapter.decode_line(b"[1]") == [1]
    for constant in (b'{"a":NaN}', b'{"a":Infinity}', b"[-Infinity]"):
        with pytest.raises(ValueError, match="non-finite"):
            adapter.decode_line(constant)
    with pytest.raises(ValueError):
        adapter.decode_line(b"{not json")


def test_encode_line_is_compact_unescaped_json() -> None:
    assert adapter.encode_line({"a": "é", "b": [1, None]}) == '{"a":"é","b":[1,null]}\n'.encode()
