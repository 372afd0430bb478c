"""The server's one settings object, built from defaults < ``COFLUX_*`` env < ``coflux server`` flags.

``SETTINGS`` is the single table of everything the server reads from its environment.
``from_env`` parses it, ``describe`` prints it at start-up (secrets only as set / not
set), and ``reference`` renders ``docs/configuration.md`` from it; a test keeps the
document, the table and the ``coflux server`` flags in step.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pycoflux import errors

log = logging.getLogger("pycoflux.server")

DEFAULT_STUDIO_URL = "https://studio.coflux.com"
LAUNCHER_TYPES = ("docker", "process", "kubernetes")
OIDC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
PROJECT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")
HEX_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Resolved server settings; one field per row of ``SETTINGS``."""

    port: int = 7777
    bind: str = "0.0.0.0"
    data_dir: Path = field(default_factory=lambda: Path.cwd() / "data")
    project: str | None = None
    public_host: str | None = None
    require_auth: bool = True
    super_token_hash: str | None = field(default=None, repr=False)
    legacy_super_token: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    studio_teams: tuple[str, ...] | None = None
    studio_url: str = DEFAULT_STUDIO_URL
    allow_origins: tuple[str, ...] = (DEFAULT_STUDIO_URL,)
    launcher_types: tuple[str, ...] = ()
    cli_path: str = "coflux"
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_workspaces_claim: str | None = None
    oidc_algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    max_body_size: int | None = 16 * 1024 * 1024
    max_blob_size: int | None = None
    auth_failure_limit: int = 20
    auth_failure_window: int = 60
    epoch_size: int = 100 * 1024 * 1024
    project_idle_timeout: int = 30

    @property
    def base_domain(self) -> str | None:
        """The domain under which ``%`` subdomains name projects, if subdomain routing is on."""
        if not self.public_host or not self.public_host.startswith("%"):
            return None
        return self.public_host[1:].lstrip(".").split(":", 1)[0].lower()

    @property
    def studio_enabled(self) -> bool:
        return self.studio_teams is not None

    @property
    def studio_base(self) -> str:
        """The Studio URL for building request URLs (the issuer check uses it verbatim)."""
        return self.studio_url.rstrip("/")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- Parsers: text -> value, or ValueError naming what is wrong ----------------------


def _split(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"must be an integer, got {value!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"must be between 1 and 65535, got {port}")
    return port


def _path(value: str) -> Path:
    return Path(os.path.abspath(Path(value).expanduser()))


def _project(value: str) -> str:
    if not PROJECT_ID.match(value) or value in (".", ".."):
        raise ValueError(f"{value!r} is not a valid project id (letters, digits, '_', '.', '-')")
    return value


def _require_auth(value: str) -> bool:
    return value.lower() != "false"


def _sha256(value: str) -> str:
    if not HEX_SHA256.match(value):
        raise ValueError("must be the 64-character hex SHA-256 of the super token")
    return value.lower()


def _url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"must be an http(s) URL, got {value!r}")
    return value


def _launchers(value: str) -> tuple[str, ...]:
    known = []
    for item in _split(value):
        if item in LAUNCHER_TYPES:
            known.append(item)
        else:
            log.warning("COFLUX_LAUNCHER_TYPES: ignoring unknown launcher type %r", item)
    return tuple(known)


def _algorithms(value: str) -> tuple[str, ...]:
    items = _split(value)
    for item in items:
        if item not in OIDC_ALGORITHMS:
            raise ValueError(f"unsupported algorithm {item!r} (use: {', '.join(OIDC_ALGORITHMS)})")
    if not items:
        raise ValueError("must name at least one algorithm")
    return items


def _size(value: str) -> int | None:
    try:
        size = int(value)
    except ValueError:
        raise ValueError(f"must be a number of bytes, got {value!r}") from None
    if size < 0:
        raise ValueError(f"must not be negative, got {size}")
    return size or None


