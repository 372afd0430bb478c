"""A fake Coflux server (HTTP + worker WebSocket) and helpers for the worker tests."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from pycoflux.worker.config import Timings, WorkerConfig
from pycoflux.worker.main import Shutdown, serve
from tests.support.eventually import eventually_async as eventually

FAST = Timings(
    heartbeat_interval=0.3,
    backoff_initial=0.05,
    backoff_max=0.2,
    graceful_exit=3.0,
    suspend_close_delay=0.2,
    request_wait=5.0,
    checkpoint_interval=0.2,
    stream_close_reply=2.0,
    watch_poll=0.1,
    stop_flush=1.0,
)

SDK_ADAPTER = (sys.executable, "-m", "coflux")


class ReplyWithError(Exception):
    """Raised by a request handler to answer ``[3, id, error]``."""


Handler = Callable[[list[Any]], Any]


class FakeServer:
    """Just enough of the server for the worker: records what it is sent, replies to requests."""

    def __init__(self) -> None:
        self.workspaces: dict[str, dict[str, Any]] = {
            "W1": {"name": "default", "baseId": None, "state": "active"}
        }
        self.api_calls: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.blobs: dict[str, bytes] = {}
        self.assets: dict[str, dict[str, Any]] = {}
        self.blob_puts: list[str] = []
        self.logs: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.frames: list[dict[str, Any]] = []
        self.connections = 0
        self.session_tokens: list[str] = []
        self.ws_queries: list[dict[str, str]] = []
        self.held: list[str] = []  # listed in the next session frame
        self.close_reason: str | None = None
        self.handlers: dict[str, Handler] = {
            "submit": self._submit,
            "checkpoint_update": lambda params: None,
            "cancel": lambda params: None,
            "stream_register": lambda p: {"id": f"{p[0]}_{p[1]}", "index": p[1], "head": -1},
            "stream_close": lambda params: True,
            "put_asset": self._put_asset,
            "get_asset": lambda params: self.assets.get(params[0], {}),
            "submit_input": lambda params: "R1/i1",
        }
        self._socket: WebSocket | None = None
        self._replies: set[asyncio.Task[None]] = set()
        self._children = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        app = Starlette(
            routes=[
                Route("/topics/workspaces", self._get_workspaces),
                Route("/api/{name}", self._api, methods=["POST"]),
                Route("/blobs/{key}", self._blob, methods=["GET", "PUT", "HEAD"]),
                Route("/logs", self._logs, methods=["POST"]),
                Route("/metrics", self._metrics, methods=["POST"]),
                WebSocketRoute("/worker", self._worker),
            ]
        )
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            ws="websockets-sansio",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.create_task(self._server.serve(), name="fake-server")
        await eventually(lambda: self._server is not None and self._server.started)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            if self._socket is not None:
                await self.drop()
            await asyncio.wait_for(self._task, 10)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    # --- HTTP ---------------------------------------------------------------------------

    async def _get_workspaces(self, request: Request) -> Response:
        return JSONResponse(self.workspaces)

    async def _api(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await request.json()
        self.api_calls.append((name, body, dict(request.headers)))
        if name == "create_workspace":
            workspace_id = f"W{len(self.workspaces) + 1}"
            self.workspaces[workspace_id] = {
                "name": body["name"],
                "baseId": None,
                "state": "active",
            }
            return JSONResponse({"id": workspace_id})
        if name == "create_session":
            return JSONResponse({"sessionId": "sess1.secret"})
        if name == "register_manifests":
            return Response(status_code=204)
        return JSONResponse({"error": "not_found"}, status_code=404)

    def api_bodies(self, name: str) -> list[dict[str, Any]]:
        return [body for call, body, _ in self.api_calls if call == name]

    async def _blob(self, request: Request) -> Response:
        key = request.path_params["key"]
        if request.method == "PUT":
            data = await request.body()
            if hashlib.sha256(data).hexdigest() != key:
                return JSONResponse({"error": "hash_mismatch"}, status_code=400)
            self.blobs[key] = data
            self.blob_puts.append(key)
            return Response(status_code=204)
        data_or_none = self.blobs.get(key)
        if data_or_none is None:
            return Response("Not found", status_code=404)
        return Response(data_or_none, media_type="application/octet-stream")

    async def _logs(self, request: Request) -> Response:
        self.logs.extend((await request.json())["messages"])
        return JSONResponse({"ok": True})

    async def _metrics(self, request: Request) -> Response:
        self.metrics.extend((await request.json())["entries"])
        return JSONResponse({"ok": True})

    # --- worker WebSocket -----------------------------------------------------------------

    async def _worker(self, websocket: WebSocket) -> None:
        offered = websocket.scope.get("subprotocols", [])
        await websocket.accept(subprotocol="v1")
        for protocol in offered:
            if protocol.startswith("session."):
                encoded = protocol.removeprefix("session.")
                padded = encoded + "=" * (-len(encoded) % 4)
                self.session_tokens.append(base64.urlsafe_b64decode(padded).decode())
        self.ws_queries.append(dict(websocket.query_params))
        if self.close_reason is not None:
            await websocket.close(code=4000, reason=self.close_reason)
            return
        self.connections += 1
        self._socket = websocket
        await websocket.send_text(json.dumps([0, "sid", self.held]))
        try:
            while True:
                frame = json.loads(await websocket.receive_text())
                frame["_connection"] = self.connections
                self.frames.append(frame)
                if "id" in frame:
                    task = asyncio.create_task(self._reply(websocket, frame), name="fake-reply")
                    self._replies.add(task)
                    task.add_done_callback(self._replies.discard)
        except WebSocketDisconnect:
            pass
        finally:
            if self._socket is websocket:
                self._socket = None

    async def _reply(self, websocket: WebSocket, frame: dict[str, Any]) -> None:
        handler = self.handlers.get(frame["request"])
        try:
            result = handler(frame.get("params", [])) if handler else None
            if inspect.isawaitable(result):
                result = await result
            reply = [2, frame["id"], result]
        except ReplyWithError as exc:
            reply = [3, frame["id"], str(exc)]
        try:
            await websocket.send_text(json.dumps(reply))
        except Exception:
            pass  # the socket went away; the worker re-issues what it needs

    def _put_asset(self, params: list[Any]) -> list[Any]:
        asset_id = f"A{len(self.assets) + 1}"
        self.assets[asset_id] = params[2]
        return [asset_id, params[1], len(params[2]), sum(e[1] for e in params[2].values())]

    def _submit(self, params: list[Any]) -> list[Any]:
        self._children += 1
        return [f"R1:{self._children + 1}:1", params[0], params[1]]

    async def send_command(self, command: str, params: list[Any]) -> None:
        assert self._socket is not None, "no worker connected"
        await self._socket.send_text(json.dumps([1, {"command": command, "params": params}]))

    async def execute(
        self,
        execution_id: str,
        target: str,
        arguments: list[Any],
        *,
        module: str = "wfmod",
        timeout_ms: int = 0,
        checkpoints: dict[str, Any] | None = None,
    ) -> None:
        await self.send_command(
            "execute",
            [
                execution_id,
                module,
                target,
                arguments,
                "R1",
                "W1",
                timeout_ms,
                None,
                checkpoints or {},
            ],
        )

    async def drop(self) -> None:
        socket = self._socket
        self._socket = None
        if socket is not None:
            await socket.close(code=1011)

    @property
    def connected(self) -> bool:
        return self._socket is not None

    def named(self, request: str, execution_id: str | None = None) -> list[dict[str, Any]]:
        """Frames with this request name (optionally for one execution id, params[0])."""
        found = [f for f in self.frames if f["request"] == request]
        if execution_id is not None:
            found = [f for f in found if _mentions(f, execution_id)]
        return found

    def requests_for(self, execution_id: str) -> list[str]:
        return [f["request"] for f in self.frames if _mentions(f, execution_id)]


def _mentions(frame: dict[str, Any], execution_id: str) -> bool:
    params = frame.get("params") or []
    if not params:
        return False
    first = params[0]
    if frame["request"] in ("select", "cancel"):
        return len(params) > 1 and params[1] == execution_id
    return first == execution_id or (isinstance(first, list) and execution_id in first)


WFMOD = """
import os
import time
from pathlib import Path

