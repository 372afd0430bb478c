"""Streams and assets with the official SDK: the real server, a real ``coflux worker`` and the
CLI (``semantics.md`` checklist item 163; ``cli.md`` §4.11, checklist items 34-35).

The large-asset test moves 50 MB between two tasks through the worker's and the server's
blob paths; the content is derived from a seed, so the test recomputes its digest without
keeping a copy.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.worker_stack import WorkerStack, value, worker_stack

pytestmark = pytest.mark.integration

BIG_MIB = 50

FLOWS = textwrap.dedent(
    f"""
    import hashlib
    import tempfile
    from pathlib import Path

    import coflux as cf


    @cf.task()
    def consume(numbers) -> int:
        return sum(numbers)


    @cf.workflow()
    def produce_while_waiting(n: int) -> int:
        def numbers():
            for i in range(n):
                yield i

        # Lockstep (buffer 0): each item waits for the consumer's acknowledgement, while
        # this workflow is blocked waiting for the consumer's result.
        return consume(cf.stream(numbers(), buffer=0))


    def block(seed: str, index: int) -> bytes:
        return index.to_bytes(4, "big") + hashlib.sha256(seed.encode()).digest() * 32767 + bytes(28)


    @cf.task()
    def write_big(seed: str) -> cf.Asset:
        path = Path(tempfile.mkdtemp()) / "big.bin"
        with path.open("wb") as f:
            for index in range({BIG_MIB}):
                f.write(block(seed, index))
        return cf.asset(path, name="big")


    @cf.task()
    def check_big(asset: cf.Asset) -> str:
        restored = asset.restore(at=tempfile.mkdtemp())["big.bin"]
        digest = hashlib.sha256()
        with restored.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        # Short enough to stay an inline value (the blob threshold is 100 bytes).
        return f"{{restored.stat().st_size}}:{{digest.hexdigest()}}"


    @cf.workflow()
    def big_asset(seed: str) -> str:
        return check_big(write_big(seed))


    @cf.task()
    def write_bundle(text: str) -> cf.Asset:
        directory = Path(tempfile.mkdtemp())
        (directory / "report").mkdir()
        (directory / "report" / "summary.txt").write_text(text)
        (directory / "data.json").write_text('{{"n": 1}}')
        return cf.asset(["report/summary.txt", "data.json"], at=directory, name="bundle")


    @cf.workflow()
    def bundle(text: str) -> cf.Asset:
        return write_bundle(text)
    """
)


def big_digest(seed: str) -> str:
    """What ``write_big`` writes, hashed the same way (see FLOWS)."""
    digest = hashlib.sha256()
    for index in range(BIG_MIB):
        digest.update(
            index.to_bytes(4, "big") + hashlib.sha256(seed.encode()).digest() * 32767 + bytes(28)
        )
    return digest.hexdigest()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerStack]:
    directory = tmp_path_factory.mktemp("streams-assets")
    # The CLI's blob cache lives under TMPDIR: keep it (50 MB) inside the test's directory.
    env = {"TMPDIR": str(directory)}
    with worker_stack(directory, FLOWS, env=env, concurrency=4) as running:
        yield running


def steps(stack: WorkerStack, run_id: str, target: str) -> list[dict[str, Any]]:
    done = stack.cli("runs", "inspect", "--no-wait", "-o", "json", run_id)
    assert done.returncode == 0, done.stderr
    return [s for s in json.loads(done.stdout)["steps"].values() if s["target"] == target]


def asset_of(stack: WorkerStack, run_id: str, target: str) -> str:
    [step] = steps(stack, run_id, target)
    [asset_id] = step["executions"]["1"]["assets"]
    return str(asset_id)


def test_m163_a_workflow_produces_a_stream_while_blocked_on_its_consumer(
    stack: WorkerStack,
) -> None:
    run_id = stack.submit("produce_while_waiting", 20)
    assert value(stack.result(run_id)) == sum(range(20))
    [root] = steps(stack, run_id, "produce_while_waiting")
    execution = root["executions"]["1"]
    assert execution["streams"]["0"]["reason"] == "complete"
    [consumer] = steps(stack, run_id, "consume")
    dependency = next(iter(consumer["executions"]["1"]["dependencies"].values()))
    assert dependency["type"] == "stream" and dependency["pending"] is False


def test_a_50_mb_asset_passes_between_two_tasks(stack: WorkerStack) -> None:
    run_id = stack.submit("big_asset", "seed-1")
    expected = big_digest("seed-1")
    assert value(stack.result(run_id, timeout=120)) == f"{BIG_MIB * 1024 * 1024}:{expected}"
    inspected = json.loads(
        stack.cli("assets", "inspect", "-o", "json", asset_of(stack, run_id, "write_big")).stdout
    )
    assert inspected["entries"]["big.bin"]["size"] == BIG_MIB * 1024 * 1024
    assert inspected["entries"]["big.bin"]["blobKey"] == expected


def test_cli34_assets_inspect_shows_a_real_asset(stack: WorkerStack) -> None:
    run_id = stack.submit("bundle", "hello")
    stack.result(run_id)
    asset_id = asset_of(stack, run_id, "write_bundle")
    summary = hashlib.sha256(b"hello").hexdigest()

    as_json = stack.cli("assets", "inspect", "-o", "json", asset_id)
    assert as_json.returncode == 0, as_json.stderr
    found = json.loads(as_json.stdout)
    assert found["name"] == "bundle"
    assert set(found["entries"]) == {"report/summary.txt", "data.json"}
    assert found["entries"]["report/summary.txt"]["blobKey"] == summary
    assert found["entries"]["report/summary.txt"]["size"] == 5

    text = stack.cli("assets", "inspect", asset_id, "--match", "report/**")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[:2] == ["Name: bundle", "Matched 1 of 2 entries."]
    assert lines[2].split() == ["Path", "Size", "Type", "Blob", "key"]
    assert lines[3].split() == ["report/summary.txt", "5", "bytes", "text/plain", summary]

    missing = stack.cli("assets", "inspect", "Anope")
    assert (missing.returncode, missing.stderr.strip()) == (1, "asset 'Anope' not found")


def test_cli35_assets_download_writes_each_entry(stack: WorkerStack, tmp_path: Path) -> None:
    run_id = stack.submit("bundle", "downloaded")
    stack.result(run_id)
    asset_id = asset_of(stack, run_id, "write_bundle")
    to = tmp_path / "out"

    done = stack.cli("assets", "download", asset_id, "--to", str(to))
    assert done.returncode == 0, done.stderr
    assert (to / "report" / "summary.txt").read_text() == "downloaded"
    assert (to / "data.json").read_text() == '{"n": 1}'
    assert done.stdout.splitlines() == [
        "Downloading 2 files (18 bytes)...",
        "  data.json",
        "  report/summary.txt",
        "Download complete.",
    ]

    again = stack.cli("assets", "download", asset_id, "--to", str(to))
    assert again.returncode == 1
    assert again.stderr.startswith(f"file already exists at path: {to / 'data.json'}")
    (to / "data.json").write_text("changed")
    forced = stack.cli("assets", "download", asset_id, "--to", str(to), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (to / "data.json").read_text() == '{"n": 1}'

    nothing = stack.cli("assets", "download", asset_id, "--to", str(to), "--match", "*.csv")
    assert (nothing.returncode, nothing.stdout) == (0, "Nothing to download\n")


def test_cancelling_a_finished_run_through_the_cli_succeeds_and_keeps_its_result(
    stack: WorkerStack,
) -> None:
    run_id = stack.submit("bundle", "kept")
    before = stack.result(run_id)
    done = stack.cli("runs", "cancel", f"{run_id}:1:1")
    assert (done.returncode, done.stdout, done.stderr) == (0, "Execution cancelled.\n", "")
    assert stack.result(run_id) == before