def _seconds_or_never(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"must be a whole number of seconds, got {value!r}") from None
    if number < 0:
        raise ValueError(f"must not be negative, got {number}")
    return number


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"must be an integer, got {value!r}") from None
    if number < 1:
        raise ValueError(f"must be at least 1, got {number}")
    return number


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """One row of the settings table."""

    env: str
    field: str
    default: str  # as documented
    help: str
    parse: Callable[[str], Any]
    flag: str | None = None  # the `coflux server` flag that sets it
    secret: bool = False
    empty_is_unset: bool = True
    deprecated_alias: str | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting(
        env="PORT",
        field="port",
        default="7777",
        help="TCP port to listen on.",
        parse=_port,
        flag="--port",
    ),
    Setting(
        env="COFLUX_BIND",
        field="bind",
        default="0.0.0.0",
        help="Address to listen on. Use `127.0.0.1` behind a reverse proxy on the same host.",
        parse=str,
    ),
    Setting(
        env="COFLUX_DATA_DIR",
        field="data_dir",
        default="`./data` (absolute)",
        help="Root of all persistent data: `projects/<id>/*.sqlite` and `blobs/`.",
        parse=_path,
        flag="--data-dir",
    ),
    Setting(
        env="COFLUX_PROJECT",
        field="project",
        default="unset",
        help="Restrict the server to one project. Without a `%` public host every request "
        "goes to it; with one, only this subdomain is accepted.",
        parse=_project,
        flag="--project",
    ),
    Setting(
        env="COFLUX_PUBLIC_HOST",
        field="public_host",
        default="unset (`localhost:PORT`)",
        help="Public `host[:port]`. A leading `%` is a template for the project id "
        "(`%.coflux.example.com`) and turns on subdomain routing.",
        parse=str,
        flag="--public-host",
    ),
    Setting(
        env="COFLUX_REQUIRE_AUTH",
        field="require_auth",
        default="`true`",
        help="Authentication is required unless this is exactly `false` (any case).",
        parse=_require_auth,
        flag="--no-auth",
        empty_is_unset=False,
    ),
    Setting(
        env="COFLUX_SUPER_TOKEN_HASH",
        field="super_token_hash",
        default="unset",
        help="Lowercase hex SHA-256 of the super token (full access, the only credential "
        "that may rotate epochs). `coflux server --super-token X` hashes X for you.",
        parse=_sha256,
        flag="--super-token-hash",
        secret=True,
    ),
    Setting(
        env="COFLUX_SUPER_TOKEN",
        field="legacy_super_token",
        default="unset",
        help="Deprecated name of `COFLUX_SUPER_TOKEN_HASH`, used only when that is unset. "
        "Holds the super token itself or its SHA-256 hex; both are accepted.",
        parse=str,
        secret=True,
    ),
    Setting(
        env="COFLUX_SECRET",
        field="secret",
        default="unset",
        help="Server secret from which each project's service-token signing key is derived. "
        "Service tokens need it; changing it invalidates every service token.",
        parse=str,
        flag="--secret",
        secret=True,
    ),
    Setting(
        env="COFLUX_STUDIO_TEAMS",
        field="studio_teams",
        default="unset (Studio sign-in off)",
        help="Comma-separated Studio team ids allowed in. Set (even empty) turns on Studio "
        "JWT authentication.",
        parse=_split,
        flag="--team",
        empty_is_unset=False,
        deprecated_alias="COFLUX_NAMESPACES",
    ),
    Setting(
        env="COFLUX_STUDIO_URL",
        field="studio_url",
        default=f"`{DEFAULT_STUDIO_URL}`",
        help="Studio base URL: JWKS at `<url>/.well-known/jwks.json`, the required JWT "
        "issuer (exact match), and the target of the root redirect.",
        parse=_url,
        flag="--studio-url",
    ),
    Setting(
        env="COFLUX_ALLOW_ORIGINS",
        field="allow_origins",
        default=f"`{DEFAULT_STUDIO_URL}`",
        help="Comma-separated CORS origin allowlist; an entry may contain one `*`. "
        "Set but empty allows no origin.",
        parse=_split,
        flag="--allow-origin",
        empty_is_unset=False,
    ),
    Setting(
        env="COFLUX_LAUNCHER_TYPES",
        field="launcher_types",
        default="unset (none)",
        help="Comma-separated launcher types pools may use: `docker`, `process`, "
        "`kubernetes`. Unknown names are ignored with a warning.",
        parse=_launchers,
        flag="--launcher",
    ),
    Setting(
        env="COFLUX_CLI_PATH",
        field="cli_path",
        default="`coflux`",
        help="Executable the process launcher runs as `<path> worker ...`.",
        parse=str,
    ),
    Setting(
        env="COFLUX_OIDC_ISSUER",
        field="oidc_issuer",
        default="unset (OIDC sign-in off)",
        help="Issuer URL of any OpenID Connect provider whose JWTs are accepted "
        "(discovery at `<issuer>/.well-known/openid-configuration`). Needs "
        "`COFLUX_OIDC_AUDIENCE`.",
        parse=_url,
    ),
    Setting(
        env="COFLUX_OIDC_AUDIENCE",
        field="oidc_audience",
        default="unset",
        help="The `aud` an OIDC token must carry (usually the client id). A `%` in it "
        "stands for the project id, binding tokens to one project.",
        parse=str,
    ),
    Setting(
        env="COFLUX_OIDC_WORKSPACES_CLAIM",
        field="oidc_workspaces_claim",
        default="unset (all workspaces)",
        help="Claim holding the caller's workspace patterns (a list, or a space/comma "
        "separated string). Absent claim or unset variable: all workspaces.",
        parse=str,
    ),
    Setting(
        env="COFLUX_OIDC_ALGORITHMS",
        field="oidc_algorithms",
        default="`RS256,ES256,EdDSA`",
        help="Signature algorithms accepted on OIDC tokens (asymmetric only).",
        parse=_algorithms,
    ),
    Setting(
        env="COFLUX_MAX_BODY_SIZE",
        field="max_body_size",
        default="`16777216` (16 MiB)",
        help="Largest request body accepted on `/api`, `/logs` and `/metrics` (bytes; "
        "`0` = no limit). Larger bodies get `413`.",
        parse=_size,
    ),
    Setting(
        env="COFLUX_MAX_BLOB_SIZE",
        field="max_blob_size",
        default="unset (no limit)",
        help="Largest blob accepted by `PUT /blobs/<key>` (bytes; `0` = no limit).",
        parse=_size,
    ),
    Setting(
        env="COFLUX_AUTH_FAILURE_LIMIT",
        field="auth_failure_limit",
        default="`20`",
        help="Failed authentications one client address may make per window before its "
        "requests get `429` until the window ends.",
        parse=_positive,
    ),
    Setting(
        env="COFLUX_AUTH_FAILURE_WINDOW",
        field="auth_failure_window",
        default="`60`",
        help="Length of that window, in seconds.",
        parse=_positive,
    ),
    Setting(
        env="COFLUX_EPOCH_SIZE",
        field="epoch_size",
        default="`104857600` (100 MiB)",
        help="Size (bytes) at which a project's orchestration database is archived as an "
        "epoch and a fresh one started; checked every 60 s. `rotate_epoch` forces it.",
        parse=_positive,
    ),
    Setting(
        env="COFLUX_PROJECT_IDLE_TIMEOUT",
        field="project_idle_timeout",
        default="`30`",
        help="Seconds after which a project with no sessions, listeners or timers is stopped "
        "(files closed); the next request starts it again. `0` keeps projects running.",
        parse=_seconds_or_never,
    ),
)

