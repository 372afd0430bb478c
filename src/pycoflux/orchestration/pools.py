"""Pools: named launch configurations of a workspace (``semantics.md`` §2.16).

A pool says which modules a launched worker hosts, the tags it offers and how to start
one (its *launcher*). Definitions and launchers are content-addressed, so a pool only
gets a new history row when its definition really changed. This module holds the pure
parts: validating a pool object from the API, merging an update patch into the current
definition, the hashes, and the JSON shapes the API and the topics show.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pycoflux.orchestration import model

POOL_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,19}$", re.IGNORECASE)
MODULE_PART = re.compile(r"^[a-z_][a-z0-9_]*$", re.IGNORECASE)
TAG_KEY = re.compile(r"^[a-z0-9_-]{1,20}$", re.IGNORECASE)
TAG_VALUE = re.compile(r"^[a-z0-9_-]{1,30}$", re.IGNORECASE)

LAUNCHER_TYPES = ("docker", "process", "kubernetes")
PULL_POLICIES = ("Always", "Never", "IfNotPresent")
# Left out of the pools topic (secrets, or too noisy to show); ``get_pools`` keeps them.
TOPIC_HIDDEN = frozenset(
    {"token", "caCert", "nodeSelector", "tolerations", "imagePullSecrets", "hostAliases"}
)

LAUNCH_THROTTLE_MS = 10_000  # a pool launches at most once per this
IDLE_DRAIN_MS = 5_000  # an idle launched worker drains after this
POLL_CONNECTED_MS = 30_000
POLL_DISCONNECTED_MS = 5_000


class WorkerState(enum.IntEnum):
    ACTIVE = 0
    PAUSED = 1  # not used by 0.12
    DRAINING = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class InvalidPoolError(Exception):
    """The pool object (or a patch of it) is not valid."""


class TypeChangeError(Exception):
    """An update would change the type of a pool's launcher."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Pool:
    """A pool's definition: what its launched workers host and offer, and how to start one."""

    modules: tuple[str, ...] = ()
    provides: model.TagSet = field(default_factory=dict)
    accepts: model.TagSet = field(default_factory=dict)
    launcher: dict[str, Any] | None = None  # {"type": ..., camelCase fields}

    @property
    def launcher_type(self) -> str | None:
        return None if self.launcher is None else str(self.launcher["type"])


# --- Field checks -----------------------------------------------------------------------

Check = Callable[[Any], Any]


def _text(limit: int | None) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str) or (limit is not None and len(value) > limit):
            raise InvalidPoolError()
        return value

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidPoolError()
    return value


