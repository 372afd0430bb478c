"""Adapter discovery for ``manifests discover/register`` and adapter auto-detection.

The adapter's manifest uses snake_case keys (adapter-protocol.md §3.2); ``register_manifests``
wants camelCase definitions (cli.md §4.8.2). Both conversions live here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from pycoflux import errors

_NOT_INSTALLED = "the 'coflux' package does not appear to be installed in this environment"


def detect_adapter(cwd: str = ".") -> list[str] | None:
    """The best-guess adapter argv for a project directory (cli.md §4.1), or ``None``."""

    def exists(name: str) -> bool:
        return os.path.exists(os.path.join(cwd, name))

    if exists(".venv/bin/python"):
        return [".venv/bin/python", "-m", "coflux"]
    if exists("venv/bin/python"):
        return ["venv/bin/python", "-m", "coflux"]
    if exists("poetry.lock"):
        return ["poetry", "run", "python", "-m", "coflux"]
    if exists("uv.lock"):
        return ["uv", "run", "python", "-m", "coflux"]
    if shutil.which("uv"):
        return ["uv", "run", "--with", "coflux", "python", "-m", "coflux"]
    if shutil.which("python3"):
        return ["python3", "-m", "coflux"]
    if shutil.which("python"):
        return ["python", "-m", "coflux"]
    return None


def _parse_manifest(stdout: str) -> Any:
    try:
        return json.loads(stdout)
    except ValueError as first:
        # Modules may print at import time; the manifest is then the last line.
        lines = [line for line in stdout.splitlines() if line.strip()]
        if lines:
            try:
                return json.loads(lines[-1])
            except ValueError:
                pass
        raise errors.DiscoveryError(
            f"discovery failed: failed to parse discovery output: {first}"
        ) from None


def discover(adapter: Sequence[str], modules: Sequence[str]) -> list[dict[str, Any]]:
    """Run ``<adapter> discover <modules>`` and return its workflow targets."""
    try:
        proc = subprocess.run(
            [*adapter, "discover", *modules],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except OSError as e:
        raise errors.DiscoveryError(f"discovery failed: discovery failed: {e}") from None
    if proc.returncode != 0:
        stderr = proc.stderr.strip()
        if "No module named coflux" in stderr:
            stderr = _NOT_INSTALLED
        raise errors.DiscoveryError(f"discovery failed: discovery failed: {stderr}")
    manifest = _parse_manifest(proc.stdout)
    targets = manifest.get("targets") if isinstance(manifest, dict) else None
    if not isinstance(targets, list):
        return []
    return [t for t in targets if isinstance(t, dict) and t.get("type") == "workflow"]


def _pick(source: Any, keys: Sequence[str]) -> dict[str, Any] | None:
    if not isinstance(source, dict):
        return None
    return {k: source[k] for k in keys if k in source and source[k] is not None}


def _parameters(target: dict[str, Any]) -> list[dict[str, Any]]:
    result = []
    for parameter in target.get("parameters") or []:
        if not isinstance(parameter, dict):
            continue
        entry: dict[str, Any] = {"name": parameter.get("name")}
        for key in ("annotation", "default"):
            if parameter.get(key) is not None:
                entry[key] = parameter[key]
        result.append(entry)
    return result


def discovered(target: dict[str, Any]) -> dict[str, Any]:
    """A target as ``manifests discover -o json`` prints it (fixed order, empties omitted)."""
    out: dict[str, Any] = {
        "module": target.get("module"),
        "name": target.get("name"),
        "type": target.get("type"),
        "parameters": _parameters(target),
    }
    optional: list[tuple[str, Any]] = [
        ("cache", _pick(target.get("cache"), ("params", "max_age_ms", "namespace", "version"))),
        ("retries", _pick(target.get("retries"), ("limit", "backoff_min_ms", "backoff_max_ms"))),
        ("defer", _pick(target.get("defer"), ("params",))),
        ("delay", target.get("delay") or None),
        ("wait_for", target.get("wait_for")),
        ("memo", target.get("memo")),
        ("requires", target.get("requires") or None),
        ("recurrent", target.get("recurrent") or None),
        ("timeout", target.get("timeout") or None),
        ("is_stub", target.get("is_stub") or None),
        ("instruction", target.get("instruction")),
    ]
    for key, value in optional:
        if value is not None:
            out[key] = value
    streams = target.get("streams")
    if isinstance(streams, dict):
        # Key presence matters for streams ("buffer": null != absent), so copy verbatim.
        out["streams"] = {k: streams[k] for k in ("buffer", "timeout_ms") if k in streams}
    return out


def definition(target: dict[str, Any]) -> dict[str, Any]:
    """The camelCase workflow definition ``register_manifests`` expects (cli.md §4.8.2)."""
    cache = target.get("cache")
    retries = target.get("retries")
    defer = target.get("defer")
    wait_for = target.get("wait_for")
    requires = target.get("requires")
    streams = target.get("streams")
    return {
        "parameters": _parameters(target),
        "waitFor": (
            [int(i) for i in wait_for]
            if isinstance(wait_for, list)
            # `true` means every parameter (adapter-protocol.md §3.2)
            else list(range(len(_parameters(target))))
            if wait_for is True
            else []
        ),
        "cache": (
            {
                "params": cache.get("params"),
                "maxAge": cache.get("max_age_ms"),
                "namespace": cache.get("namespace"),
                "version": cache.get("version"),
            }
            if isinstance(cache, dict)
            else None
        ),
        "defer": {"params": defer.get("params")} if isinstance(defer, dict) else None,
        "delay": int(target.get("delay") or 0),
        "retries": (
            {
                "limit": retries.get("limit"),
                "backoffMin": int(retries.get("backoff_min_ms") or 0),
                "backoffMax": int(retries.get("backoff_max_ms") or 0),
            }
            if isinstance(retries, dict)
            else None
        ),
        "recurrent": bool(target.get("recurrent")),
        "requires": requires if requires else None,
        "instruction": target.get("instruction"),
        "memo": target.get("memo"),
        "timeout": int(target.get("timeout") or 0),
        "streams": streams if isinstance(streams, dict) else None,
    }


def manifests(targets: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{module: {workflow: definition}}`` for ``register_manifests``."""
    grouped: dict[str, dict[str, Any]] = {}
    for target in targets:
        grouped.setdefault(str(target.get("module")), {})[str(target.get("name"))] = definition(
            target
        )
    return grouped
