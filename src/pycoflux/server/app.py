"""The HTTP/WebSocket application: routing, project resolution, CORS, auth, and ``serve``.

Shutdown order: stop accepting connections (uvicorn), close worker sockets, drain and
stop each project host (its last batch commits), close the stores.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute

from pycoflux import errors
from pycoflux.protocol import version
from pycoflux.server import auth, blobs, logs, projects, subscriptions, topics, ws
from pycoflux.server import config as config_module
from pycoflux.server.api import runs, workspaces
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
    """Holds the config and the project hosts for the request handlers."""

    def __init__(self, config: config_module.ServerConfig) -> None:
        self.config = config
        self.projects = projects.Projects(config)

    async def project(self, connection: HTTPConnection) -> projects.ProjectHost:
        return await self.projects.get(resolve_project(self.config, connection))

    async def authenticate(
        self, connection: HTTPConnection, host: projects.ProjectHost, token: str | None
    ) -> auth.Access:
        session_valid = False
        if token is not None and "." in token and not token.startswith("cflx_"):
            session_valid = await host.read(lambda _db, core: core.session_token_valid(token))
        access = auth.authenticate(self.config, token, session_valid)
        if access is None:
            raise ApiError(401, "unauthorized")
        return access

    def cors(self, request: Request, response: Response) -> Response:
        response.headers.update(CORS_HEADERS)
        origin = request.headers.get("origin")
        if origin and origin_allowed(origin, self.config.allow_origins):
            response.headers["access-control-allow-origin"] = origin
            response.headers["vary"] = "origin"
        return response


API_HANDLERS: dict[str, Handler] = {
    **workspaces.HANDLERS,
    **runs.HANDLERS,
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
        return JSONResponse({"status": "ok", "db": "ok"})

    async def root(request: Request) -> Response:
        host = request.headers.get("host", "")
        return RedirectResponse(f"{config.studio_url}/setup?host={host}", status_code=302)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await server.projects.stop()

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
    )
    app.state.server = server
    return app


def serve(config: config_module.ServerConfig) -> None:
    """Run the server in the foreground until interrupted."""
    import uvicorn

    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        probe = config.data_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise errors.ConfigError(f"data directory {config.data_dir} is not writable: {e}") from e
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    print(f"Server started. Running on port {config.port}.", flush=True)
    uvicorn.run(
        create_app(config),
        host=config.bind,
        port=config.port,
        log_level="warning",
        ws="websockets-sansio",
        ws_max_size=256 * 1024 * 1024,
        ws_ping_interval=None,
        lifespan="on",
    )
