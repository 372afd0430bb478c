"""Target discovery through ``<adapter> discover``; the manifest and what is derived from it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycoflux import errors
from pycoflux.worker import console

log = console.get_logger()


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One ``@task``/``@workflow`` as the adapter describes it (``spec`` is the raw object)."""

    module: str
    name: str
    type: str
    spec: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    targets: tuple[Target, ...]

    def target_map(self) -> dict[str, dict[str, list[str]]]:
        """``{module: {"workflow": [...], "task": [...]}}`` for ``declare_targets``."""
        result: dict[str, dict[str, list[str]]] = {}
        for target in self.targets:
            result.setdefault(target.module, {}).setdefault(target.type, []).append(target.name)
        return result

    def workflow_definitions(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The ``manifests`` body of ``register_manifests``: workflows only, camelCase keys."""
        result: dict[str, dict[str, dict[str, Any]]] = {}
        for target in self.targets:
            if target.type == "workflow":
                result.setdefault(target.module, {})[target.name] = workflow_definition(target.spec)
        return result


def _int(value: Any, default: int = 0) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def workflow_definition(spec: dict[str, Any]) -> dict[str, Any]:
    """Translate a manifest target into a ``register_manifests`` definition."""
    parameters: list[dict[str, Any]] = []
    for parameter in spec.get("parameters") or []:
        entry = {"name": parameter.get("name")}
        for key in ("annotation", "default"):
            if parameter.get(key) is not None:
                entry[key] = parameter[key]
        parameters.append(entry)
    wait_for = spec.get("wait_for")
    if wait_for is True:
        wait_for = list(range(len(parameters)))
    cache = spec.get("cache")
    retries = spec.get("retries")
    defer = spec.get("defer")
    return {
        "parameters": parameters,
        "waitFor": list(wait_for) if isinstance(wait_for, list) else [],
        "cache": (
            {
                "params": cache.get("params", True),
                "max_age": cache.get("max_age_ms"),
                "namespace": cache.get("namespace"),
                "version": cache.get("version"),
            }
            if isinstance(cache, dict)
            else None
        ),
        "defer": {"params": defer.get("params", True)} if isinstance(defer, dict) else None,
        "delay": _int(spec.get("delay")),
        "retries": (
            {
                "limit": retries.get("limit"),
                "backoff_min": _int(retries.get("backoff_min_ms")),
                "backoff_max": _int(retries.get("backoff_max_ms")),
            }
            if isinstance(retries, dict)
            else None
        ),
        "recurrent": bool(spec.get("recurrent", False)),
        "timeout": _int(spec.get("timeout")),
        "requires": spec.get("requires") or None,
        "instruction": spec.get("instruction"),
        "memo": spec.get("memo") or None,
        "streams": spec.get("streams"),
    }


def parse_manifest(stdout: str) -> Manifest:
    """Parse the manifest JSON, tolerating print output before it (then the last line is used)."""
    try:
        document = json.loads(stdout)
    except json.JSONDecodeError:
        lines = [line for line in stdout.splitlines() if line.strip()]
        if not lines:
            raise errors.DiscoveryError("failed to parse discovery output: empty") from None
        try:
            document = json.loads(lines[-1])
        except json.JSONDecodeError as exc:
            raise errors.DiscoveryError(f"failed to parse discovery output: {exc}") from None
    if not isinstance(document, dict):
        raise errors.DiscoveryError("failed to parse discovery output: not an object")
    targets: list[Target] = []
    for raw in document.get("targets") or []:
        if not isinstance(raw, dict):
            raise errors.DiscoveryError("failed to parse discovery output: bad target")
        module, name, kind = raw.get("module"), raw.get("name"), raw.get("type")
        if not (isinstance(module, str) and isinstance(name, str) and kind in ("workflow", "task")):
            raise errors.DiscoveryError(
                "failed to parse discovery output: target without module/name/type"
            )
        targets.append(Target(module=module, name=name, type=str(kind), spec=raw))
    return Manifest(targets=tuple(targets))


async def discover(
    argv: tuple[str, ...], modules: tuple[str, ...], *, cwd: Path, allow_partial: bool = False
) -> Manifest:
    """Run ``<argv> discover <modules>`` and return the manifest.

    ``allow_partial`` (watch-mode reloads) accepts the manifest of a failed run when it
    parses, so a half-saved file does not stop the worker.
    """
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            "discover",
            *modules,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise errors.DiscoveryError(
            f"discovery failed: cannot run adapter {argv[0]}: {exc}"
        ) from exc
    stdout_bytes, stderr_bytes = await process.communicate()
    stdout = stdout_bytes.decode("utf-8", "replace")
    stderr = stderr_bytes.decode("utf-8", "replace").strip()
    if process.returncode != 0:
        if "No module named coflux" in stderr or "No module named 'coflux'" in stderr:
            raise errors.DiscoveryError(
                "discovery failed: the 'coflux' package is not installed in the adapter's "
                f"environment ({' '.join(argv)})"
            )
        if not allow_partial:
            raise errors.DiscoveryError(
                f"discovery failed: {stderr or f'exit {process.returncode}'}"
            )
        log.error("discovery reported errors", extra=console.fields(stderr=stderr))
    manifest = parse_manifest(stdout)
    if not manifest.targets:
        raise errors.DiscoveryError(f"no targets found in modules [{' '.join(modules)}]")
    return manifest
