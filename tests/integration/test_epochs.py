"""Orchestration epochs end to end: the real server, a real ``coflux worker`` running the
official SDK, the CLI, and ``POST /api/rotate_epoch`` (``semantics.md`` §11.3-11.5;
checklist I 115-126, auth-and-config 14, 16, 35, 48).

One server and worker serve the module; every test starts its own runs and rotates as
often as it needs. Names carry the checklist items they check.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.eventually import eventually
from tests.support.server import ServerProcess
from tests.support.worker_stack import WorkerStack, value

pytestmark = pytest.mark.integration

SUPER = "epochs-super-token"
PROJECT = "test"

FLOWS = textwrap.dedent(
    """
    import tempfile
    import time
    from pathlib import Path

    import coflux as cf


    @cf.task()
    def add(a: int, b: int) -> int:
        return a + b


    @cf.workflow()
    def plain(x: int) -> int:
        cf.log_info("plain got {x}", x=x)
        return add(x, 1)


    @cf.task(cache=True)
    def square(x: int) -> int:
        return x * x


    @cf.workflow()
    def cached(x: int) -> int:
        return square(x)


    @cf.task()
    def make_asset(text: str):
        path = Path(tempfile.mkdtemp()) / "greeting.txt"
        path.write_text(text)
        return cf.asset(path, name="greeting")


    @cf.task()
    def read_asset(asset) -> str:
        return asset["greeting.txt"].read().decode()


    @cf.workflow()
    def assets(text: str) -> str:
        cf.log_info("asset for {text}", text=text)
        return read_asset(make_asset(text))


    @cf.task()
    def slow(seconds: float, x: int) -> int:
        time.sleep(seconds)
        return x


    @cf.workflow()
    def slow_flow(seconds: float, x: int) -> int:
        cf.log_info("slow {x}", x=x)
        return slow(seconds, x) * 2


    @cf.workflow()
    def child_flow(x: int) -> int:
        return x + 100


    @cf.workflow()
    def parent_flow(x: int) -> int:
        return child_flow(x)
    """
)


TEMPLATES = {"plain": "plain got {x}", "assets": "asset for {text}", "slow_flow": "slow {x}"}


class Stack(WorkerStack):
    def api(self, name: str, body: dict[str, Any], token: str | None = SUPER) -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.post(
            f"{self.server.url}/api/{name}", json=body, headers=headers, timeout=60, trust_env=False
        )

    def rotate(self) -> None:
        response = self.api("rotate_epoch", {})
        assert response.status_code == 204, response.text

    def topic(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.get(
            f"{self.server.url}/topics/{path}", headers=headers, timeout=30, trust_env=False
        )

    def workspace_id(self) -> str:
        workspaces = self.topic("workspaces").json()
        return str(next(w for w, v in workspaces.items() if v["name"] == "default"))

    def run_topic(self, run_id: str) -> dict[str, Any]:
        response = self.topic(f"workspaces/{self.workspace_id()}/runs/{run_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def logs(self, run_id: str) -> list[dict[str, Any]]:
        done = self.cli("logs", "-o", "json", run_id)
        assert done.returncode == 0, done.stderr
        return list(json.loads(done.stdout)["logs"])

    @property
    def project_dir(self) -> Path:
        return self.server.data_dir / "projects" / PROJECT

    def active_runs(self) -> set[str]:
        path = self.project_dir / "orchestration.sqlite"
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return {row[0] for row in db.execute("SELECT external_id FROM runs")}
        finally:
            db.close()

    def index(self) -> dict[str, Any]:
        path = self.project_dir / "orchestration" / "index.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def indexed(self) -> None:
        """Wait until every archive has its Bloom filters."""
        eventually(lambda: all(v[0] is not None for v in self.index().values()), timeout=30)

    def wait_logged(self, run_id: str, count: int) -> list[dict[str, Any]]:
        return list(
            eventually(
                lambda: (lambda lines: lines if len(lines) >= count else None)(self.logs(run_id)),
                timeout=30,
            )
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("epochs")
    (directory / "flows.py").write_text(FLOWS)
    server = ServerProcess(
        directory / "data",
        env={
            "COFLUX_SUPER_TOKEN_HASH": hashlib.sha256(SUPER.encode()).hexdigest(),
            "COFLUX_SECRET": "epochs-secret",
        },
    )
    server.start()
    stack = Stack(server=server, directory=directory, concurrency=8)
    try:
        stack.start_worker()
        yield stack
    finally:
        stack.stop()
        server.stop()
    assert not server.tracebacks(), "\n\n".join(server.tracebacks())


def test_123_35_rotate_epoch_needs_the_super_token(stack: Stack) -> None:
    refused = stack.api("rotate_epoch", {}, token=None)
    assert refused.status_code == 403
    assert stack.api("rotate_epoch", {}, token="not-the-super-token").status_code in (401, 403)


def test_115_124_14_rotation_archives_the_file_and_the_server_keeps_working(
    stack: Stack,
) -> None:
    before = set(stack.index())
    stack.rotate()
    stack.rotate()
    archived = sorted(set(stack.index()) - before)
    assert len(archived) == 2
    for epoch_id in archived:
        assert re.fullmatch(r"\d{8}_\d{4}", epoch_id)
        assert (stack.project_dir / "orchestration" / f"{epoch_id}.sqlite").is_file()
    first, second = archived
    assert first[:8] == second[:8] or second.endswith("_0001")
    if first[:8] == second[:8]:
        assert int(second[9:]) == int(first[9:]) + 1
    assert list(stack.index()) == sorted(stack.index(), reverse=True)
    assert (stack.project_dir / "orchestration.sqlite").is_file()
    assert stack.run("plain", 1) == 2


def test_16_116_125_a_completed_run_stays_readable_and_re_runnable(stack: Stack) -> None:
    run_id = stack.submit("plain", 41)
    assert value(stack.result(run_id)) == 42
    stack.rotate()
    assert run_id not in stack.active_runs()
    # Read-only from the archive: the run topic, the CLI's result, the logs.
    assert stack.run_topic(run_id)["steps"][f"{run_id}:1"]["target"] == "plain"
    assert value(stack.result(run_id)) == 42
    assert [entry for entry in stack.logs(run_id) if "plain got" in json.dumps(entry)]
    listed = stack.topic(f"workspaces/{stack.workspace_id()}/workflows/flows/plain").json()
    assert run_id in listed["runs"]  # the run list reaches into the newest archives
    assert run_id not in stack.active_runs()
    # The manifest and the worker's session survived: a re-run is executed again.
    manifests = json.loads(stack.cli("manifests", "inspect", "-o", "json").stdout)
    assert "plain" in json.dumps(manifests["flows"])
    done = stack.cli("runs", "rerun", "--no-wait", "-o", "json", f"{run_id}:1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["attempt"] == 2
    assert run_id in stack.active_runs()

    def second_attempt() -> Any:
        execution = stack.run_topic(run_id)["steps"][f"{run_id}:1"]["executions"].get("2")
        result = None if execution is None else execution.get("result")
        return result if result is not None and result.get("type") == "value" else None

    assert eventually(second_attempt, timeout=30)["value"]["data"] == 42


def test_117_120_a_cache_hit_comes_from_the_oldest_of_three_epochs(stack: Stack) -> None:
    first = stack.submit("cached", 12)
    assert value(stack.result(first)) == 144
    for _ in range(3):
        stack.rotate()
    stack.indexed()
    second = stack.submit("cached", 12)
    assert value(stack.result(second)) == 144
    [step] = [s for s in stack.run_topic(second)["steps"].values() if s["target"] == "square"]
    result = step["executions"]["1"]["result"]
    assert result["type"] == "cached"
    assert result["execution"]["executionId"].startswith(first)


def test_118_re_running_a_child_run_copies_its_parent_run(stack: Stack) -> None:
    parent = stack.submit("parent_flow", 5)
    result = stack.result(parent)
    while result.get("type") == "spawned":
        result = result["result"]
    assert result["value"]["data"] == 105
    steps = stack.run_topic(parent)["steps"]
    [call] = [s for s in steps.values() if s["target"] == "child_flow"]
    spawned = call["executions"]["1"]["result"]["execution"]["executionId"]
    child = spawned.split(":")[0]
    assert child != parent
    stack.rotate()
    assert {parent, child}.isdisjoint(stack.active_runs())
    done = stack.cli("runs", "rerun", "--no-wait", "-o", "json", f"{child}:1")
    assert done.returncode == 0, done.stderr
    assert {parent, child} <= stack.active_runs()


def test_121_an_asset_keeps_its_blobs_across_epochs(stack: Stack) -> None:
    run_id = stack.submit("assets", "hello")
    assert value(stack.result(run_id)) == "hello"
    steps = stack.run_topic(run_id)["steps"]
    [maker] = [s for s in steps.values() if s["target"] == "make_asset"]
    [asset_id] = maker["executions"]["1"]["assets"]
    before = stack.topic(f"asset/{asset_id}").json()
    stack.rotate()
    [reader] = [k for k, s in steps.items() if s["target"] == "read_asset"]
    done = stack.cli("runs", "rerun", "--no-wait", "-o", "json", reader)
    assert done.returncode == 0, done.stderr

    def reread() -> Any:
        execution = stack.run_topic(run_id)["steps"][reader]["executions"].get("2")
        result = None if execution is None else execution.get("result")
        return result if result is not None and result.get("type") == "value" else None

    assert eventually(reread, timeout=30)["value"]["data"] == "hello"
    assert stack.topic(f"asset/{asset_id}").json() == before


def test_122_an_idempotency_key_is_honoured_across_epochs(stack: Stack) -> None:
    body = {
        "workspaceId": stack.workspace_id(),
        "module": "flows",
        "target": "plain",
        "arguments": [["json", "3"]],
        "idempotencyKey": "epochs-122",
    }
    first = stack.api("submit_workflow", body)
    assert first.status_code == 200, first.text
    stack.rotate()
    stack.rotate()
    again = stack.api("submit_workflow", body)
    assert again.status_code == 200, again.text
    assert again.json()["runId"] == first.json()["runId"]


def test_48_service_tokens_keep_working_after_rotation_and_restart(stack: Stack) -> None:
    created = stack.api("create_token", {"name": "epochs"})
    assert created.status_code == 200, created.text
    token = created.json()["token"]
    assert stack.topic("workspaces", token=token).status_code == 200
    stack.rotate()
    assert stack.topic("workspaces", token=token).status_code == 200
    stack.server.restart(kill=False)
    assert stack.topic("workspaces", token=token).status_code == 200
    assert stack.topic("workspaces", token="cflx_" + "0" * 40).status_code == 401


def test_rotations_under_a_running_workload_lose_nothing(stack: Stack) -> None:
    """The issue's "done when": rotate several times while runs are in flight; every run,
    result, log line and asset stays readable."""
    runs: dict[str, Any] = {}
    for i in range(5):
        # A workflow holds a worker slot while it waits for its task: a few runs at a time.
        batch = {
            stack.submit("slow_flow", 0.5, i): i * 2,
            stack.submit("plain", i): i + 1,
            stack.submit("assets", f"text-{i}"): f"text-{i}",
        }
        stack.rotate()  # while they run
        for run_id, expected in batch.items():
            assert value(stack.result(run_id, timeout=60)) == expected, run_id
        runs.update(batch)
    stack.rotate()
    stack.indexed()
    for run_id, expected in runs.items():
        assert value(stack.result(run_id)) == expected, run_id
        target = stack.run_topic(run_id)["steps"][f"{run_id}:1"]["target"]
        [logged] = stack.wait_logged(run_id, 1)
        assert logged["template"] == TEMPLATES[target], logged
        if target == "assets":
            steps = stack.run_topic(run_id)["steps"]
            [maker] = [s for s in steps.values() if s["target"] == "make_asset"]
            [asset_id] = maker["executions"]["1"]["assets"]
            asset = stack.topic(f"asset/{asset_id}").json()
            [entry] = asset["entries"].values()
            blob = httpx.get(
                f"{stack.server.url}/blobs/{entry['blobKey']}", timeout=30, trust_env=False
            )
            assert blob.content == expected.encode()


def test_a_server_killed_around_rotations_loses_no_accepted_run(stack: Stack) -> None:
    finished: dict[str, int] = {}
    in_flight: list[str] = []
    for round_ in range(3):
        for i in range(3):
            run_id = stack.submit("plain", 10 * round_ + i)
            assert value(stack.result(run_id, timeout=60)) == 10 * round_ + i + 1
            finished[run_id] = 10 * round_ + i + 1
        in_flight.append(stack.submit("plain", 0))  # accepted just before the crash
        # Rotate and SIGKILL the process while the rotation may still be under way.
        rotating = threading.Thread(target=lambda: _ignore_errors(stack.rotate), daemon=True)
        rotating.start()
        stack.server.restart(kill=True)
        rotating.join(30)
    for run_id, expected in finished.items():
        assert value(stack.result(run_id)) == expected, run_id
    for run_id in in_flight:
        # Its workflow may have failed (its worker was cut off), but the run is there.
        assert stack.result(run_id, timeout=60)["type"] in ("value", "error")
    stack.rotate()
    for run_id, expected in finished.items():
        assert value(stack.result(run_id)) == expected, run_id
    stack.indexed()  # archives left unindexed by a kill were queued again at start-up


def test_a_rotation_cut_short_after_the_rename_is_finished_at_start(stack: Stack) -> None:
    """The process dies after the active file was archived but before the new one was
    seeded: at start the server seeds it, and nothing accepted is lost."""
    done = stack.submit("plain", 70)
    assert value(stack.result(done)) == 71
    running = stack.submit("slow_flow", 3.0, 7)
    stack.server.kill()
    # What the rotation had done when it died: index entry, rename, nothing more.
    archive_dir = stack.project_dir / "orchestration"
    epoch_id = max(stack.index())
    cut_short = f"{epoch_id[:9]}{int(epoch_id[9:]) + 1:04d}"
    index = stack.index()
    index[cut_short] = [None, 0]
    (archive_dir / "index.json").write_text(json.dumps(index))
    db = sqlite3.connect(stack.project_dir / "orchestration.sqlite")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("PRAGMA journal_mode=DELETE")
    db.close()
    (stack.project_dir / "orchestration.sqlite").rename(archive_dir / f"{cut_short}.sqlite")
    stack.server.start()
    assert running in stack.active_runs()  # carried forward: it had live executions
    assert stack.result(running, timeout=60)["type"] in ("value", "error")
    assert value(stack.result(done)) == 71
    assert stack.run("plain", 1) == 2


def _ignore_errors(fn: Any) -> None:
    try:
        fn()
    except (AssertionError, httpx.HTTPError):
        pass


def test_126_an_idle_project_stops_and_restarts_on_the_next_request(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"COFLUX_PROJECT_IDLE_TIMEOUT": "1"})
    server.start()
    try:
        created = httpx.post(
            f"{server.url}/api/create_workspace", json={"name": "idle"}, trust_env=False
        )
        assert created.status_code == 200, created.text
        eventually(lambda: "idle for" in server.log(), timeout=30)
        workspaces = httpx.get(f"{server.url}/topics/workspaces", trust_env=False)
        assert workspaces.status_code == 200
        assert [w["name"] for w in workspaces.json().values()] == ["idle"]
    finally:
        server.stop()
    assert not server.tracebacks(), "\n\n".join(server.tracebacks())
