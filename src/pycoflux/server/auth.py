"""Who is calling and what they may change (auth-and-config.md §5-§8, §13).

A presented bearer token is classified by shape, in this order: JWT (three dot-separated
parts) -> Studio or OIDC; ``cflx_`` prefix -> service token; ``<id>.<secret>`` -> worker
session; anything else -> the super token, then (an upstream quirk) a service token's
bare random part. A presented token is always verified, even when auth is off, and
every rejection looks the same to the caller (401 ``unauthorized``). Secrets are
compared in constant time and never logged.

Workspace patterns restrict writes only: ``*``, an exact name, or ``name/*`` for every
workspace strictly below ``name``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pycoflux.server import config as config_module
from pycoflux.server import identity, tokens
from pycoflux.storage import views

if TYPE_CHECKING:
    import sqlite3

    from pycoflux.orchestration import core
    from pycoflux.server import projects

ALL = ("*",)
WORKSPACE_NAME = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")

# Commands checked against the caller's patterns by the workspace *name* they create or
# rename (failure: 400 {"name": "restricted"}); those with a workspace_id are checked
# against that workspace (403), except the ones below, which any caller may perform.
NAME_SCOPED = frozenset({"CreateWorkspace", "UpdateWorkspace"})
UNSCOPED = frozenset({"GetInput", "RespondInput", "DismissInput", "Search"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Access:
    """An authenticated caller; ``workspaces`` are the name patterns it may write to."""

    kind: str  # anonymous | super | token | user | session
    workspaces: tuple[str, ...] = ALL
    principal: dict[str, str] | None = None
    principal_id: int | None = None

    @property
    def full(self) -> bool:
        return "*" in self.workspaces

    def may_write(self, workspace_name: str) -> bool:
        return any(matches(pattern, workspace_name) for pattern in self.workspaces)


ANONYMOUS = Access(kind="anonymous")
SUPER = Access(kind="super")


# --- Workspace patterns -------------------------------------------------------------------


def valid_pattern(pattern: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("/*"):
        pattern = pattern[:-2]
    return bool(WORKSPACE_NAME.match(pattern))


def matches(pattern: str, name: str) -> bool:
    """Does ``pattern`` grant the workspace called ``name``?"""
    return pattern in ("*", name) or (pattern.endswith("/*") and name.startswith(pattern[:-1]))


def covers(held: tuple[str, ...], requested: str) -> bool:
    """May a caller holding ``held`` grant ``requested`` to a new token (§7.3)?"""
    if "*" in held:
        return True
    if requested == "*":
        return False
    if requested.endswith("/*"):
        prefix = requested[:-1]
        return requested in held or any(
            p.endswith("/*") and prefix.startswith(p[:-1]) for p in held
        )
    return any(matches(p, requested) for p in held)


def scope(patterns: tuple[str, ...] | None) -> tuple[str, ...]:
    """Stored patterns as an access scope: None or anything containing ``*`` is all."""
    return ALL if patterns is None or "*" in patterns else patterns


# --- Credentials --------------------------------------------------------------------------


def bearer(header: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (scheme case-sensitive), else None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme == "Bearer" and token else None


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_super_token(config: config_module.ServerConfig, token: str) -> bool:
    digest = sha256_hex(token).encode()
    if config.super_token_hash:
        return hmac.compare_digest(digest, config.super_token_hash.encode())
    legacy = config.legacy_super_token
    if not legacy:
        return False
    # The deprecated variable held the token itself in some releases and its hash in
    # others' documentation; accept both readings.
    plain = hmac.compare_digest(token.encode(), legacy.encode())
    hashed = bool(HEX64.match(legacy)) and hmac.compare_digest(digest, legacy.lower().encode())
    return plain or hashed


def request_host(host_header: str | None) -> str:
    """``host[:port]`` as JWT audiences name it: lower-cased, port dropped for 80/443."""
    host = (host_header or "").strip().lower()
    if host.endswith((":80", ":443")):
        return host.rsplit(":", 1)[0]
    return host


def _session_workspace(token: str) -> Callable[[sqlite3.Connection, core.Orchestrator], Any]:
    def read(db: sqlite3.Connection, orchestrator: core.Orchestrator) -> str | None:
        if not orchestrator.session_token_valid(token):
            return None
        row = db.execute(
            "SELECT w.name FROM sessions s JOIN workspaces w ON w.id = s.workspace_id"
            " WHERE s.external_id = ?",
            (token.partition(".")[0],),
        ).fetchone()
        return None if row is None else str(row[0])

    return read


class FailureLimiter:
    """Counts failed authentications per client address in fixed windows."""

    MAX_CLIENTS = 65_536

    def __init__(
        self, limit: int, window: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._counts: dict[str, tuple[float, int]] = {}

    def blocked(self, client: str) -> bool:
        entry = self._counts.get(client)
        if entry is None:
            return False
        started, count = entry
        if self._clock() - started >= self._window:
            del self._counts[client]
            return False
        return count >= self._limit

    def failed(self, client: str) -> None:
        now = self._clock()
        started, count = self._counts.get(client, (now, 0))
        if now - started >= self._window:
            started, count = now, 0
        self._counts[client] = (started, count + 1)
        if len(self._counts) > self.MAX_CLIENTS:
            for key in [k for k, (s, _) in self._counts.items() if now - s >= self._window]:
                del self._counts[key]
            while len(self._counts) > self.MAX_CLIENTS:
                del self._counts[next(iter(self._counts))]

    def retry_after(self, client: str) -> int:
        entry = self._counts.get(client)
        if entry is None:
            return 0
        return max(1, int(self._window - (self._clock() - entry[0]) + 0.999))


class Authenticator:
    """Turns a presented token into an Access for one project, or None (401)."""

    def __init__(
        self,
        config: config_module.ServerConfig,
        *,
        fetch: identity.Fetch | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._clock = clock
        self._http = None
        if fetch is None and (config.studio_enabled or config.oidc_issuer):
            self._http = identity.new_http_client()
            fetch = identity.http_fetcher(self._http)
        self.studio = (
            identity.StudioVerifier(config, fetch, clock=clock)
            if config.studio_enabled and fetch is not None
            else None
        )
        self.oidc = (
            identity.OidcVerifier(config, fetch, clock=clock)
            if config.oidc_issuer and fetch is not None
            else None
        )
        self.failures = FailureLimiter(config.auth_failure_limit, config.auth_failure_window)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def authenticate(
        self, host: projects.ProjectHost, token: str | None, host_header: str | None
    ) -> Access | None:
        if token is None:
            return None if self.config.require_auth else ANONYMOUS
        if token.count(".") == 2:
            return await self._jwt(host, token, request_host(host_header))
        if token.startswith(tokens.PREFIX):
            if not self.config.secret:
                return None
            token_hash = tokens.verified_hash(token, self.config.secret, host.project_id)
            return None if token_hash is None else self._service_token(host, token_hash)
        external_id, dot, secret = token.partition(".")
        if dot and external_id and secret:
            name = await host.read(_session_workspace(token))
            return None if name is None else Access(kind="session", workspaces=(name,))
        if is_super_token(self.config, token):
            return SUPER
        return self._service_token(host, sha256_hex(token))

    def _service_token(self, host: projects.ProjectHost, token_hash: str) -> Access | None:
        token = host.admin.token_by_hash(token_hash)
        if token is None or not token.active(int(self._clock())):
            return None
        principal = host.admin.principal(token.principal_id)
        return Access(
            kind="token",
            workspaces=scope(token.workspaces),
            principal=None if principal is None else principal.render(),
            principal_id=token.principal_id,
        )

    async def _jwt(
        self, host: projects.ProjectHost, token: str, audience_host: str
    ) -> Access | None:
        verified: identity.Identity | None = None
        if self.oidc is not None and identity.unverified_issuer(token) == self.oidc.issuer:
            verified = await self.oidc.verify(token, host.project_id)
        elif self.studio is not None:
            verified = await self.studio.verify(token, audience_host)
        if verified is None:
            return None
        subject = verified.subject
        principal = host.admin.user(subject)
        if principal is None:
            now = int(self._clock())
            principal = await host.write_admin(lambda admin: admin.user_principal(subject, now))
        return Access(
            kind="user",
            workspaces=scope(verified.workspaces),
            principal=principal.render(),
            principal_id=principal.id,
        )


# --- Authorisation of commands -------------------------------------------------------------


async def authorize(access: Access, command: Any, host: projects.ProjectHost) -> str | None:
    """None if ``access`` may apply ``command``; else ``"restricted"`` or ``"forbidden"``.

    An unknown or archived workspace passes, so the core answers 404 for it: existence
    is checked before permission.
    """
    if access.full:
        return None
    kind = type(command).__name__
    if kind in UNSCOPED:
        return None
    workspace_id = getattr(command, "workspace_id", None)
    current = await _workspace_name(host, workspace_id) if isinstance(workspace_id, str) else None
    if kind in NAME_SCOPED:
        name = getattr(command, "name", None)
        if current is not None and not access.may_write(current):
            return "restricted"
        if isinstance(name, str) and not access.may_write(name):
            return "restricted"
        return None
    if current is not None and not access.may_write(current):
        return "forbidden"
    return None


async def _workspace_name(host: projects.ProjectHost, workspace_id: str) -> str | None:
    def read(db: sqlite3.Connection, _: core.Orchestrator) -> str | None:
        workspace = views.workspaces(db).get(workspace_id)
        if workspace is None or workspace.get("state") == "archived":
            return None
        return str(workspace["name"])

    return await host.read(read)


def subprotocol_token(subprotocols: list[str], kind: str) -> str | None:
    """The token carried as ``<kind>.<base64url>`` in a WebSocket sub-protocol offer."""
    prefix = kind + "."
    for offered in subprotocols:
        if not offered.startswith(prefix):
            continue
        payload = offered[len(prefix) :]
        try:
            return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
    return None
