"""Launchers at their boundaries: the worker environment, and the Docker and Kubernetes
launchers against small local fakes of the Docker Engine API and the Kubernetes API that
record what they were asked (semantics.md §2.16, auth-and-config.md §11)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from pycoflux.server import config, launchers
from pycoflux.server.launchers import docker as docker_launcher
from pycoflux.server.launchers import kubernetes as kubernetes_launcher
from pycoflux.server.launchers import process as process_launcher
from tests.support.eventually import eventually

Response = tuple[int, Any]  # status and a JSON body (bytes are sent as they are)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class FakeApi:
    """Answers from ``routes`` (method, path regex, answer) and records every request."""

    routes: list[tuple[str, str, Callable[[Recorded], Response]]]
    requests: list[Recorded] = field(default_factory=list)
    address: str = ""

    def find(self, method: str, pattern: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]


@contextlib.contextmanager
def serve(routes: list[tuple[str, str, Callable[[Recorded], Response]]]) -> Iterator[FakeApi]:
    api = FakeApi(routes)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def handle_any(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw.strip() else None
            request = Recorded(self.command, parts.path, parse_qs(parts.query), body)
            api.requests.append(request)
            for method, pattern, answer in api.routes:
                if method == self.command and re.fullmatch(pattern, parts.path):
                    status, payload = answer(request)
                    break
            else:
                status, payload = 404, {"message": f"no route for {self.command} {parts.path}"}
            binary = isinstance(payload, bytes)
            data = payload if binary else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "text/plain" if binary else "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PUT = handle_any

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api.address = f"127.0.0.1:{server.server_address[1]}"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()


def request(launcher: dict[str, Any], modules: tuple[str, ...] = ("app.flows", "app.more")):
    return launchers.LaunchRequest(
        worker_id="3b0c1f5e-0000-4000-8000-000000000001",
        launcher=launcher,
        modules=modules,
        env={"COFLUX_HOST": "localhost:7777", "COFLUX_SESSION": "s.t", "EXTRA": "1"},
    )


# --- The environment ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("public_host", "port", "expected"),
    [
        ("%.example.com:8080", 7777, "acme.example.com:8080"),
        ("coflux.example.com", 7777, "coflux.example.com"),
        (None, 7777, "localhost:7777"),
        (None, 443, "localhost"),
    ],
)
def test_server_host(public_host: str | None, port: int, expected: str) -> None:
    settings = config.ServerConfig(public_host=public_host, port=port)
    assert launchers.server_host(settings, "acme") == expected


def test_worker_env() -> None:
    launcher = {
        "type": "process",
        "adapter": ["python", "-m", "coflux"],
        "concurrency": 4,
        "serverSecure": False,
        "env": {"A": "1"},
    }
    env = launchers.worker_env(
        launcher=launcher, host="h:1", project="p", workspace="prod/eu", session="x.y"
    )
    assert env == {
        "COFLUX_HOST": "h:1",
        "COFLUX_PROJECT": "p",
        "COFLUX_WORKSPACE": "prod/eu",
        "COFLUX_SESSION": "x.y",
        "COFLUX_WORKER_ADAPTER": "python,-m,coflux",
        "COFLUX_WORKER_CONCURRENCY": "4",
        "COFLUX_SECURE": "false",
        "A": "1",
    }
    overridden = launchers.worker_env(
        launcher={"serverHost": "other:9"}, host="h:1", project="p", workspace="w", session="s"
    )
    assert overridden["COFLUX_HOST"] == "other:9" and "COFLUX_SECURE" not in overridden


def test_tail_keeps_the_last_lines_within_the_limit() -> None:
    text = "\n".join(f"line {i}" for i in range(100))
    assert launchers.tail(text) == "\n".join(f"line {i}" for i in range(80, 100))
    assert len((launchers.tail("x" * 5000) or "").encode()) == launchers.LOG_BYTES


# --- Docker ---------------------------------------------------------------------------------


def docker_frames(text: str) -> bytes:
    """The Engine's multiplexed log stream: an 8-byte header per stdout frame."""
    payload = text.encode()
    return struct.pack(">BxxxL", 1, len(payload)) + payload


