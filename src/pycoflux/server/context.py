"""What every HTTP handler shares: the error envelope and the request context."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pycoflux.orchestration import commands, effects
from pycoflux.server import auth, projects


class ApiError(Exception):
    """An error response with the standard envelope."""

    def __init__(
        self,
        status: int,
        error: str,
        details: Any = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = details
        self.headers = headers

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.error}
        if self.details is not None:
            body["details"] = self.details
        return JSONResponse(body, status_code=self.status, headers=self.headers)


Handler = Callable[["Context"], Awaitable[Response]]


class Context:
    """What an API handler needs: the request, its project host and the caller."""

    def __init__(
        self, server: Any, request: Request, host: projects.ProjectHost, access: auth.Access
    ) -> None:
        self.server = server
        self.request = request
        self.host = host
        self.access = access

    async def body(self) -> dict[str, Any]:
        try:
            data = json.loads(await self.request.body() or b"null")
        except ValueError:
            raise ApiError(400, "bad_request", "invalid_json") from None
        if not isinstance(data, dict):
            raise ApiError(400, "bad_request", "invalid_json")
        return data

    async def run(self, command: commands.Command) -> Any:
        """Apply a command the caller may apply; a rejection becomes the error response."""
        refusal = await auth.authorize(self.access, command, self.host)
        if refusal == "restricted":
            raise ApiError(400, "bad_request", {"name": "restricted"})
        if refusal is not None:
            raise ApiError(403, "forbidden")
        outcome = await self.host.execute(command)
        if isinstance(outcome, effects.Rejected):
            raise ApiError(outcome.status, outcome.error, outcome.details)
        return None if outcome is None else outcome.result
