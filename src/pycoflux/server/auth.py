"""Who is calling: bearer tokens checked against the project's configuration and sessions."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from pycoflux.server import config as config_module


@dataclass(frozen=True, slots=True, kw_only=True)
class Access:
    """An authenticated caller; ``workspaces`` are name patterns it may act on."""

    kind: str  # anonymous | super | session
    workspaces: tuple[str, ...] = ("*",)
    principal: dict[str, str] | None = None


ANONYMOUS = Access(kind="anonymous")


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def is_super_token(config: config_module.ServerConfig, token: str) -> bool:
    expected = config.super_token_hash
    if not expected:
        return False
    digest = hashlib.sha256(token.encode()).hexdigest()
    # Constant-time comparisons: the legacy variable may hold the token itself.
    return hmac.compare_digest(digest, expected) or hmac.compare_digest(token, expected)


def authenticate(
    config: config_module.ServerConfig, token: str | None, session_valid: bool
) -> Access | None:
    """The caller's access, or None when the request must be refused with 401."""
    if token is None:
        return None if config.require_auth else ANONYMOUS
    if is_super_token(config, token):
        return Access(kind="super")
    if session_valid:
        return Access(kind="session")
    return None if config.require_auth else ANONYMOUS