def _positive(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidPoolError()
    return value


def _argv(value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidPoolError()
    return list(value)


def _string_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidPoolError()
    return dict(value)


def _env(value: Any) -> dict[str, str]:
    env = _string_map(value)
    if any(not key or key.upper().startswith("COFLUX_") for key in env):
        raise InvalidPoolError()
    return env


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidPoolError()
    return dict(value)


def _listing(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidPoolError()
    return list(value)


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidPoolError()
    return list(value)


def _pull_policy(value: Any) -> str:
    if value not in PULL_POLICIES:
        raise InvalidPoolError()
    return str(value)


COMMON_FIELDS: dict[str, Check] = {
    "serverHost": _text(200),
    "serverSecure": _boolean,
    "adapter": _argv,
    "concurrency": _positive,
    "env": _env,
}
TYPE_FIELDS: dict[str, dict[str, Check]] = {
    "docker": {"image": _text(200), "dockerHost": _text(200)},
    "process": {"directory": _text(500)},
    "kubernetes": {
        "image": _text(200),
        "namespace": _text(253),
        "serviceAccount": _text(253),
        "apiServer": _text(500),
        "token": _text(None),
        "caCert": _text(None),
        "insecure": _boolean,
        "imagePullPolicy": _pull_policy,
        "nodeSelector": _mapping,
        "tolerations": _listing,
        "imagePullSecrets": _strings,
        "hostAliases": _listing,
        "resources": _mapping,
        "labels": _string_map,
        "annotations": _string_map,
        "activeDeadlineSeconds": _positive,
        "volumes": _listing,
        "volumeMounts": _listing,
    },
}
REQUIRED_FIELDS = {"docker": ("image",), "process": ("directory",), "kubernetes": ("image",)}


def _fields(launcher_type: str) -> dict[str, Check]:
    return {**TYPE_FIELDS[launcher_type], **COMMON_FIELDS}


def _launcher_type(value: Any, enabled: Iterable[str]) -> str:
    if value not in LAUNCHER_TYPES or value not in set(enabled):
        raise InvalidPoolError()
    return str(value)


def valid_name(name: Any) -> bool:
    return isinstance(name, str) and bool(POOL_NAME.match(name))


def _modules(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise InvalidPoolError()
    for item in items:
        if not isinstance(item, str) or not item or len(item) > 100:
            raise InvalidPoolError()
        if not all(part == "*" or MODULE_PART.match(part) for part in item.split(".")):
            raise InvalidPoolError()
    return tuple(items)


def _tag_set(value: Any) -> model.TagSet:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 10:
        raise InvalidPoolError()
    tags: model.TagSet = {}
    for key, raw in value.items():
        if not isinstance(key, str) or not TAG_KEY.match(key):
            raise InvalidPoolError()
        items = raw if isinstance(raw, list) else [raw]
        if len(items) > 10:
            raise InvalidPoolError()
        values = []
        for item in items:
            if isinstance(item, bool):
                item = "true" if item else "false"
            if not isinstance(item, str) or not TAG_VALUE.match(item):
                raise InvalidPoolError()
            values.append(item)
        tags[key] = values
    return tags


def parse_launcher(value: Any, enabled: Iterable[str]) -> dict[str, Any]:
    """A complete launcher object: an enabled type, its required fields, checked fields."""
    if not isinstance(value, dict):
        raise InvalidPoolError()
    launcher_type = _launcher_type(value.get("type"), enabled)
    checks = _fields(launcher_type)
    launcher: dict[str, Any] = {"type": launcher_type}
    for key, raw in value.items():
        if key == "type" or key not in checks or raw is None:
            continue  # unknown keys are ignored
        launcher[key] = checks[key](raw)
    if any(key not in launcher for key in REQUIRED_FIELDS[launcher_type]):
        raise InvalidPoolError()
    return launcher


def parse_pool(value: Any, enabled: Iterable[str]) -> Pool:
    """A pool object from the API (create, or one entry of a bulk replace)."""
    if not isinstance(value, dict):
        raise InvalidPoolError()
    launcher = value.get("launcher")
    return Pool(
        modules=() if value.get("modules") is None else _modules(value["modules"]),
        provides=_tag_set(value.get("provides")),
        accepts=_tag_set(value.get("accepts")),
        launcher=None if launcher is None else parse_launcher(launcher, enabled),
    )


def check_patch(value: Any, enabled: Iterable[str]) -> dict[str, Any]:
    """An update patch, type-checked: present keys replace, ``None`` unsets.

    A launcher patch without ``type`` changes fields of the existing launcher; with one it
    must name an enabled type (whether it matches the existing one is decided on merge).
    """
    if not isinstance(value, dict):
        raise InvalidPoolError()
    patch: dict[str, Any] = {}
    if "modules" in value:
        patch["modules"] = None if value["modules"] is None else _modules(value["modules"])
    for key in ("provides", "accepts"):
        if key in value:
            patch[key] = None if value[key] is None else _tag_set(value[key])
    if "launcher" in value:
        raw = value["launcher"]
        if raw is None:
            patch["launcher"] = None
        else:
            if not isinstance(raw, dict):
                raise InvalidPoolError()
            launcher: dict[str, Any] = {}
            if raw.get("type") is not None:
                launcher["type"] = _launcher_type(raw["type"], enabled)
            checks = (
                _fields(launcher["type"])
                if "type" in launcher
                else {k: v for fields in TYPE_FIELDS.values() for k, v in fields.items()}
                | COMMON_FIELDS
            )
            for key, item in raw.items():
                if key == "type" or key not in checks:
                    continue
                if item is None:
                    launcher[key] = None
                elif key == "env":
                    env = _mapping(item)
                    if any(not k or k.upper().startswith("COFLUX_") for k in env):
                        raise InvalidPoolError()
                    if not all(v is None or isinstance(v, str) for v in env.values()):
                        raise InvalidPoolError()
                    launcher[key] = env
                else:
                    launcher[key] = checks[key](item)
            patch["launcher"] = launcher
    return patch


def merge(current: Pool, patch: Mapping[str, Any]) -> Pool:
    """``current`` with ``patch`` applied (see ``check_patch``); raises ``TypeChangeError``."""
    modules = current.modules
    if "modules" in patch:
        modules = tuple(patch["modules"] or ())
    provides = current.provides if "provides" not in patch else patch["provides"] or {}
    accepts = current.accepts if "accepts" not in patch else patch["accepts"] or {}
    launcher = current.launcher
    if "launcher" in patch:
        launcher = _merge_launcher(current.launcher, patch["launcher"])
    return Pool(modules=modules, provides=provides, accepts=accepts, launcher=launcher)


def _merge_launcher(
    current: dict[str, Any] | None, patch: dict[str, Any] | None
) -> dict[str, Any] | None:
    if patch is None:
        return None
    new_type = patch.get("type")
    if current is not None and new_type is not None and new_type != current["type"]:
        raise TypeChangeError()
    if current is None and new_type is None:
        raise InvalidPoolError()  # nothing to patch and no type to start from
    merged = dict(current or {"type": new_type})
    allowed = _fields(str(merged["type"]))
    for key, value in patch.items():
        if key == "type":
            continue
        if key not in allowed:
            raise InvalidPoolError()  # a field of another launcher type
        if value is None:
            merged.pop(key, None)
        elif key == "env":
            env = {**merged.get("env", {}), **value}
            env = {k: v for k, v in env.items() if v is not None}
            if env:
                merged["env"] = env
            else:
                merged.pop("env", None)
        else:
            merged[key] = value
    return merged


# --- Hashes --------------------------------------------------------------------------------


def _sha256(*parts: bytes) -> str:
    return hashlib.sha256(b"\x00".join(parts)).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def tag_set_hash(tags: model.TagSet) -> str | None:
    """SHA-256 of ``key=v1,v2`` entries sorted by key and joined by ``;``; None when empty."""
    if not tags:
        return None
    text = ";".join(f"{key}={','.join(sorted(tags[key]))}" for key in sorted(tags))
    return hashlib.sha256(text.encode()).hexdigest()


def launcher_hash(launcher: dict[str, Any]) -> str:
    rest = {key: value for key, value in launcher.items() if key != "type"}
    return _sha256(str(launcher["type"]).encode(), _canonical(rest).encode())


def definition_hash(pool: Pool) -> str:
    parts = [
        launcher_hash(pool.launcher) if pool.launcher is not None else None,
        tag_set_hash(pool.provides),
        tag_set_hash(pool.accepts),
    ]
    encoded = [b"\x00" if part is None else part.encode() for part in parts]
    return _sha256(*encoded, "\n".join(sorted(pool.modules)).encode())


def pools_etag(definitions: Mapping[str, str]) -> str:
    """The version of a workspace's pool set: ``name:definition hash`` entries, in name order."""
    entries = [f"{name}:{definitions[name]}".encode() for name in sorted(definitions)]
    return _sha256(*entries)


# --- JSON shapes -----------------------------------------------------------------------------


def export(pool: Pool) -> dict[str, Any]:
    """The ``get_pools`` form: empty tag sets and an absent launcher left out."""
    shown: dict[str, Any] = {"modules": list(pool.modules)}
    if pool.provides:
        shown["provides"] = pool.provides
    if pool.accepts:
        shown["accepts"] = pool.accepts
    if pool.launcher is not None:
        shown["launcher"] = dict(pool.launcher)
    return shown


def topic(pool: Pool, disabled: bool) -> dict[str, Any]:
    """The pools topic form: every field, with sensitive launcher fields left out."""
    launcher = None
    if pool.launcher is not None:
        launcher = {k: v for k, v in pool.launcher.items() if k not in TOPIC_HIDDEN}
    return {
        "modules": list(pool.modules),
        "provides": pool.provides,
        "accepts": pool.accepts,
        "launcher": launcher,
        "state": "disabled" if disabled else "active",
    }


def serves(pool: Pool, module: str) -> bool:
    """Whether a pool's workers host ``module`` (0.12 matches module names exactly)."""
    return module in pool.modules
