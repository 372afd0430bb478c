"""The HTTP/WebSocket application: routing, project resolution, CORS, auth, and ``serve``.

Shutdown order: stop accepting connections (uvicorn), close worker sockets, drain and
stop each project host (its last batch commits), close the stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pycoflux import errors
from pycoflux.protocol import version
from pycoflux.server import auth, blobs, logs, projects, subscriptions, topics, ws, wsprotocol
from pycoflux.server import config as config_module
from pycoflux.server.api import inputs, pools, runs, tokens, workspaces
from pycoflux.server.context import ApiError, Context, Handler

log = logging.getLogger("pycoflux.server")

CORS_HEADERS = {
    "access-control-allow-methods": "OPTIONS, GET, POST, PUT, PATCH, DELETE",
    "access-control-allow-headers": "content-type,authorization,x-api-version,x-project",
    "access-control-max-age": "86400",
}


def origin_allowed(origin: str, patterns: tuple[str, ...]) -> bool:
    for pattern in patterns:
        if origin == pattern:
            return True
        if "*" in pattern:
            prefix, _, suffix = pattern.partition("*")
            if (
                origin.startswith(prefix)
                and origin.endswith(suffix)
                and len(origin) > len(prefix) + len(suffix)
            ):
                return True
    return False


def resolve_project(config: config_module.ServerConfig, connection: HTTPConnection) -> str:
    """The project a request is for (``server-api.md`` §2.3), or an ApiError."""
    host = (connection.headers.get("host") or "").lower().rsplit(":", 1)[0]
    if host.startswith("[") and not host.endswith("]"):
        host = (connection.headers.get("host") or "").lower()
    header = connection.headers.get("x-project") or connection.query_params.get("project") or None
    error: ApiError | None = None
    project: str | None = None
    base = config.base_domain
    if base is None:
        if config.project is None:
            error = ApiError(500, "not_configured")
        else:
            project = config.project
    elif host == base:
        error = ApiError(400, "project_required")
    elif host.endswith("." + base):
        candidate = host[: -len(base) - 1]
        if config.project is not None and candidate != config.project:
            error = ApiError(403, "project_mismatch")
        else:
            project = candidate
    else:
        error = ApiError(400, "invalid_host")
    if header is not None:
        if project is not None and header != project:
            raise ApiError(403, "project_mismatch")
        if project is None:
            if config.project is not None and header != config.project:
                raise ApiError(403, "project_mismatch")
            project = header
            error = None
    if error is not None:
        raise error
    assert project is not None
    if not projects.valid_project_id(project):
        raise ApiError(400, "invalid_project")
    return project


class Server:
    """Holds the config, the project hosts and the authenticator for the request handlers."""

    def __init__(self, config: config_module.ServerConfig) -> None:
        self.config = config
        self.projects = projects.Projects(config)
        self.authenticator = auth.Authenticator(config)

    async def project(self, connection: HTTPConnection) -> projects.ProjectHost:
        return await self.projects.get(resolve_project(self.config, connection))

    async def authenticate(
        self, connection: HTTPConnection, host: projects.ProjectHost, token: str | None
    ) -> auth.Access:
        """The caller's access; 401 for bad credentials, 429 after too many from one client."""
        client = connection.client.host if connection.client else "unknown"
        failures = self.authenticator.failures
        if token is not None and failures.blocked(client):
            raise ApiError(
                429,
                "too_many_requests",
                headers={"retry-after": str(failures.retry_after(client))},
            )
        access = await self.authenticator.authenticate(host, token, connection.headers.get("host"))
        if access is None:
            if token is not None:
                failures.failed(client)
                log.info("refused a credential from %s for project %s", client, host.project_id)
            raise ApiError(401, "unauthorized")
        return access

    def cors(self, request: HTTPConnection, response: Response) -> Response:
        response.headers.update(CORS_HEADERS)
        origin = request.headers.get("origin")
        if origin and origin_allowed(origin, self.config.allow_origins):
            response.headers["access-control-allow-origin"] = origin
            response.headers["vary"] = "origin"
        return response

    async def health(self) -> tuple[int, dict[str, Any]]:
        """Check every open project store and the blob store (``GET /health``)."""
        failed: dict[str, str] = {}
        for host in self.projects.running():
            try:
                async with asyncio.timeout(HEALTH_TIMEOUT):
                    await host.read(lambda db, _: db.execute("SELECT 1").fetchone())
                    await host.write_admin(lambda admin: admin.check())
            except TimeoutError:
                failed[f"projects/{host.project_id}"] = "store did not answer in time"
            except Exception as e:
                failed[f"projects/{host.project_id}"] = _reason(e)
        blobs_ok = True
        blob_dir = self.config.data_dir / "blobs"
        probe = blob_dir if blob_dir.exists() else self.config.data_dir
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            blobs_ok = False
            failed["blobs"] = f"{probe} is not a writable directory"
        if not failed:
            return 200, {"status": "ok", "db": "ok"}
        db_ok = not any(name.startswith("projects/") for name in failed)
        return 503, {
            "status": "degraded",
            "db": "ok" if db_ok else "error",
            "blobs": "ok" if blobs_ok else "error",
            "failed": failed,
        }


HEALTH_TIMEOUT = 5.0


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"[:200]


class BodyTooLargeError(Exception):
    """A request body went over its configured limit."""


class BodyLimit:
    """ASGI middleware refusing request bodies over the configured limits with 413."""

    def __init__(self, app: ASGIApp, server: Server) -> None:
        self.app = app
        self.server = server

    def _limit(self, path: str) -> int | None:
        config = self.server.config
        return config.max_blob_size if path.startswith("/blobs/") else config.max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self._limit(scope["path"])
        if limit is None:
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                request = Request(scope)
                response = self.server.cors(request, too_large())
                return await response(scope, receive, send)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLargeError()
            return message

        await self.app(scope, limited, send)


