"""Studio credentials: the login file and the team project-token exchange (cli.md §2.6, §4.16)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pycoflux import errors

DEFAULT_STUDIO_URL = "https://studio.coflux.com"
NOT_LOGGED_IN = "not logged in to Studio (run 'coflux login' to authenticate)"
EXPIRED = "Studio session is invalid or expired (run 'coflux login' to authenticate)"


def config_dir() -> Path:
    return Path.home() / ".config" / "coflux"


def studio_url(environ: Mapping[str, str]) -> str:
    return (environ.get("COFLUX_STUDIO_URL") or DEFAULT_STUDIO_URL).rstrip("/")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_private(path: Path, data: Any) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)


def project_token(team: str, host: str, environ: Mapping[str, str]) -> str:
    """Exchange the Studio session for a project token, reusing a cached one when fresh."""
    try:
        directory = config_dir()
    except RuntimeError:
        raise errors.ClientError(NOT_LOGGED_IN) from None
    cache_path = directory / "token_cache.json"
    cache = read_json(cache_path) or {}
    key = f"{team}:{host}"
    entry = cache.get(key)
    if isinstance(entry, dict) and time.time() < float(entry.get("expires_at", 0)) - 60:
        return str(entry["token"])
    credentials = read_json(directory / "credentials.json")
    if not credentials or not credentials.get("studio_token"):
        raise errors.ClientError(NOT_LOGGED_IN)
    import httpx

    try:
        response = httpx.post(
            f"{studio_url(environ)}/api/auth/project-token",
            headers={"Authorization": f"Bearer {credentials['studio_token']}"},
            json={"team": team, "host": host},
            timeout=30,
        )
    except httpx.HTTPError as e:
        raise errors.ClientError(f"failed to exchange token: {e}") from None
    if response.status_code == 401:
        raise errors.ClientError(EXPIRED)
    if response.status_code != 200:
        raise errors.ClientError(f"failed to exchange token: {response.text}")
    body = response.json()
    token = str(body["token"])
    cache[key] = {"token": token, "expires_at": time.time() + float(body.get("expiresIn", 0))}
    try:
        write_private(cache_path, cache)
    except OSError:
        pass  # the cache only saves a round trip
    return token


# --- Device authorisation (``coflux login``) -------------------------------------------


def _error_text(response: Any) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return str(body.get("error") or ""), str(body.get("error_description") or "")


def start_device_flow(base: str, name: str) -> dict[str, Any]:
    """Ask Studio for a device code; returns its JSON (device_code, verification_uri, ...)."""
    import httpx

    try:
        response = httpx.post(f"{base}/api/auth/device", json={"name": name}, timeout=30)
    except httpx.HTTPError as e:
        raise errors.ClientError(f"failed to start authentication: {e}") from None
    if response.status_code != 200:
        raise errors.ClientError(
            f"failed to start authentication: failed to start device flow: {response.text}"
        )
    body = response.json()
    if not isinstance(body, dict) or not isinstance(body.get("device_code"), str):
        raise errors.ClientError("failed to start authentication: malformed device flow response")
    return body


def poll_device_flow(
    base: str,
    flow: dict[str, Any],
    *,
    sleep: Any = time.sleep,
    clock: Any = time.monotonic,
) -> dict[str, Any]:
    """Poll until Studio grants a token (at most every 5 s), or the code expires."""
    import httpx

    interval = max(float(flow.get("interval") or 0), 5.0)
    deadline = clock() + float(flow.get("expires_in") or 0)
    expired = errors.ClientError("authentication failed: device code has expired")
    while True:
        sleep(interval)
        if clock() > deadline:
            raise expired
        try:
            response = httpx.post(
                f"{base}/api/auth/device/token",
                json={"device_code": flow["device_code"]},
                timeout=30,
            )
        except httpx.HTTPError as e:
            raise errors.ClientError(f"authentication failed: {e}") from None
        if response.status_code == 200:
            body = response.json()
            if not isinstance(body, dict) or not body.get("access_token"):
                raise errors.ClientError("authentication failed: no access token in response")
            return body
        if response.status_code != 400:
            raise errors.ClientError(
                f"authentication failed: unexpected response: {response.status_code}"
            )
        error, description = _error_text(response)
        if error == "authorization_pending":
            continue
        if error == "expired_token":
            raise expired
        raise errors.ClientError(f"authentication failed: {error}: {description}")


def save_credentials(granted: dict[str, Any]) -> None:
    directory = config_dir()
    credentials: dict[str, Any] = {"studio_token": granted["access_token"]}
    for key in ("user_email", "user_id"):
        if granted.get(key):
            credentials[key] = granted[key]
    write_private(directory / "credentials.json", credentials)
    (directory / "token_cache.json").unlink(missing_ok=True)


def forget_credentials() -> None:
    directory = config_dir()
    for name in ("credentials.json", "token_cache.json"):
        (directory / name).unlink(missing_ok=True)
