"""The CLI's only HTTP code: API calls, topic snapshots, blobs and logs (cli.md §3)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pycoflux import errors
from pycoflux.protocol import version

if TYPE_CHECKING:
    import httpx

# httpx is imported on first use: it costs ~100 ms, and `coflux --help` must start fast.


@contextmanager
def prefixed(prefix: str) -> Iterator[None]:
    """Re-raise client errors as ``<prefix>: <message>`` (the per-command wording of cli.md)."""
    try:
        yield
    except (errors.ServerUnreachableError, errors.VersionMismatchError) as e:
        raise type(e)(f"{prefix}: {e}") from e
    except errors.ClientError as e:
        raise errors.ClientError(f"{prefix}: {e}") from e


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def describe_error(response: httpx.Response, api_version: str) -> str:
    """Turn an error response into the one-line message of cli.md §3.2."""
    body = response.text
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        code = parsed.get("error")
        if response.status_code == 409 and code == "version_mismatch":
            details = parsed.get("details")
            server = details.get("server") if isinstance(details, dict) else None
            return (
                f"version mismatch: this CLI expects API version {api_version}, "
                f"but the server is version {server} — upgrade the server or use a "
                "compatible CLI version"
            )
        if isinstance(code, str) and code:
            message = parsed.get("message")
            text = f"{code}: {message if isinstance(message, str) else ''}"
            if "details" in parsed:
                text += f" (details: {_compact(parsed['details'])})"
            return text
    return f"HTTP {response.status_code}: {body}"


class ApiError(errors.ClientError):
    """The server answered with an error status."""

    def __init__(self, message: str, *, status: int, code: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _error_code(response: httpx.Response) -> str | None:
    try:
        parsed = response.json()
    except ValueError:
        return None
    code = parsed.get("error") if isinstance(parsed, dict) else None
    return code if isinstance(code, str) else None


class Client:
    """A synchronous client for one server, project and token."""

    def __init__(
        self,
        *,
        host: str,
        secure: bool,
        token: str | None,
        project: str | None,
        api_version: str = version.API_VERSION,
        timeout: float | None = 30.0,
    ) -> None:
        self.host = host
        self.secure = secure
        self.token = token
        self.project = project
        self.api_version = api_version
        self.base = f"{'https' if secure else 'http'}://{host}"
        import httpx

        # Loading the CA bundle costs ~60 ms per process; plain-HTTP servers don't need it.
        self._http = httpx.Client(timeout=timeout, verify=secure)
        self._timeout = timeout
        self._workspaces: dict[str, Any] | None = None

    def close(self) -> None:
        self._http.close()

    def headers(self, *, versioned: bool = True) -> dict[str, str]:
        headers: dict[str, str] = {}
        if versioned and self.api_version != "dev":
            headers["X-API-Version"] = self.api_version
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.project:
            headers["X-Project"] = self.project
        return headers

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        import httpx

        try:
            if url.startswith("https:") and not self.secure:
                # e.g. an https blob store next to a plain-HTTP server: verify certificates.
                with httpx.Client(timeout=self._timeout) as verified:
                    return verified.request(method, url, **kwargs)
            return self._http.request(method, url, **kwargs)
        except httpx.HTTPError as e:
            raise errors.ServerUnreachableError(f"request failed: {method} {url}: {e}") from None

    def decode(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            if response.status_code == 409 and '"version_mismatch"' in response.text:
                raise errors.VersionMismatchError(describe_error(response, self.api_version))
            raise ApiError(
                describe_error(response, self.api_version),
                status=response.status_code,
                code=_error_code(response),
            )
        if not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            raise errors.ClientError(
                f"invalid response from server: {response.text[:200]}"
            ) from None

    # --- API and topics -----------------------------------------------------------

    def call(
        self,
        name: str,
        body: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """``POST /api/<name>``; returns the decoded JSON body (``None`` for 204)."""
        return self.decode(self.call_raw(name, body, headers=headers))

    def call_raw(
        self, name: str, body: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        return self._send(
            "POST",
            f"{self.base}/api/{name}",
            content=json.dumps(body).encode(),
            headers={**self.headers(), "Content-Type": "application/json", **(headers or {})},
        )

    def topic(self, path: str) -> Any:
        """The current value of a topic (``GET /topics/<path>``)."""
        return self.decode(self._send("GET", f"{self.base}/topics/{path}", headers=self.headers()))

    # --- workspaces (cli.md §2.7) ---------------------------------------------------

    def workspaces(self, *, refresh: bool = False) -> dict[str, Any]:
        if self._workspaces is None or refresh:
            with prefixed("failed to get workspaces"):
                value = self.topic("workspaces")
            self._workspaces = value if isinstance(value, dict) else {}
        return self._workspaces

    def resolve_workspace(self, name: str) -> str:
        for ws_id, ws in self.workspaces().items():
            if isinstance(ws, dict) and ws.get("name") == name and ws.get("state") != "archived":
                return str(ws_id)
        raise errors.ClientError(f"workspace not found: {name}")

    def ensure_workspace(self, name: str) -> str:
        try:
            return self.resolve_workspace(name)
        except errors.ServerUnreachableError:
            raise
        except errors.ClientError:
            pass
        try:
            created = self.call("create_workspace", {"name": name})
        except errors.ClientError as e:
            raise errors.ClientError(f"failed to create workspace: {e}") from e
        self._workspaces = None
        return str(created["id"])

    # --- blobs and logs ---------------------------------------------------------------

    def get_blob(self, key: str, stores: list[dict[str, Any]] | None = None) -> bytes:
        """Fetch a blob from the configured HTTP stores (first one that has it)."""
        for store in stores or [{"type": "http"}]:
            if store.get("type", "http") != "http":
                continue
            url = str(store.get("url") or f"{self.base}/blobs").rstrip("/")
            headers: dict[str, str] = {}
            # A store token that is present but empty means "send no token".
            token = store.get("token", self.token)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            if self.project:
                headers["X-Project"] = self.project
            response = self._send("GET", f"{url}/{quote(key)}", headers=headers)
            if response.status_code == 404:
                continue
            if response.status_code != 200:
                raise errors.ClientError(f"HTTP {response.status_code}")
            return response.content
        raise errors.ClientError(f"blob not found: {key}")

    def get_logs(self, query: Mapping[str, str]) -> Any:
        response = self._send(
            "GET",
            f"{self.base}/logs",
            params=dict(query),
            headers={**self.headers(versioned=False), "Accept": "application/json"},
        )
        if response.status_code != 200:
            raise errors.ClientError(f"HTTP {response.status_code}")
        return response.json()

    def follow_logs(self, query: Mapping[str, str]) -> Iterator[list[Any]]:
        """Yield batches of log entries from the server-sent event stream."""
        import httpx

        headers = {**self.headers(versioned=False), "Accept": "text/event-stream"}
        url = f"{self.base}/logs"
        try:
            with self._http.stream(
                "GET", url, params=dict(query), headers=headers, timeout=None
            ) as response:
                if response.status_code != 200:
                    raise errors.ClientError(f"HTTP {response.status_code}")
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        batch = json.loads(line[5:].strip() or "[]")
                        if isinstance(batch, list):
                            yield batch
        except httpx.HTTPError as e:
            raise errors.ServerUnreachableError(f"request failed: GET {url}: {e}") from None