def too_large() -> Response:
    return ApiError(413, "payload_too_large").response()


API_HANDLERS: dict[str, Handler] = {
    **tokens.HANDLERS,
    **logs.HANDLERS,
    **workspaces.HANDLERS,
    **runs.HANDLERS,
    **inputs.HANDLERS,
    **pools.HANDLERS,
}


def create_app(config: config_module.ServerConfig) -> Starlette:
    server = Server(config)

    async def api(request: Request) -> Response:
        name = request.path_params.get("name", "")
        try:
            expected = request.headers.get("x-api-version")
            if expected and expected != version.API_VERSION:
                raise ApiError(
                    409,
                    "version_mismatch",
                    {"server": version.SERVER_VERSION, "expected": expected},
                )
            if request.method == "OPTIONS":
                return server.cors(request, Response(status_code=204))
            host = await server.project(request)
            access = await server.authenticate(
                request, host, auth.bearer(request.headers.get("authorization"))
            )
            if name == "discover" and request.method == "GET":
                response: Response = JSONResponse(
                    {
                        "version": version.SERVER_VERSION,
                        "api_version": version.API_VERSION,
                        "access": {"workspaces": list(access.workspaces)},
                    }
                )
            elif name == "search" and request.method == "GET":
                response = await workspaces.search(Context(server, request, host, access))
            else:
                handler = API_HANDLERS.get(name)
                if handler is None or request.method != "POST":
                    raise ApiError(404, "not_found")
                response = await handler(Context(server, request, host, access))
        except ApiError as e:
            response = e.response()
        return server.cors(request, response)

    async def guarded(
        request: Request, handler: Callable[[Context], Awaitable[Response]]
    ) -> Response:
        try:
            if request.method == "OPTIONS":
                return server.cors(request, Response(status_code=204))
            host = await server.project(request)
            access = await server.authenticate(
                request, host, auth.bearer(request.headers.get("authorization"))
            )
            response = await handler(Context(server, request, host, access))
        except ApiError as e:
            response = e.response()
        return server.cors(request, response)

    async def topic(request: Request) -> Response:
        return await guarded(request, topics.snapshot)

    async def blob(request: Request) -> Response:
        return await guarded(request, blobs.handle)

    async def logs_endpoint(request: Request) -> Response:
        return await guarded(request, logs.handle)

    async def metrics_endpoint(request: Request) -> Response:
        return await guarded(request, logs.handle_metrics)

    async def health(request: Request) -> Response:
        status, body = await server.health()
        return JSONResponse(body, status_code=status)

    async def root(request: Request) -> Response:
        scheme_port = 443 if request.url.scheme in ("https", "wss") else 80
        hostname = request.url.hostname or "localhost"
        if ":" in hostname:
            hostname = f"[{hostname}]"
        query = urlencode({"host": f"{hostname}:{request.url.port or scheme_port}"})
        return RedirectResponse(f"{config.studio_base}/setup?{query}", status_code=302)

    async def body_too_large(request: Request, _: Exception) -> Response:
        return server.cors(request, too_large())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await server.projects.stop()
        await server.authenticator.close()

    methods = ["GET", "POST", "PUT", "HEAD", "OPTIONS", "DELETE", "PATCH"]
    app = Starlette(
        routes=[
            Route("/api", api, methods=methods),
            Route("/api/{name:path}", api, methods=methods),
            # A percent-encoded "/" must not route a key elsewhere: the whole rest is the key.
            Route("/blobs/{key:path}", blob, methods=methods),
            Route("/logs", logs_endpoint, methods=methods),
            Route("/metrics", metrics_endpoint, methods=methods),
            Route("/topics/{path:path}", topic, methods=methods),
            WebSocketRoute("/worker", ws.worker_endpoint(server)),
            WebSocketRoute("/topics", subscriptions.topics_endpoint(server)),
            Route("/health", health),
            Route("/{path:path}", root, methods=methods),
        ],
        lifespan=lifespan,
        exception_handlers={BodyTooLargeError: body_too_large},
        middleware=[Middleware(BodyLimit, server=server)],
    )
    app.state.server = server
    return app


def check_data_dir(config: config_module.ServerConfig) -> None:
    """Create the data directory and prove it writable, or fail naming the setting."""
    directory = config.data_dir
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise errors.ConfigError(
            f"COFLUX_DATA_DIR: cannot use {directory} as the data directory: {reason}"
        ) from None


def serve(config: config_module.ServerConfig) -> None:
    """Run the server in the foreground until interrupted."""
    import uvicorn

    config_module.validate(config)
    check_data_dir(config)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    lines = [
        f"Coflux server {version.SERVER_VERSION} (API {version.API_VERSION})",
        "Settings:",
        *config_module.describe(config),
        f"Data directory: {config.data_dir.resolve()}",
        f"Server started. Running on port {config.port}.",
    ]
    print("\n".join(lines), flush=True)
    app = create_app(config)

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            # Follow streams never end on their own; end them so uvicorn's graceful
            # shutdown (which waits for open responses) can reach the project hosts.
            for host in app.state.server.projects.running():
                host.end_streams()
            await super().shutdown(sockets)

    Server(
        uvicorn.Config(
            app,
            host=config.bind,
            port=config.port,
            log_level="warning",
            ws=wsprotocol.CoalescingWebSocketProtocol,
            ws_max_size=256 * 1024 * 1024,
            ws_ping_interval=None,
            # Frames are small JSON on loopback or a LAN; compressing each one costs both
            # ends more CPU than it saves.
            ws_per_message_deflate=False,
            lifespan="on",
        )
    ).run()
