"""Resolved CLI settings: flag > ``COFLUX_*`` environment > ``coflux.toml`` > default."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pycoflux import errors

if TYPE_CHECKING:
    from pycoflux.cli.client import Client

DEFAULT_HOST = "localhost:7777"
DEFAULT_WORKSPACE = "default"

# The typed configuration (cli.md §2.3). `None` marks a table whose keys are checked
# one level down; the strings name the expected type for the strict decoder.
SCHEMA: dict[str, Any] = {
    "host": "string",
    "project": "string",
    "token": "string",
    "team": "string",
    "workspace": "string",
    "secure": "bool",
    "output": "string",
    "log_level": "string",
    "worker": {
        "adapter": "list",
        "modules": "list",
        "concurrency": "int",
        "provides": "list",
        "accepts": "list",
        "executor": "string",
    },
    "blobs": {"threshold": "int", "stores": "stores"},
    "logs": {
        "type": "string",
        "url": "string",
        "token": "string",
        "batch_size": "int",
        "flush_interval": "float",
    },
    "metrics": {
        "type": "string",
        "url": "string",
        "token": "string",
        "batch_size": "int",
        "flush_interval": "float",
    },
    "server": {
        "port": "int",
        "data_dir": "string",
        "image": "string",
        "project": "string",
        "public_host": "string",
        "auth": "bool",
        "super_token": "string",
        "super_token_hash": "string",
        "secret": "string",
        "studio_teams": "list",
        "studio_url": "string",
        "allow_origins": "list",
        "launcher_types": "list",
    },
}
_STORE_KEYS = {"type", "url", "token", "bucket", "prefix", "region"}

# Env-only aliases: the upstream test-suite sets the first; it means the second.
ENV_ALIASES = {"logs.flush_interval": ("COFLUX_LOGS_STORE_FLUSH_INTERVAL",)}


@dataclass(frozen=True, slots=True, kw_only=True)
class GlobalFlags:
    """The persistent flags as given on the command line (empty means "not given")."""

    config: str | None = None
    host: str | None = None
    project: str | None = None
    token: str | None = None
    team: str | None = None
    workspace: str | None = None
    log_level: str | None = None
    output: str | None = None


def env_name(key: str) -> str:
    return "COFLUX_" + key.upper().replace(".", "_")


def parse_bool(text: str) -> bool | None:
    lowered = text.strip().lower()
    if lowered in ("1", "t", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "f", "false", "no", "n", "off", ""):
        return False
    return None


def is_localhost(host: str) -> bool:
    """Localhost-like hosts default to plain HTTP (cli.md §2.5)."""
    if host.startswith("[::1]"):
        return True
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.lower()
    return name in ("localhost", "127.0.0.1") or name.endswith(".localhost")


def load_config_file(path: str) -> dict[str, Any]:
    """Read ``path`` as TOML; a missing file is empty, a broken one warns and is empty."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return {}
    except OSError as e:
        print(f"Warning: error reading config file: {e}", file=sys.stderr)
        return {}
    import tomllib

    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        print(f"Warning: error reading config file: {e}", file=sys.stderr)
        return {}


def check_config(data: Mapping[str, Any]) -> None:
    """The strict decode used by worker/manifests: unknown keys or wrong types fail."""
    problems: list[str] = []

    def check_type(key: str, kind: str, value: Any) -> None:
        ok = {
            "string": isinstance(value, str),
            "bool": isinstance(value, bool),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool),
            "list": isinstance(value, list | str),
            "stores": isinstance(value, list) and all(isinstance(s, dict) for s in value),
        }[kind]
        if not ok:
            problems.append(
                f"'{key}' expected type '{kind}', got unconvertible type '{type(value).__name__}'"
            )
        elif kind == "stores":
            for n, store in enumerate(value):
                unknown = sorted(set(store) - _STORE_KEYS)
                if unknown:
                    problems.append(f"'{key}[{n}]' has invalid keys: {', '.join(unknown)}")

    top_unknown = sorted(k for k in data if k not in SCHEMA)
    if top_unknown:
        problems.append(f"'' has invalid keys: {', '.join(top_unknown)}")
    for key, spec in SCHEMA.items():
        if key not in data:
            continue
        value = data[key]
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                problems.append(f"'{key}' expected a map, got '{type(value).__name__}'")
                continue
            unknown = sorted(k for k in value if k not in spec)
            if unknown:
                problems.append(f"'{key}' has invalid keys: {', '.join(unknown)}")
            for sub, kind in spec.items():
                if sub in value:
                    check_type(f"{key}.{sub}", kind, value[sub])
        else:
            check_type(key, spec, value)
    if problems:
        details = " ".join(f"* {p}" for p in problems)
        raise errors.ConfigError(
            f"failed to unmarshal config: {len(problems)} error(s) decoding: {details}"
        )


