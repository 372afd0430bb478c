"""The 0.12 orchestration model end to end: the real server, real ``coflux worker`` processes
running the official SDK, and the CLI for everything a user does (submit, inspect, respond
to inputs, pause and resume workspaces, re-run steps).

One server and worker serve the whole module; each test starts its own runs. Test names
carry the ``semantics.md`` §15 checklist items they check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.support.eventually import eventually
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

COFLUX = Path(sys.executable).parent / "coflux"

FLOWS = textwrap.dedent(
    """
    import tempfile
    from pathlib import Path

    import coflux as cf


    @cf.task(cache=True)
    def square(x: int) -> int:
        return x * x


    @cf.workflow()
    def cached(x: int) -> int:
        return square(x)


    @cf.task(memo=True)
    def increment(x: int) -> int:
        return x + 1


    @cf.workflow()
    def memoised(x: int) -> list:
        first, second = increment.submit(x), increment.submit(x)
        return [first.id == second.id, first.result(), second.result()]


    @cf.task(defer=True, delay=0.3)
    def debounced(x: int) -> int:
        return x


    @cf.workflow()
    def deferred(x: int) -> list:
        first, second = debounced.submit(x), debounced.submit(x)
        return [first.result(), second.result()]


    approval = cf.Prompt("Deploy {version}?", model=bool, title="Deploy")


    @cf.workflow()
    def ask_and_wait(version: str) -> bool:
        return approval(version=version)


    @cf.workflow()
    def ask_and_suspend(version: str) -> bool:
        with cf.suspense(0):
            return approval(version=version)


    attempts = cf.Checkpoint("attempts", default=0)


    @cf.task(retries=1)
    def flaky() -> int:
        count = attempts.update(lambda n: n + 1)
        if count < 2:
            raise RuntimeError("first attempt fails")
        return count


    @cf.workflow()
    def checkpointed() -> int:
        return flaky()


    @cf.task(streams=cf.Streams(buffer=1))
    def numbers(n: int):
        for i in range(n):
            yield i


    @cf.task()
    def total(stream) -> int:
        return sum(stream)


    @cf.workflow()
    def streamed(n: int) -> int:
        return total(numbers(n))


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
        return read_asset(make_asset(text))


    @cf.workflow()
    def plain(x: int) -> int:
        return x * 10
    """
)


class Stack:
    """A server and the workers of a test module, driven through the CLI."""

    def __init__(self, server: ServerProcess, directory: Path) -> None:
        self.server = server
        self.directory = directory
        self.workers: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def env(self, workspace: str = "default") -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "COFLUX_HOST": f"localhost:{self.server.port}",
            "COFLUX_PROJECT": "test",
            "COFLUX_WORKSPACE": workspace,
            "COFLUX_LOGS_FLUSH_INTERVAL": "0",
        }

    def start_worker(self, workspace: str = "default", *, register: bool = True) -> None:
        log = open(self.directory / f"worker-{workspace}.log", "ab")  # noqa: SIM115 - closed in stop
        args = [str(COFLUX), "worker", "--concurrency", "8"]
        args += ["--register"] if register else []
        args += ["--adapter", f"{sys.executable},-m,coflux", "flows"]
        process = subprocess.Popen(
            args,
            cwd=self.directory,
            env=self.env(workspace),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append((process, log))

    def stop(self) -> None:
        for process, log in self.workers:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log.close()

    def cli(self, *args: str, workspace: str = "default") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(COFLUX), *args],
            cwd=self.directory,
            env=self.env(workspace),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def json(self, *args: str, workspace: str = "default") -> Any:
        done = self.cli(*args, "-o", "json", workspace=workspace)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def submit(self, target: str, *arguments: Any, workspace: str = "default") -> str:
        done = self.cli(
            "submit",
            "--no-wait",
            "-o",
            "json",
            f"flows/{target}",
            *map(json.dumps, arguments),
            workspace=workspace,
        )
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout)["runId"])

    def run(self, run_id: str, workspace: str = "default") -> Any:
        return self.json("runs", "inspect", "--no-wait", run_id, workspace=workspace)

    def result(self, run_id: str, *, workspace: str = "default", timeout: float = 30) -> Any:
        def finished() -> Any:
            done = self.cli("runs", "result", "-o", "json", run_id, workspace=workspace)
            if done.returncode != 0:
                assert "no result yet" in done.stderr, done.stderr
                return None
            result = json.loads(done.stdout)
            # Follow hand-offs (cached, spawned, ...) to the value they stand for.
            while result.get("type") in ("cached", "deferred", "spawned"):
                result = result.get("result")
                if result is None:
                    return None
            return result

        try:
            return eventually(finished, timeout=timeout, interval=0.1)
        except AssertionError:
            logs = "\n".join(
                path.read_text(errors="replace") for path in self.directory.glob("worker-*.log")
            )
            raise AssertionError(f"run {run_id} did not finish; worker logs:\n{logs}") from None

    def value(self, run_id: str, *, workspace: str = "default") -> Any:
        result = self.result(run_id, workspace=workspace)
        assert result["type"] == "value", result
        return result["value"]["data"]

    def steps(self, run_id: str, target: str, workspace: str = "default") -> list[dict[str, Any]]:
        run = self.run(run_id, workspace)
        return [step for step in run["steps"].values() if step["target"] == target]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("features")
    (directory / "flows.py").write_text(FLOWS)
    server = ServerProcess(directory / "data")
    server.start()
    stack = Stack(server, directory)
    stack.start_worker()
    eventually(
        lambda: (
            "flows" in json.loads(stack.cli("manifests", "inspect", "-o", "json").stdout or "{}")
        ),
        timeout=30,
        interval=0.1,
    )
    try:
        yield stack
    finally:
        stack.stop()
        server.stop()
    assert not server.tracebacks(), "\n\n".join(server.tracebacks())


def test_c46_a_cached_task_is_reused_by_a_later_run(stack: Stack) -> None:
    first = stack.submit("cached", 7)
    assert stack.value(first) == 49
    second = stack.submit("cached", 7)
    assert stack.value(second) == 49
    [step] = stack.steps(second, "square")
    result = step["executions"]["1"]["result"]
    assert result["type"] == "cached"
    assert result["execution"]["executionId"].startswith(first)
    assert result["result"]["value"]["data"] == 49
    assert step["cacheKey"] is not None and len(step["cacheKey"]) == 10


def test_c48_memoised_submissions_within_a_run_share_one_execution(stack: Stack) -> None:
    run_id = stack.submit("memoised", 1)
    assert stack.value(run_id) == [True, 2, 2]
    assert len(stack.steps(run_id, "increment")) == 1


def test_b25_deferred_duplicates_run_once(stack: Stack) -> None:
    run_id = stack.submit("deferred", 5)
    assert stack.value(run_id) == [5, 5]
    results = sorted(
        step["executions"]["1"]["result"]["type"] for step in stack.steps(run_id, "debounced")
    )
    assert results == ["deferred", "value"]


def wait_for_input(stack: Stack, run_id: str) -> str:
    def listed() -> str | None:
        found = stack.json("inputs", "list", "--run", run_id)
        return next(iter(found), None)

    input_id: str = eventually(listed, timeout=30, interval=0.1)
    return input_id


def test_f79_f89_an_input_is_answered_through_the_cli_after_a_rejected_response(
    stack: Stack,
) -> None:
    run_id = stack.submit("ask_and_wait", "1.2")
    input_id = wait_for_input(stack, run_id)
    inspected = stack.json("inputs", "inspect", input_id)
    assert inspected["template"] == "Deploy {version}?"
    assert json.loads(inspected["schema"]) == {"type": "boolean"}
    refused = stack.cli("inputs", "respond", input_id, '"yes"')
    assert refused.returncode == 1
    assert "validation_failed" in refused.stderr
    done = stack.cli("inputs", "respond", input_id, "true")
    assert done.returncode == 0, done.stderr
    assert stack.value(run_id) is True
    again = stack.cli("inputs", "respond", input_id, "false")
    assert again.returncode == 1
    assert "already_responded" in again.stderr


def test_f85_a_suspended_prompt_resumes_in_a_new_attempt(stack: Stack) -> None:
    run_id = stack.submit("ask_and_suspend", "2.0")
    input_id = wait_for_input(stack, run_id)

    def suspended() -> bool:
        root = stack.run(run_id)["steps"][f"{run_id}:1"]["executions"]["1"]
        return root["completion"] is not None and root["completion"]["kind"] == "suspended"

    eventually(suspended, timeout=30, interval=0.1)
    assert stack.cli("inputs", "respond", input_id, "false").returncode == 0
    assert stack.value(run_id) is False
    executions = stack.run(run_id)["steps"][f"{run_id}:1"]["executions"]
    assert set(executions) == {"1", "2"}


def test_f80_a_dismissed_prompt_fails_the_run(stack: Stack) -> None:
    run_id = stack.submit("ask_and_wait", "3.0")
    input_id = wait_for_input(stack, run_id)
    assert stack.cli("inputs", "dismiss", input_id).returncode == 0
    result = stack.result(run_id)
    assert result["type"] == "error"
    assert "InputDismissed" in result["error"]["type"]


def test_l134_a_checkpoint_survives_a_retry(stack: Stack) -> None:
    run_id = stack.submit("checkpointed")
    assert stack.value(run_id) == 2
    [step] = stack.steps(run_id, "flaky")
    second = step["executions"]["2"]["checkpoints"]
    assert second["before"]["attempts"]["data"] == 1
    assert second["after"]["attempts"]["data"] == 2


def test_m151_a_generator_task_streams_to_its_consumer(stack: Stack) -> None:
    run_id = stack.submit("streamed", 6)
    assert stack.value(run_id) == 15
    [producer] = stack.steps(run_id, "numbers")
    execution = producer["executions"]["1"]
    assert execution["completion"]["kind"] == "succeeded"
    assert execution["streams"]["0"]["reason"] == "complete"
    [consumer] = stack.steps(run_id, "total")
    dependency = next(iter(consumer["executions"]["1"]["dependencies"].values()))
    assert dependency["type"] == "stream" and dependency["pending"] is False


def test_j131_an_asset_is_persisted_read_back_and_inspected(stack: Stack) -> None:
    run_id = stack.submit("assets", "hello")
    assert stack.value(run_id) == "hello"
    [maker] = stack.steps(run_id, "make_asset")
    [asset_id] = maker["executions"]["1"]["assets"]
    inspected = stack.json("assets", "inspect", asset_id)
    assert inspected["name"] == "greeting"
    assert inspected["entries"]["greeting.txt"]["size"] == 5


def test_e70_a_paused_workspace_holds_runs_until_resumed(stack: Stack) -> None:
    assert stack.cli("workspaces", "pause").returncode == 0
    try:
        run_id = stack.submit("plain", 4)
        # Assignment would have happened with the submission itself.
        root = stack.run(run_id)["steps"][f"{run_id}:1"]["executions"]["1"]
        assert root["assignedAt"] is None
    finally:
        assert stack.cli("workspaces", "resume").returncode == 0
    assert stack.value(run_id) == 40


def test_e73_c49_a_derived_workspace_inherits_manifests_and_cache_and_reruns_base_steps(
    stack: Stack,
) -> None:
    base_run = stack.submit("cached", 9)
    assert stack.value(base_run) == 81
    created = stack.cli("workspaces", "create", "derived", "--base", "default")
    assert created.returncode == 0, created.stderr
    stack.start_worker("derived", register=False)
    # Submitting needs the workflow's manifest: inherited from the base.
    derived_run = stack.submit("cached", 9, workspace="derived")
    assert stack.value(derived_run, workspace="derived") == 81
    [step] = stack.steps(derived_run, "square", workspace="derived")
    assert step["executions"]["1"]["result"]["type"] == "cached"
    # A step of a run in the base is re-run in the derived workspace.
    rerun = stack.json("runs", "rerun", "--no-wait", f"{base_run}:1", workspace="derived")
    assert rerun["attempt"] == 2

    def rerun_finished() -> bool:
        run = stack.run(base_run, workspace="derived")
        attempt = run["steps"][f"{base_run}:1"]["executions"].get("2")
        return attempt is not None and attempt["completion"] is not None

    eventually(rerun_finished, timeout=30, interval=0.1)
    run = stack.run(base_run, workspace="derived")
    assert (
        run["steps"][f"{base_run}:1"]["executions"]["2"]["workspaceId"]
        != run["steps"][f"{base_run}:1"]["executions"]["1"]["workspaceId"]
    )
    assert stack.value(base_run, workspace="derived") == 81
    # The base workspace does not see the derived attempt.
    assert set(stack.run(base_run)["steps"][f"{base_run}:1"]["executions"]) == {"1"}