import coflux as cf


@cf.task()
def add(a, b):
    return a + b


@cf.task()
def big(n):
    return "x" * n


@cf.task()
def fail():
    raise RuntimeError("boom")


@cf.workflow()
def parent(x):
    return add(x, 1) * 2


@cf.workflow()
def waits_for_file(path):
    while not Path(path).exists():
        time.sleep(0.02)
    return "released"


@cf.task()
def sleepy(seconds):
    time.sleep(seconds)
    return "done"


@cf.task()
def chatty():
    cf.log_info("count is {n}", n=7)
    print("plain output")
    return 1


@cf.task()
def crash():
    os._exit(3)


@cf.workflow()
def canceller():
    child = add.submit(1, 2)
    child.cancel()
    return "cancelled"


@cf.task()
def echo(value):
    return value


progress = cf.Checkpoint("progress", default=0)


@cf.task()
def checkpointer(n):
    start = progress.get()
    for i in range(1, n + 1):
        progress.set(start + i)
    return progress.get()


@cf.task()
def flusher():
    progress.set(5)
    cf.flush()
    return "flushed"


@cf.task()
def suspender():
    progress.set(9)
    cf.suspend()


@cf.task()
def measured():
    loss = cf.Metric("loss", throttle=None)
    loss.record(1.0)
    loss.record(2.0, at=10)
    return "ok"