def docker_routes(state: dict[str, Any]) -> list[tuple[str, str, Callable[[Recorded], Response]]]:
    container = {"Id": "c0ffee", "Config": {"Tty": False}, "State": state}
    return [
        ("GET", r"/version", lambda r: (200, {"ApiVersion": "1.44", "Version": "25.0.0"})),
        ("POST", r"/v[\d.]+/containers/create", lambda r: (201, {"Id": "c0ffee", "Warnings": []})),
        ("POST", r"/v[\d.]+/containers/c0ffee/start", lambda r: (204, b"")),
        ("GET", r"/v[\d.]+/containers/c0ffee/json", lambda r: (200, container)),
        ("GET", r"/v[\d.]+/containers/c0ffee/logs", lambda r: (200, docker_frames("a\nb\n"))),
        ("POST", r"/v[\d.]+/containers/c0ffee/stop", lambda r: (204, b"")),
        ("DELETE", r"/v[\d.]+/containers/c0ffee", lambda r: (204, b"")),
    ]


async def test_docker_launch_creates_a_host_network_container() -> None:
    with serve(docker_routes({"Status": "running", "Running": True})) as api:
        launcher = {
            "type": "docker",
            "image": "acme/worker:1",
            "dockerHost": f"tcp://{api.address}",
        }
        data = await docker_launcher.DockerLauncher().launch(request(launcher))
    assert data == {"containerId": "c0ffee"}
    (create,) = api.find("POST", r"/containers/create$")
    assert create.body["Image"] == "acme/worker:1"
    assert create.body["Cmd"] == ["app.flows", "app.more"]
    assert create.body["HostConfig"]["NetworkMode"] == "host"
    assert sorted(create.body["Env"]) == [
        "COFLUX_HOST=localhost:7777",
        "COFLUX_SESSION=s.t",
        "EXTRA=1",
    ]
    assert api.find("POST", r"/containers/c0ffee/start$")


async def test_docker_poll_reports_exit_and_logs_then_removes() -> None:
    with serve(docker_routes({"Status": "exited", "ExitCode": 3, "OOMKilled": False})) as api:
        launcher = {"type": "docker", "image": "i", "dockerHost": f"tcp://{api.address}"}
        found = await docker_launcher.DockerLauncher().poll(launcher, {"containerId": "c0ffee"})
    assert found == launchers.PollResult(running=False, error="exit_code:3", logs="a\nb")
    (logs,) = api.find("GET", r"/logs$")
    assert logs.query["tail"] == ["20"]
    assert api.find("DELETE", r"/containers/c0ffee$")


async def test_docker_poll_running_and_oom() -> None:
    with serve(docker_routes({"Status": "running"})) as api:
        launcher = {"type": "docker", "image": "i", "dockerHost": f"tcp://{api.address}"}
        found = await docker_launcher.DockerLauncher().poll(launcher, {"containerId": "c0ffee"})
    assert found.running
    with serve(docker_routes({"Status": "exited", "ExitCode": 137, "OOMKilled": True})) as api:
        launcher = {"type": "docker", "image": "i", "dockerHost": f"tcp://{api.address}"}
        found = await docker_launcher.DockerLauncher().poll(launcher, {"containerId": "c0ffee"})
    assert found.error == "oom_killed"


async def test_docker_stop_and_a_lost_container() -> None:
    with serve(docker_routes({"Status": "running"})) as api:
        launcher = {"type": "docker", "image": "i", "dockerHost": f"tcp://{api.address}"}
        await docker_launcher.DockerLauncher().stop(launcher, {"containerId": "c0ffee"})
        lost = await docker_launcher.DockerLauncher().poll(launcher, {"containerId": "gone"})
    (stop,) = api.find("POST", r"/containers/c0ffee/stop$")
    assert stop.query["t"] == [str(docker_launcher.STOP_TIMEOUT)]
    assert lost == launchers.PollResult(running=False, error="process_lost")


async def test_docker_missing_image() -> None:
    routes = [
        ("GET", r"/version", lambda r: (200, {"ApiVersion": "1.44"})),
        ("POST", r"/v[\d.]+/containers/create", lambda r: (404, {"message": "No such image: x"})),
        ("POST", r"/v[\d.]+/images/create", lambda r: (404, {"message": "pull access denied"})),
    ]
    with serve(routes) as api:
        launcher = {"type": "docker", "image": "x", "dockerHost": f"tcp://{api.address}"}
        with pytest.raises(launchers.LaunchError, match="launch_image_not_found"):
            await docker_launcher.DockerLauncher().launch(request(launcher))


# --- Kubernetes -------------------------------------------------------------------------------

JOBS = r"/apis/batch/v1/namespaces/workers/jobs"
JOB = JOBS + r"/coflux-worker-3b0c1f5e-0000-4000-8000-000000000001"


def job(status: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "status": status}


def pods(terminated: dict[str, Any]) -> dict[str, Any]:
    pod = {
        "metadata": {"name": "worker-pod"},
        "status": {
            "containerStatuses": [
                {
                    "name": "worker",
                    "image": "i",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            ]
        },
    }
    return {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod]}