SETTINGS_BY_ENV = {setting.env: setting for setting in SETTINGS}


def from_env(environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Read the server's environment; an invalid value is a ConfigError naming the variable."""
    env = os.environ if environ is None else environ
    changes: dict[str, Any] = {}
    for setting in SETTINGS:
        name = setting.env
        alias = setting.deprecated_alias
        if name not in env and alias is not None and alias in env:
            name = alias
            log.warning("%s is deprecated; use %s", name, setting.env)
        if name not in env or (setting.empty_is_unset and env[name] == ""):
            continue
        try:
            changes[setting.field] = setting.parse(env[name])
        except ValueError as e:
            raise errors.ConfigError(f"{name}: {e}") from None
    if "legacy_super_token" in changes:
        if "super_token_hash" in changes:
            del changes["legacy_super_token"]
        else:
            log.warning("COFLUX_SUPER_TOKEN is deprecated; use COFLUX_SUPER_TOKEN_HASH")
    config = replace(ServerConfig(), **changes)
    validate(config)
    return config


def validate(config: ServerConfig) -> None:
    """Checks across settings (each value alone already parsed)."""
    if config.oidc_issuer and not config.oidc_audience:
        raise errors.ConfigError(
            "COFLUX_OIDC_AUDIENCE: must be set when COFLUX_OIDC_ISSUER is set"
            " (otherwise tokens minted for any client of the issuer would be accepted)"
        )
    if config.oidc_audience and not config.oidc_issuer:
        raise errors.ConfigError("COFLUX_OIDC_ISSUER: must be set when COFLUX_OIDC_AUDIENCE is set")


def _shown(setting: Setting, value: Any) -> str:
    if setting.secret:
        return "set" if value else "not set"
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value) if value else "(none)"
    return str(value)


