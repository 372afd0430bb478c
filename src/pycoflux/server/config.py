"""The server's one settings object, built from defaults < COFLUX_* env < ``coflux server`` flags."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from pycoflux import errors

DEFAULT_STUDIO_URL = "https://studio.coflux.com"
LAUNCHER_TYPES = ("docker", "process", "kubernetes")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Resolved server settings. Field names mirror the ``coflux server`` flags."""

    port: int = 7777
    bind: str = "0.0.0.0"
    data_dir: Path = field(default_factory=lambda: Path.cwd() / "data")
    project: str | None = None
    public_host: str | None = None
    require_auth: bool = True
    super_token_hash: str | None = None
    secret: str | None = None
    studio_teams: tuple[str, ...] | None = None
    studio_url: str = DEFAULT_STUDIO_URL
    allow_origins: tuple[str, ...] = (DEFAULT_STUDIO_URL,)
    launcher_types: tuple[str, ...] = ()
    cli_path: str = "coflux"

    @property
    def base_domain(self) -> str | None:
        """The domain under which ``%`` subdomains name projects, if subdomain routing is on."""
        if not self.public_host or not self.public_host.startswith("%"):
            return None
        return self.public_host[1:].lstrip(".").split(":", 1)[0].lower()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _split(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def from_env(environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Read the server's environment variables (as the upstream server image does)."""
    env = os.environ if environ is None else environ
    config = ServerConfig()
    changes: dict[str, object] = {}
    if "PORT" in env:
        try:
            changes["port"] = int(env["PORT"])
        except ValueError:
            raise errors.ConfigError(f"PORT must be an integer, got {env['PORT']!r}") from None
    if env.get("COFLUX_DATA_DIR"):
        changes["data_dir"] = Path(env["COFLUX_DATA_DIR"])
    if env.get("COFLUX_PROJECT"):
        changes["project"] = env["COFLUX_PROJECT"]
    if env.get("COFLUX_PUBLIC_HOST"):
        changes["public_host"] = env["COFLUX_PUBLIC_HOST"]
    if "COFLUX_REQUIRE_AUTH" in env:
        changes["require_auth"] = env["COFLUX_REQUIRE_AUTH"].lower() != "false"
    token_hash = env.get("COFLUX_SUPER_TOKEN_HASH") or env.get("COFLUX_SUPER_TOKEN")
    if token_hash:
        changes["super_token_hash"] = token_hash.lower()
    if env.get("COFLUX_SECRET"):
        changes["secret"] = env["COFLUX_SECRET"]
    teams = env.get("COFLUX_STUDIO_TEAMS", env.get("COFLUX_NAMESPACES"))
    if teams is not None:
        changes["studio_teams"] = _split(teams)
    if env.get("COFLUX_STUDIO_URL"):
        changes["studio_url"] = env["COFLUX_STUDIO_URL"].rstrip("/")
    if "COFLUX_ALLOW_ORIGINS" in env:
        changes["allow_origins"] = _split(env["COFLUX_ALLOW_ORIGINS"])
    if env.get("COFLUX_LAUNCHER_TYPES"):
        changes["launcher_types"] = tuple(
            t for t in _split(env["COFLUX_LAUNCHER_TYPES"]) if t in LAUNCHER_TYPES
        )
    if env.get("COFLUX_CLI_PATH"):
        changes["cli_path"] = env["COFLUX_CLI_PATH"]
    return replace(config, **changes)  # type: ignore[arg-type]