def kubernetes_launcher_config(address: str) -> dict[str, Any]:
    return {
        "type": "kubernetes",
        "image": "acme/worker:1",
        "namespace": "workers",
        "apiServer": f"http://{address}",
        "token": "t0ken",
        "labels": {"team": "ml"},
        "imagePullPolicy": "IfNotPresent",
        "activeDeadlineSeconds": 3600,
        "serviceAccount": "runner",
        "imagePullSecrets": ["registry"],
    }


async def test_kubernetes_launch_creates_a_job() -> None:
    routes = [("POST", JOBS, lambda r: (201, r.body))]
    with serve(routes) as api:
        launcher = kubernetes_launcher_config(api.address)
        data = await kubernetes_launcher.KubernetesLauncher().launch(request(launcher))
    assert data == {
        "namespace": "workers",
        "job": "coflux-worker-3b0c1f5e-0000-4000-8000-000000000001",
    }
    (create,) = api.find("POST", JOBS + "$")
    spec = create.body["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == 300
    assert spec["activeDeadlineSeconds"] == 3600
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "runner"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    (container,) = pod["containers"]
    assert container["image"] == "acme/worker:1"
    assert container["args"] == ["app.flows", "app.more"]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert {"name": "COFLUX_SESSION", "value": "s.t"} in container["env"]
    assert create.body["metadata"]["labels"]["team"] == "ml"


async def test_kubernetes_poll_and_stop() -> None:
    state = {"job": job({"active": 1})}
    routes = [
        ("GET", JOB + "/status", lambda r: (200, state["job"])),
        (
            "GET",
            r"/api/v1/namespaces/workers/pods",
            lambda r: (200, pods({"exitCode": 2, "reason": "Error"})),
        ),
        ("GET", r"/api/v1/namespaces/workers/pods/worker-pod/log", lambda r: (200, b"one\ntwo\n")),
        ("DELETE", JOB, lambda r: (200, {"kind": "Status", "status": "Success"})),
    ]
    handle = {"namespace": "workers", "job": "coflux-worker-3b0c1f5e-0000-4000-8000-000000000001"}
    with serve(routes) as api:
        launcher = kubernetes_launcher_config(api.address)
        k8s = kubernetes_launcher.KubernetesLauncher()
        assert (await k8s.poll(launcher, handle)).running
        state["job"] = job({"failed": 1})
        found = await k8s.poll(launcher, handle)
        await k8s.stop(launcher, handle)
    assert found == launchers.PollResult(running=False, error="exit_code:2", logs="one\ntwo")
    (pod_list,) = api.find("GET", r"/pods$")
    assert pod_list.query["labelSelector"] == [f"job-name={handle['job']}"]
    (log,) = api.find("GET", r"/log$")
    assert log.query["tailLines"] == ["20"]
    (delete,) = api.find("DELETE", JOB + "$")
    assert delete.query.get("propagationPolicy") == ["Background"] or (
        delete.body and delete.body.get("propagationPolicy") == "Background"
    )


# --- Process -----------------------------------------------------------------------------------


async def test_process_launcher_runs_the_cli_and_reports_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = tmp_path / "fake-coflux"
    cli.write_text('#!/bin/sh\necho "args: $*"\necho "secret: ${COFLUX_SECRET:-none}"\nexit 3\n')
    cli.chmod(0o755)
    monkeypatch.setenv("COFLUX_SECRET", "server-only")
    launcher = process_launcher.ProcessLauncher(str(cli), tmp_path / "logs")
    config = {"type": "process", "directory": str(tmp_path)}
    data = await launcher.launch(request(config, modules=("a.b", "c d")))
    assert Path(data["log"]).parent == tmp_path / "logs"

    def ended() -> launchers.PollResult | None:
        found = asyncio.run(launcher.poll(config, data))
        return None if found.running else found

    found = await asyncio.to_thread(eventually, ended)
    assert found == launchers.PollResult(
        running=False, error="exit_code:3", logs="args: worker a.b c d\nsecret: none"
    )


async def test_process_launcher_refuses_a_missing_directory(tmp_path: Path) -> None:
    launcher = process_launcher.ProcessLauncher("coflux", tmp_path)
    config = {"type": "process", "directory": str(tmp_path / "missing")}
    with pytest.raises(launchers.LaunchError, match="launch_process_failed"):
        await launcher.launch(request(config))


def test_an_unreaped_child_is_not_alive() -> None:
    child = subprocess.Popen(["/bin/true"])
    eventually(lambda: not process_launcher._alive(child.pid))
    child.wait()
    assert not process_launcher._alive(child.pid)