def describe(config: ServerConfig) -> list[str]:
    """One line per setting with its resolved value; secrets only as set / not set."""
    width = max(len(s.env) for s in SETTINGS)
    return [f"  {s.env.ljust(width)}  {_shown(s, getattr(config, s.field))}" for s in SETTINGS]


def reference() -> str:
    """The text of ``docs/configuration.md``."""
    lines = [
        "# Server configuration",
        "",
        "<!-- Generated from SETTINGS in src/pycoflux/server/config.py;"
        " a test fails when this file is stale. -->",
        "",
        "The server reads these environment variables once, at start-up. `coflux server`",
        "sets them from its flags (flag > `COFLUX_SERVER_*` > `[server]` in `coflux.toml` >",
        "the variable itself > default). An invalid value stops the server with an error",
        "naming the variable. At start-up the server prints every resolved value; secrets",
        "are shown only as `set` or `not set`.",
        "",
        "| Variable | `coflux server` flag | Default | Meaning |",
        "|---|---|---|---|",
    ]
    for s in SETTINGS:
        flag = f"`{s.flag}`" if s.flag else ""
        if s.flag == "--super-token-hash":
            flag = "`--super-token-hash`, `--super-token` (hashed)"
        if s.flag == "--no-auth":
            flag = "`--no-auth` (sets `false`)"
        if s.flag in ("--team", "--launcher", "--allow-origin"):
            flag = f"`{s.flag}` (repeatable)"
        meaning = s.help
        if s.secret:
            meaning += " Secret: never printed or logged."
        if s.deprecated_alias:
            meaning += f" Deprecated alias: `{s.deprecated_alias}` (used only when this is unset)."
        lines.append(f"| `{s.env}` | {flag} | {s.default} | {meaning} |")
    lines += [
        "",
        "`coflux server --image IMAGE` runs that Docker image instead of the built-in server,",
        "passing the same variables with `--env` (see `docs/cli.md`).",
        "",
        "## Credentials",
        "",
        "A bearer token is recognised by its shape: a JWT (Studio when its issuer is",
        "`COFLUX_STUDIO_URL`, OIDC when it is `COFLUX_OIDC_ISSUER`), a service token",
        "(`cflx_...`, needs `COFLUX_SECRET`), a worker session token (`<id>.<secret>`), or",
        "else the super token. A presented token is always checked, even with auth off.",
        "",
        "OIDC tokens must be signed with one of `COFLUX_OIDC_ALGORITHMS` by a key from the",
        "issuer's JWKS (found through its discovery document), carry `iss` equal to",
        "`COFLUX_OIDC_ISSUER`, an `aud` (string or list) containing `COFLUX_OIDC_AUDIENCE`",
        "with `%` replaced by the project id, an unexpired `exp` and a non-empty `sub`. The",
        'user is recorded as `{"type": "user", "externalId": <sub>}`.',
        "",
        "## Responses these settings add",
        "",
        "| Situation | Response |",
        "|---|---|",
        "| body over `COFLUX_MAX_BODY_SIZE` / `COFLUX_MAX_BLOB_SIZE` |"
        ' `413 {"error":"payload_too_large"}` |',
        "| a client over `COFLUX_AUTH_FAILURE_LIMIT` failed authentications |"
        ' `429 {"error":"too_many_requests"}` with `retry-after` (seconds) |',
        '| `GET /health`, everything usable | `200 {"status":"ok","db":"ok"}` |',
        "| `GET /health`, a project store or the blob store failing |"
        ' `503 {"status":"degraded","db":...,"blobs":...,"failed":{...}}` |',
        "",
        "Only requests that present a credential count towards the failure limit, and while",
        "a client is over it every credential it presents is refused unchecked.",
        "",
    ]
    return "\n".join(lines)


def field_names() -> set[str]:
    return {f.name for f in fields(ServerConfig)}
