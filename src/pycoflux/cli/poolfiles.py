"""The TOML form of a workspace's pools (``pools export``/``pools import``, cli.md §4.9.7-8)."""

from __future__ import annotations

import json
import re
from typing import Any

from pycoflux import errors

# Launcher keys are camelCase on the wire and snake_case in the file.
SNAKE = {
    "dockerHost": "docker_host",
    "serverHost": "server_host",
    "serverSecure": "server_secure",
    "serviceAccount": "service_account",
    "apiServer": "api_server",
    "imagePullPolicy": "image_pull_policy",
    "imagePullSecrets": "image_pull_secrets",
    "hostAliases": "host_aliases",
    "nodeSelector": "node_selector",
    "caCert": "ca_cert",
    "activeDeadlineSeconds": "active_deadline_seconds",
    "volumeMounts": "volume_mounts",
}
CAMEL = {v: k for k, v in SNAKE.items()}
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        items = [f"{_key(k)} = {_value(v)}" for k, v in sorted(value.items()) if v is not None]
        return "{" + (" " + ", ".join(items) + " " if items else "") + "}"
    raise errors.CofluxError(f"cannot represent {value!r} in TOML")


def dump(pools: dict[str, Any]) -> str:
    blocks: list[str] = []
    for name in sorted(pools):
        pool = pools[name] or {}
        lines = [f"[{_key(name)}]", f"modules = {_value(pool.get('modules') or [])}"]
        for key in ("provides", "accepts"):
            if pool.get(key):
                lines.append(f"{key} = {_value(pool[key])}")
        launcher = pool.get("launcher")
        if isinstance(launcher, dict):
            lines += ["", f"[{_key(name)}.launcher]"]
            for key in sorted(launcher, key=lambda k: SNAKE.get(k, k)):
                if launcher[key] is not None:
                    lines.append(f"{_key(SNAKE.get(key, key))} = {_value(launcher[key])}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def load(text: str) -> dict[str, Any]:
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise errors.ConfigError(f"failed to parse TOML: {e}") from None
    if isinstance(data.get("pools"), dict):
        data = data["pools"]  # the legacy layout nests everything under [pools]
    pools: dict[str, Any] = {}
    for name, raw in data.items():
        if not isinstance(raw, dict):
            raise errors.ConfigError(f"invalid pool configuration for '{name}'")
        pool: dict[str, Any] = {"modules": [str(m) for m in raw.get("modules") or []]}
        for key in ("provides", "accepts"):
            if isinstance(raw.get(key), dict):
                pool[key] = {
                    k: [str(x) for x in (v if isinstance(v, list) else [v])]
                    for k, v in raw[key].items()
                }
        launcher = raw.get("launcher")
        if isinstance(launcher, dict):
            converted = {CAMEL.get(k, k): v for k, v in launcher.items()}
            if "concurrency" in converted:
                converted["concurrency"] = int(converted["concurrency"])
            pool["launcher"] = converted
        pools[name] = pool
    return pools


def normalised(value: Any) -> Any:
    """For comparison: drop null/empty values and treat 2.0 as 2."""
    if isinstance(value, dict):
        out = {k: normalised(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [], "")}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf paths for diffs; map fields are diffed per sub-key, lists as whole values."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: value}


def plan(current: dict[str, Any], desired: dict[str, Any]) -> tuple[list[str], dict[str, int]]:
    """The human-readable plan and change counts (create/update/replace/delete)."""
    lines: list[str] = []
    counts = {"created": 0, "updated": 0, "replaced": 0, "deleted": 0}
    for name in sorted(set(current) | set(desired)):
        before = normalised(current.get(name)) if name in current else None
        after = normalised(desired.get(name)) if name in desired else None
        if before is None and after is not None:
            counts["created"] += 1
            lines.append(f"+ {name} (create)")
            lines += [f"    {p}: {json.dumps(v)}" for p, v in sorted(_flatten(after).items())]
        elif after is None and before is not None:
            counts["deleted"] += 1
            lines.append(f"- {name} (delete)")
        elif before != after:
            old_type = ((before or {}).get("launcher") or {}).get("type")
            new_type = ((after or {}).get("launcher") or {}).get("type")
            if old_type and new_type and old_type != new_type:
                counts["replaced"] += 1
                lines.append(f"~ {name} (replace — launcher type changed)")
                lines.append("    Before:")
                lines += [
                    f"      {p}: {json.dumps(v)}" for p, v in sorted(_flatten(before).items())
                ]
                lines.append("    After:")
                lines += [f"      {p}: {json.dumps(v)}" for p, v in sorted(_flatten(after).items())]
                continue
            counts["updated"] += 1
            lines.append(f"~ {name} (update)")
            old, new = _flatten(before), _flatten(after)
            for path in sorted(set(old) | set(new)):
                if path not in old:
                    lines.append(f"    + {path}: {json.dumps(new[path])}")
                elif path not in new:
                    lines.append(f"    - {path}: {json.dumps(old[path])}")
                elif old[path] != new[path]:
                    lines.append(
                        f"    ~ {path}: {json.dumps(old[path])} -> {json.dumps(new[path])}"
                    )
    return lines, counts