class Context:
    """What every command needs: settings (resolved lazily) and a server client."""

    def __init__(self, flags: GlobalFlags, environ: Mapping[str, str] | None = None) -> None:
        self.flags = flags
        self.environ = os.environ if environ is None else environ
        self._file: dict[str, Any] | None = None
        self._client: Client | None = None
        self._token: tuple[str | None] | None = None

    # --- config sources --------------------------------------------------------

    @property
    def config_path(self) -> str:
        if self.flags.config:
            return self.flags.config
        return self.environ.get("COFLUX_CONFIG") or "coflux.toml"

    @property
    def file(self) -> dict[str, Any]:
        if self._file is None:
            self._file = load_config_file(self.config_path)
        return self._file

    def check_config(self) -> None:
        check_config(self.file)

    def _lookup(self, key: str) -> tuple[Any, bool]:
        """The value for ``key`` and whether it came from the environment (a string)."""
        for name in (env_name(key), *ENV_ALIASES.get(key, ())):
            if name in self.environ:
                return self.environ[name], True
        node: Any = self.file
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None, False
            node = node[part]
        return node, False

    def raw(self, key: str) -> Any:
        """The env value (as a string) or the file value for ``key``; ``None`` if neither."""
        return self._lookup(key)[0]

    def string(self, key: str, flag: str | None = None) -> str | None:
        if flag:
            return flag
        value = self.raw(key)
        if value is None or isinstance(value, dict | list):
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value) if value != "" else None

    def strings(self, key: str) -> list[str]:
        value, from_env = self._lookup(key)
        if value is None:
            return []
        if isinstance(value, list):
            return [str(v) for v in value]
        if from_env:
            return [p for p in str(value).split(",") if p != ""]
        # A plain string in the file is split on whitespace, as viper does.
        return str(value).split()

    def integer(self, key: str) -> int | None:
        value = self.raw(key)
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            try:
                return int(float(str(value).strip()))
            except ValueError:
                raise errors.ConfigError(
                    f"invalid value for {key}: {value!r} is not an integer"
                ) from None

    def number(self, key: str) -> float | None:
        value = self.raw(key)
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise errors.ConfigError(
                f"invalid value for {key}: {value!r} is not a number"
            ) from None

    def boolean(self, key: str) -> bool | None:
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, bool):
            return value
        return parse_bool(str(value))

    # --- resolved global settings ----------------------------------------------------

    @property
    def host(self) -> str:
        return self.string("host", self.flags.host) or DEFAULT_HOST

    @property
    def secure(self) -> bool:
        explicit = self.boolean("secure")
        return (not is_localhost(self.host)) if explicit is None else explicit

    @property
    def project(self) -> str | None:
        return self.string("project", self.flags.project)

    @property
    def token(self) -> str | None:
        return self.string("token", self.flags.token)

    @property
    def team(self) -> str | None:
        return self.string("team", self.flags.team)

    @property
    def workspace(self) -> str:
        if self.flags.workspace:
            return self.flags.workspace
        for name in ("COFLUX_WORKSPACE",):
            if name in self.environ:
                return self.environ[name]
        value = self.file.get("workspace")
        return value if isinstance(value, str) else DEFAULT_WORKSPACE

    @property
    def output(self) -> str | None:
        return self.string("output", self.flags.output)

    @property
    def json_output(self) -> bool:
        return self.output == "json"

    @property
    def log_level(self) -> str:
        return (self.string("log_level", self.flags.log_level) or "info").lower()

    def require_workspace(self) -> str:
        name = self.workspace
        if not name:
            raise errors.ConfigError(
                "workspace is required (use --workspace, COFLUX_WORKSPACE, or set in config)"
            )
        return name

    def effective_token(self) -> str | None:
        """The bearer token: explicit token, else a Studio project token for the team."""
        if self._token is None:
            token = self.token
            if not token and self.team:
                from pycoflux.cli import studio

                token = studio.project_token(self.team, self.host, self.environ)
            self._token = (token or None,)
        return self._token[0]

    @property
    def client(self) -> Client:
        if self._client is None:
            from pycoflux.cli.client import Client

            self._client = Client(
                host=self.host,
                secure=self.secure,
                token=self.effective_token(),
                project=self.project,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
