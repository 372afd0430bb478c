"""Fixtures for CLI tests: an isolated environment, a CliRunner, and a fake Coflux server."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner, Result

from pycoflux.cli.main import cli


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


Reply = tuple[int, Any] | tuple[int, Any, dict[str, str]]
Handler = Callable[[Request], Reply]


@dataclass
class FakeServer:
    """Answers spec-shaped API/topic requests from a route table and records every request."""

    requests: list[Request] = field(default_factory=list)
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    workspaces: dict[str, Any] = field(
        default_factory=lambda: {"W1": {"name": "default", "baseId": None, "state": "active"}}
    )
    host: str = ""

    def on(self, method: str, path: str, status: int = 200, body: Any = None) -> None:
        self.routes[(method, path)] = lambda _req: (status, body)

    def handle(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def sequence(self, method: str, path: str, bodies: list[Any]) -> None:
        """Answer with each body in turn, repeating the last one."""
        remaining = list(bodies)

        def handler(_req: Request) -> Reply:
            return 200, remaining.pop(0) if len(remaining) > 1 else remaining[0]

        self.routes[(method, path)] = handler

    def calls(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def dispatch(self, request: Request) -> Reply:
        self.requests.append(request)
        handler = self.routes.get((request.method, request.path))
        if handler is not None:
            return handler(request)
        if request.method == "GET" and request.path == "/topics/workspaces":
            return 200, self.workspaces
        if request.method == "POST" and request.path == "/api/create_workspace":
            name = request.json["name"]
            if any(w["name"] == name for w in self.workspaces.values()):
                return 400, {"error": "bad_request", "details": {"name": "exists"}}
            ws_id = f"W{len(self.workspaces) + 1}"
            self.workspaces[ws_id] = {
                "name": name,
                "baseId": request.json.get("baseId"),
                "state": "active",
            }
            return 200, {"id": ws_id}
        return 404, {"error": "not_found"}


def _make_handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes; without this, delayed ACKs add ~40 ms.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = Request(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            reply = server.dispatch(request)
            status, body = reply[0], reply[1]
            extra = reply[2] if len(reply) > 2 else {}  # type: ignore[misc]
            if isinstance(body, bytes):
                payload, ctype = body, "application/octet-stream"
            elif isinstance(body, str):
                payload, ctype = body.encode(), "text/plain"
            elif body is None and status == 204:
                payload, ctype = b"", "application/json"
            else:
                payload, ctype = json.dumps(body).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _serve
        do_POST = _serve
        do_PUT = _serve

    return Handler


@pytest.fixture(scope="session")
def _fake_http() -> Iterator[FakeServer]:
    server = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(server))
    httpd.daemon_threads = True
    server.host = f"127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def fake(_fake_http: FakeServer) -> FakeServer:
    """The shared fake server, reset to a single `default` workspace (id W1)."""
    fresh = FakeServer(host=_fake_http.host)
    _fake_http.requests = fresh.requests
    _fake_http.routes = fresh.routes
    _fake_http.workspaces = fresh.workspaces
    return _fake_http


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No COFLUX_* from the developer's shell, and no coflux.toml in the working directory."""
    for key in list(os.environ):
        if key.startswith("COFLUX_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    # The blob cache lives under the temp dir: keep it per test.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()


Run = Callable[..., Result]


@pytest.fixture
def coflux() -> Run:
    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)

    return run


@pytest.fixture
def on(fake: FakeServer, coflux: Run) -> Run:
    """Run the CLI against the fake server (``--host`` given first, as the upstream tests do)."""

    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        return coflux("--host", fake.host, *args, env=env, input=input)

    return run
