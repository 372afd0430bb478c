"""The slice of the server's HTTP API a worker needs: workspaces, manifests, sessions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from pycoflux import errors
from pycoflux.protocol import version

_LOCAL_HOSTS = ("localhost", "127.0.0.1")


def is_local_host(host: str) -> bool:
    """Whether ``host[:port]`` names this machine (such hosts default to plain http/ws)."""
    if host.startswith("[::1]"):
        return True
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.lower()
    return name in _LOCAL_HOSTS or name.endswith(".localhost")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerAddress:
    """Where the server lives and how to address it."""

    host: str
    secure: bool
    project: str | None = None

    @classmethod
    def resolve(cls, host: str, secure: bool | None, project: str | None) -> ServerAddress:
        return cls(
            host=host,
            secure=(not is_local_host(host)) if secure is None else secure,
            project=project or None,
        )

    @property
    def http_base(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.host}"

    @property
    def ws_base(self) -> str:
        return f"{'wss' if self.secure else 'ws'}://{self.host}"

    def headers(self, token: str | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self.project:
            headers["X-Project"] = self.project
        return headers


def api_version_headers() -> dict[str, str]:
    # A development build announces no version, so any server accepts it.
    return {} if version.API_VERSION == "dev" else {"X-API-Version": version.API_VERSION}


def describe_error_response(response: httpx.Response) -> errors.ClientError:
    """Map a non-2xx response to ``<error>: <message>`` (or the version-mismatch error)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        code = body["error"]
        details = body.get("details")
        if code == "version_mismatch":
            server = details.get("server") if isinstance(details, dict) else None
            return errors.VersionMismatchError(
                f"the CLI expects API version {version.API_VERSION}, "
                f"but the server is {server or 'unknown'}"
            )
        message = body.get("message")
        if message is None and details is not None:
            message = details if isinstance(details, str) else json.dumps(details)
        return errors.ClientError(f"{code}: {message}" if message else code)
    text = response.text.strip()
    return errors.ClientError(f"HTTP {response.status_code}" + (f": {text}" if text else ""))


class ApiClient:
    """Calls ``/api/*`` and ``/topics/*`` with the worker's credentials."""

    def __init__(self, address: ServerAddress, token: str | None, client: httpx.AsyncClient):
        self._address = address
        self._token = token
        self._client = client

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {**self._address.headers(self._token), **api_version_headers()}
        url = f"{self._address.http_base}{path}"
        try:
            response = await self._client.request(method, url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise errors.ServerUnreachableError(
                f"cannot reach server at {self._address.http_base}: {exc or type(exc).__name__}"
            ) from exc
        if response.status_code >= 300:
            raise describe_error_response(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except json.JSONDecodeError as exc:
            raise errors.ClientError(f"invalid JSON from server at {path}") from exc

    async def resolve_workspace(self, name: str) -> str:
        """The id of the workspace called ``name``, creating it when missing."""
        try:
            workspaces = await self._call("GET", "/topics/workspaces")
        except errors.ClientError as exc:
            raise type(exc)(f"failed to get workspaces: {exc}") from exc
        if isinstance(workspaces, dict):
            for workspace_id, workspace in workspaces.items():
                if (
                    isinstance(workspace, dict)
                    and workspace.get("name") == name
                    and workspace.get("state") != "archived"
                ):
                    return str(workspace_id)
        try:
            created = await self._call("POST", "/api/create_workspace", {"name": name})
        except errors.ClientError as exc:
            raise type(exc)(f"failed to create workspace: {exc}") from exc
        if not isinstance(created, dict) or not isinstance(created.get("id"), str):
            raise errors.ClientError("failed to create workspace: unexpected response")
        return str(created["id"])

    async def register_manifests(self, workspace_id: str, manifests: dict[str, Any]) -> None:
        try:
            await self._call(
                "POST",
                "/api/register_manifests",
                {"workspaceId": workspace_id, "manifests": manifests},
            )
        except errors.ClientError as exc:
            raise type(exc)(f"failed to register manifests: {exc}") from exc

    async def create_session(
        self,
        workspace_id: str,
        provides: dict[str, list[str]],
        accepts: dict[str, list[str]],
    ) -> str:
        body = {"workspaceId": workspace_id, "provides": provides, "accepts": accepts}
        try:
            reply = await self._call("POST", "/api/create_session", body)
        except errors.ClientError as exc:
            raise type(exc)(f"failed to create session: {exc}") from exc
        if not isinstance(reply, dict) or not isinstance(reply.get("sessionId"), str):
            raise errors.ClientError("failed to create session: unexpected response")
        return str(reply["sessionId"])


def parse_tags(entries: tuple[str, ...] | list[str]) -> dict[str, list[str]]:
    """``["gpu:a100", "gpu:h100", "fast"]`` -> ``{"gpu": ["a100", "h100"], "fast": ["true"]}``."""
    tags: dict[str, list[str]] = {}
    for entry in entries:
        key, sep, value = entry.partition(":")
        tags.setdefault(key, []).append(value if sep else "true")
    return tags
