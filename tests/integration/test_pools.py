"""Pools end to end: the API (server-api.md §4.4) and workers launched by the process
launcher - a real ``coflux worker`` with the official SDK adapter, started by the server.

The server runs launched workers through a wrapper script (``COFLUX_CLI_PATH``) that
records each worker's pid, arguments, directory and environment before it execs the
real ``coflux``, so the tests can check what the launcher passed and clean up after.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.eventually import eventually
from tests.support.server import ServerProcess, running_server
from tests.support.worker_stack import COFLUX, WorkerStack, value

pytestmark = pytest.mark.integration

FLOWS = textwrap.dedent(
    """
    import os

    import coflux as cf


    @cf.task()
    def add(a: int, b: int) -> int:
        return a + b


    @cf.workflow()
    def sequential(x: int) -> int:
        return add(x, 1) * 2


    @cf.task()
    def explode(message: str) -> None:
        raise ValueError(message)


    @cf.workflow()
    def failing(message: str) -> None:
        explode(message)


    @cf.workflow()
    def greeting() -> str:
        return os.environ.get("FLOWS_GREETING", "")
    """
)

WRAPPER = """#!/bin/sh
echo $$ >> "{dir}/pids"
env > "{dir}/env-$$.txt"
pwd > "{dir}/pwd-$$.txt"
echo "$@" > "{dir}/args-$$.txt"
exec "{coflux}" "$@"
"""

ADAPTER = [sys.executable, "-m", "coflux"]


def unique(prefix: str = "ws") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- The API ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("pools-api") / "data"
    with running_server(data, env={"COFLUX_LAUNCHER_TYPES": "process,docker"}) as server:
        yield server


@pytest.fixture
def api(api_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_server.url, trust_env=False, timeout=10) as client:
        yield client


@pytest.fixture
def ws(api: httpx.Client) -> str:
    response = api.post("/api/create_workspace", json={"name": unique()})
    assert response.status_code == 200, response.text
    workspace_id: str = response.json()["id"]
    return workspace_id


def call(api: httpx.Client, name: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return api.post(f"/api/{name}", json=body, **kwargs)


def pools_topic(api: httpx.Client, ws: str) -> Any:
    response = api.get(f"/topics/workspaces/{ws}/pools")
    assert response.status_code == 200, response.text
    return response.json()


DOCKER = {"type": "docker", "image": "acme/worker:1"}


def test_create_list_get_delete(api: httpx.Client, ws: str) -> None:
    pool = {"modules": ["app.flows"], "provides": {"gpu": True}, "launcher": DOCKER}
    created = call(api, "create_pool", {"workspaceId": ws, "poolName": "gpu", "pool": pool})
    assert created.status_code == 204, created.text
    again = call(api, "create_pool", {"workspaceId": ws, "poolName": "gpu", "pool": pool})
    assert (again.status_code, again.json()) == (409, {"error": "already_exists"})
    assert pools_topic(api, ws) == {
        "gpu": {
            "modules": ["app.flows"],
            "provides": {"gpu": ["true"]},
            "accepts": {},
            "launcher": DOCKER,
            "state": "active",
        }
    }
    topic = api.get(f"/topics/workspaces/{ws}/pools/gpu").json()
    assert topic == {"pool": pools_topic(api, ws)["gpu"], "workers": {}}
    deleted = call(api, "update_pool", {"workspaceId": ws, "poolName": "gpu", "pool": None})
    assert deleted.status_code == 204
    assert pools_topic(api, ws) == {}
    assert api.get(f"/topics/workspaces/{ws}/pools/gpu").status_code == 404
    missing = call(api, "update_pool", {"workspaceId": ws, "poolName": "gpu", "pool": {}})
    assert (missing.status_code, missing.json()) == (404, {"error": "not_found"})


@pytest.mark.parametrize(
    ("body", "details"),
    [
        ({"poolName": "9x", "pool": {}}, {"pool_name": "invalid"}),
        ({"poolName": "a" * 21, "pool": {}}, {"pool_name": "invalid"}),
        ({"poolName": "ok"}, {"pool": "required"}),
        ({"poolName": "ok", "pool": {"modules": ["bad-name"]}}, {"pool": "invalid"}),
        ({"poolName": "ok", "pool": {"launcher": {"type": "kubernetes", "image": "i"}}}, None),
        ({"poolName": "ok", "pool": {"launcher": {"type": "docker"}}}, None),
        ({"poolName": "ok", "pool": {"launcher": {**DOCKER, "env": {"COFLUX_X": "1"}}}}, None),
        ({"poolName": "ok", "pool": {"launcher": {**DOCKER, "adapter": []}}}, None),
        ({"poolName": "ok", "pool": {"launcher": {**DOCKER, "concurrency": 0}}}, None),
    ],
)
def test_invalid_input(
    api: httpx.Client, ws: str, body: dict[str, Any], details: dict[str, str] | None
) -> None:
    response = call(api, "create_pool", {"workspaceId": ws, **body})
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "bad_request", "details": details or {"pool": "invalid"}}


def test_unknown_workspace(api: httpx.Client) -> None:
    body = {"workspaceId": "Wnope", "poolName": "a", "pool": {}}
    assert call(api, "create_pool", body).status_code == 404
    assert call(api, "get_pools", {"workspaceId": "Wnope"}).status_code == 404


def test_launcherless_pool_is_always_allowed(api: httpx.Client, ws: str) -> None:
    body = {"workspaceId": ws, "poolName": "plain", "pool": {"modules": "app"}}
    assert call(api, "create_pool", body).status_code == 204
    assert call(api, "get_pools", {"workspaceId": ws}).json() == {"plain": {"modules": ["app"]}}


def test_update_patches_and_merges_the_launcher(api: httpx.Client, ws: str) -> None:
    launcher = {**DOCKER, "adapter": ["python", "-m", "coflux"], "concurrency": 3}
    launcher["env"] = {"A": "1", "B": "2"}
    pool = {"modules": ["a"], "launcher": launcher}
    call(api, "create_pool", {"workspaceId": ws, "poolName": "p", "pool": pool})
    exported = call(api, "get_pools", {"workspaceId": ws}).json()["p"]
    assert exported["launcher"] == launcher
    patch = {"modules": ["b"], "launcher": {"concurrency": 5, "env": {"A": None, "C": "3"}}}
    updated = call(api, "update_pool", {"workspaceId": ws, "poolName": "p", "pool": patch})
    assert updated.status_code == 204, updated.text
    exported = call(api, "get_pools", {"workspaceId": ws}).json()["p"]
    assert exported == {
        "modules": ["b"],
        "launcher": {**launcher, "concurrency": 5, "env": {"B": "2", "C": "3"}},
    }
    change = {"launcher": {"type": "process", "directory": "/tmp"}}
    refused = call(api, "update_pool", {"workspaceId": ws, "poolName": "p", "pool": change})
    assert (refused.status_code, refused.json()) == (409, {"error": "type_change"})


def test_disable_and_enable(api: httpx.Client, ws: str) -> None:
    call(api, "create_pool", {"workspaceId": ws, "poolName": "p", "pool": {}})
    assert call(api, "disable_pool", {"workspaceId": ws, "poolName": "p"}).status_code == 204
    assert pools_topic(api, ws)["p"]["state"] == "disabled"
    assert call(api, "enable_pool", {"workspaceId": ws, "poolName": "p"}).status_code == 204
    assert pools_topic(api, ws)["p"]["state"] == "active"
    assert call(api, "disable_pool", {"workspaceId": ws, "poolName": "nope"}).status_code == 404


def test_bulk_replace_with_etag(api: httpx.Client, ws: str) -> None:
    call(api, "create_pool", {"workspaceId": ws, "poolName": "old", "pool": {}})
    response = call(api, "get_pools", {"workspaceId": ws})
    etag = response.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    desired = {"new": {"modules": ["x"], "launcher": DOCKER}}
    body = {"workspaceId": ws, "pools": desired}
    applied = call(api, "update_pools", body, headers={"If-Match": etag})
    assert applied.status_code == 204, applied.text
    assert set(pools_topic(api, ws)) == {"new"}
    stale = call(api, "update_pools", {"workspaceId": ws, "pools": {}}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert stale.json() == {
        "error": "conflict",
        "details": {"message": "Pool configuration has changed"},
    }
    assert call(api, "update_pools", {"workspaceId": ws, "pools": {}}).status_code == 204
    assert pools_topic(api, ws) == {}


def test_topic_hides_secrets_that_get_pools_exports(api: httpx.Client, ws: str) -> None:
    launcher = {"type": "kubernetes", "image": "i", "token": "secret", "namespace": "n"}
    body = {"workspaceId": ws, "poolName": "k", "pool": {"launcher": launcher}}
    # kubernetes is not enabled on this server
    assert call(api, "create_pool", body).status_code == 400


def test_stop_unknown_worker(api: httpx.Client, ws: str) -> None:
    response = call(api, "stop_worker", {"workspaceId": ws, "workerId": str(uuid.uuid4())})
    assert (response.status_code, response.json()) == (404, {"error": "not_found"})


# --- Launching with the process launcher ----------------------------------------------------


class LaunchStack(WorkerStack):
    """A server whose process launcher starts workers in ``directory``; the CLI is set to
    one workspace of its own."""

    def pool_topic(self, workspace_id: str, name: str) -> Any:
        with httpx.Client(trust_env=False, timeout=10) as client:
            response = client.get(
                f"{self.server.url}/topics/workspaces/{workspace_id}/pools/{name}"
            )
        return response.json() if response.status_code == 200 else None

    def topic(self, path: str) -> Any:
        with httpx.Client(trust_env=False, timeout=10) as client:
            response = client.get(f"{self.server.url}/topics/{path}")
        assert response.status_code == 200, response.text
        return response.json()

    def workspace_id(self) -> str:
        done = self.cli("workspaces", "list", "-o", "json")
        assert done.returncode == 0, done.stderr
        for workspace_id, workspace in json.loads(done.stdout).items():
            if workspace["name"] == self.extra_env["COFLUX_WORKSPACE"]:
                return str(workspace_id)
        raise AssertionError("workspace not found")

    def launched(self) -> list[int]:
        path = self.directory / "pids"
        return [int(line) for line in path.read_text().split()] if path.exists() else []

    def recorded(self, kind: str, pid: int) -> str:
        return (self.directory / f"{kind}-{pid}.txt").read_text()

    def kill_launched(self) -> None:
        for pid in self.launched():
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture(scope="module")
def launch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    directory = tmp_path_factory.mktemp("pools-launch")
    (directory / "flows.py").write_text(FLOWS)
    (directory / "worker.log").write_text("")
    wrapper = directory / "launch.sh"
    wrapper.write_text(WRAPPER.format(dir=directory, coflux=COFLUX))
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    env = {
        "COFLUX_LAUNCHER_TYPES": "process",
        "COFLUX_CLI_PATH": str(wrapper),
        "COFLUX_SECRET": "server-only-secret",
    }
    server = ServerProcess(directory / "data", env=env)
    server.start()
    try:
        yield server, directory
    finally:
        server.stop()
        stack = LaunchStack(server=server, directory=directory)
        stack.kill_launched()
    assert not server.tracebacks(), "\n\n".join(server.tracebacks())


@pytest.fixture
def stack(launch_server: tuple[ServerProcess, Path]) -> LaunchStack:
    server, directory = launch_server
    workspace = unique()
    stack = LaunchStack(
        server=server,
        directory=directory,
        extra_env={
            "COFLUX_WORKSPACE": workspace,
            "COFLUX_WORKER_ADAPTER": ",".join(ADAPTER),
        },
    )
    done = stack.cli("manifests", "register", "flows")
    assert done.returncode == 0, done.stderr
    return stack


def create_pool(stack: LaunchStack, name: str, *flags: str) -> None:
    done = stack.cli(
        "pools",
        "create",
        name,
        "--type",
        "process",
        "--modules",
        "flows",
        "--set",
        f"directory={stack.directory}",
        "--set",
        f"adapter={json.dumps(ADAPTER)}",
        "--set",
        "concurrency=2",
        "--set",
        "env.FLOWS_GREETING=hello",
        *flags,
    )
    assert done.returncode == 0, done.stderr


def only_worker(stack: LaunchStack, workspace_id: str, pool: str) -> tuple[str, dict[str, Any]]:
    topic = stack.pool_topic(workspace_id, pool)
    assert topic is not None
    assert len(topic["workers"]) == 1, topic["workers"]
    ((worker_id, worker),) = topic["workers"].items()
    return worker_id, worker


def test_launched_worker_runs_work_then_drains_and_stops(stack: LaunchStack) -> None:
    create_pool(stack, "cpu", "--provides", "gpu:yes")
    workspace_id = stack.workspace_id()
    before = set(stack.launched())
    # Two runs before any worker is up: one launch serves both (no second launch while
    # the first worker is pending).
    first = stack.submit("sequential", 1)
    greeting = stack.submit("greeting")
    worker_id, _ = only_worker(stack, workspace_id, "cpu")
    assert value(stack.result(first, timeout=60)) == 4  # with a child task
    assert value(stack.result(greeting)) == "hello"  # the launcher's env reached it
    # Reused, and provides satisfy requires.
    done = stack.cli(
        "submit", "--no-wait", "-o", "json", "--requires", "gpu:yes", "flows/sequential", "2"
    )
    assert done.returncode == 0, done.stderr
    assert value(stack.result(json.loads(done.stdout)["runId"])) == 6
    failed = stack.result(stack.submit("failing", "boom"))
    assert failed["type"] == "error" and failed["error"]["message"] == "boom"
    same_id, worker = only_worker(stack, workspace_id, "cpu")
    assert same_id == worker_id and worker["sessionId"] and worker["startedAt"]
    sessions = stack.topic(f"workspaces/{workspace_id}/sessions")
    session = sessions[worker["sessionId"]]
    assert (session["poolName"], session["workerState"]) == ("cpu", "active")
    assert session["executions"] == worker["executions"] >= 6
    # What the launcher ran, where, and with which environment.
    (pid,) = set(stack.launched()) - before
    assert stack.recorded("args", pid).split() == ["worker", "flows"]
    assert Path(stack.recorded("pwd", pid).strip()) == stack.directory
    env = dict(
        line.split("=", 1) for line in stack.recorded("env", pid).splitlines() if "=" in line
    )
    assert env["COFLUX_HOST"] == f"localhost:{stack.server.port}"
    assert env["COFLUX_PROJECT"] == "test"
    assert env["COFLUX_WORKSPACE"] == stack.extra_env["COFLUX_WORKSPACE"]
    assert env["COFLUX_SESSION"].startswith(worker["sessionId"] + ".")
    assert env["COFLUX_WORKER_ADAPTER"] == ",".join(ADAPTER)
    assert env["COFLUX_WORKER_CONCURRENCY"] == "2"
    assert env["FLOWS_GREETING"] == "hello"
    assert "COFLUX_SECRET" not in env
    # Idle for 5 s: drained, stopped, and deactivated once its process has exited.
    stopped = eventually(
        lambda: (
            only_worker(stack, workspace_id, "cpu")[1]["deactivatedAt"] is not None
            and only_worker(stack, workspace_id, "cpu")[1]
        ),
        timeout=90,
        interval=0.5,
    )
    assert stopped["stoppingAt"] is not None and stopped["error"] is None
    assert stopped["state"] is None and stopped["sessionId"] is None


def test_disabled_pool_launches_nothing_until_enabled_and_stop_worker(stack: LaunchStack) -> None:
    create_pool(stack, "off")
    assert stack.cli("pools", "disable", "off").returncode == 0
    workspace_id = stack.workspace_id()
    run_id = stack.submit("sequential", 5)
    # A launch would have been recorded with the submission itself.
    assert stack.pool_topic(workspace_id, "off")["workers"] == {}
    assert stack.cli("pools", "enable", "off").returncode == 0
    assert value(stack.result(run_id, timeout=60)) == 12
    worker_id, _ = only_worker(stack, workspace_id, "off")
    # Stopping it by hand drains it; with nothing running it is stopped and ends.
    with httpx.Client(base_url=stack.server.url, trust_env=False, timeout=10) as api:
        body = {"workspaceId": workspace_id, "workerId": worker_id}
        assert api.post("/api/stop_worker", json=body).status_code == 204
    worker = eventually(
        lambda: (w := only_worker(stack, workspace_id, "off")[1])["deactivatedAt"] and w,
        timeout=60,
        interval=0.5,
    )
    assert worker["stoppingAt"] is not None and worker["error"] is None


def test_failed_launch_is_reported(stack: LaunchStack) -> None:
    create_pool(stack, "broken", "--set", "directory=/nonexistent/dir")
    workspace_id = stack.workspace_id()
    stack.submit("sequential", 1)

    def failed() -> dict[str, Any] | None:
        worker = only_worker(stack, workspace_id, "broken")[1]  # one: launches are throttled
        return worker if worker["deactivatedAt"] is not None else None

    worker = eventually(failed)
    assert worker["startError"] == "launch_process_failed"
    assert worker["error"] == "launch_process_failed"
    listing = stack.cli("pools", "launches", "broken")
    assert listing.returncode == 0 and "failed" in listing.stdout


def test_launched_worker_survives_a_server_restart(stack: LaunchStack) -> None:
    create_pool(stack, "sturdy")
    workspace_id = stack.workspace_id()
    assert value(stack.result(stack.submit("sequential", 1), timeout=60)) == 4
    worker_id, _ = only_worker(stack, workspace_id, "sturdy")
    stack.server.restart()  # SIGKILL: the worker outlives the server and reconnects
    assert value(stack.result(stack.submit("sequential", 2), timeout=60)) == 6
    same_id, worker = only_worker(stack, workspace_id, "sturdy")
    assert same_id == worker_id and worker["deactivatedAt"] is None
    # Polled by pid now (the new server did not start it); once stopped it is gone.
    with httpx.Client(base_url=stack.server.url, trust_env=False, timeout=10) as api:
        body = {"workspaceId": workspace_id, "workerId": worker_id}
        assert api.post("/api/stop_worker", json=body).status_code == 204
    worker = eventually(
        lambda: (w := only_worker(stack, workspace_id, "sturdy")[1])["deactivatedAt"] and w,
        timeout=60,
        interval=0.5,
    )
    assert worker["error"] == "process_lost"  # its exit status went with the old server