@cf.task()
def producer():
    yield "a"
    yield "b"


@cf.task(streams=cf.Streams(buffer=None, timeout=0.2))
def idle_producer():
    time.sleep(30)
    yield 1


@cf.task()
def consumer(stream):
    return list(stream)


@cf.task()
def asset_maker():
    Path("report.txt").write_text("abcdefgh")
    created = cf.asset("report.txt", name="rep")
    return created["report.txt"].read(2, 3).decode()
"""


def write_module(directory: Path, source: str = WFMOD, name: str = "wfmod") -> None:
    (directory / f"{name}.py").write_text(source)


def make_config(server: FakeServer, **overrides: Any) -> WorkerConfig:
    settings: dict[str, Any] = {
        "host": server.host,
        "adapter": SDK_ADAPTER,
        "modules": ("wfmod",),
        "concurrency": 2,
        "logs_flush_interval": 0.0,
        "metrics_flush_interval": 0.0,
        "drain_timeout": 5.0,
    }
    settings.update(overrides)
    return WorkerConfig(**settings)


class RunningWorker:
    """A worker served in-process, stopped (drained) at teardown."""

    def __init__(self, config: WorkerConfig, cwd: Path) -> None:
        self.config = config
        self.shutdown = Shutdown()
        self.task: asyncio.Task[None] = asyncio.create_task(
            serve(config, self.shutdown, cwd=cwd, timings=FAST), name="worker-under-test"
        )

    async def stop(self) -> None:
        if not self.task.done():
            self.shutdown.request()
        await asyncio.wait_for(asyncio.shield(self.task), 20)

    async def wait_connected(self, server: FakeServer) -> None:
        await eventually(lambda: self.task.done() or server.named("declare_targets"))
        if self.task.done():
            self.task.result()


async def wait_result(server: FakeServer, execution_id: str) -> list[Any]:
    frames = await eventually(lambda: server.named("put_result", execution_id))
    return frames[-1]["params"][1]


StartWorker = Callable[..., Awaitable[RunningWorker]]
