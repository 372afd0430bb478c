"""Argument keys (cache, memo, defer) and the cache and memo lookups (``semantics.md`` §7.1-7.3).

A key is a SHA-256 over a namespace, an optional version and the selected arguments,
each encoded deterministically (canonical JSON for inline data, the blob key for
blob-backed data, then its references). Keys are positional: renaming a parameter
does not change them. They are stored on the step as lowercase hex.

Who can be reused: an execution that is still live without an outcome (queued,
assigned, running - so duplicates queued together are linked before either runs), or
one that is draining with a value, or one that succeeded (within ``maxAge`` for the
cache). Failures, cancellations, stream-errored/timed-out runs and hand-offs never are.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pycoflux.orchestration import model, ports

Selector = bool | list[int] | None


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _count(n: int) -> bytes:
    # One byte as upstream; wider (and unambiguous) beyond that.
    return bytes([n]) if n < 255 else b"\xff" + n.to_bytes(4, "big")


def _encode_references(references: list[list[Any]]) -> bytes:
    out = bytearray(_count(len(references)))
    for reference in references:
        kind = reference[0] if reference else None
        if kind == "fragment":
            out += b"\x01" + str(reference[1]).encode() + str(reference[2]).encode()
            metadata = reference[4] if len(reference) > 4 and isinstance(reference[4], dict) else {}
            for key in sorted(metadata):
                out += str(key).encode() + canonical_json(metadata[key])
        elif kind == "execution":
            out += b"\x02" + str(reference[1]).encode()
        elif kind == "asset":
            out += b"\x03" + str(reference[1]).encode()
        elif kind == "input":
            out += b"\x04" + str(reference[1]).encode()
    return bytes(out)


def encode_argument(value: model.Value) -> bytes:
    if value[0] == "blob":
        return b"\x02" + str(value[1]).encode() + _encode_references(model.value_references(value))
    return b"\x01" + canonical_json(value[1]) + _encode_references(model.value_references(value))


def positions(selector: Selector, count: int) -> list[int]:
    if selector is True:
        return list(range(count))
    if not selector:
        return []
    return list(selector)


def argument_key(
    selector: Selector, arguments: list[model.Value], namespace: str, version: str | None = None
) -> str:
    digest = hashlib.sha256(namespace.encode() + b"\x00" + (version or "").encode())
    for index in positions(selector, len(arguments)):
        part = encode_argument(arguments[index]) if 0 <= index < len(arguments) else b""
        digest.update(b"\x00" + part)
    return digest.hexdigest()


def cache_key(
    cache: dict[str, Any] | None, module: str, target: str, arguments: list[model.Value]
) -> str | None:
    if cache is None:
        return None
    namespace = cache.get("namespace") or f"{module}:{target}"
    return argument_key(cache.get("params", True), arguments, namespace, cache.get("version"))


def memo_key(memo: Selector, module: str, target: str, arguments: list[model.Value]) -> str | None:
    if memo is None or memo is False:
        return None
    return argument_key(memo, arguments, f"{module}:{target}")


def defer_key(
    defer: dict[str, Any] | None, module: str, target: str, arguments: list[model.Value]
) -> str | None:
    if defer is None:
        return None
    return argument_key(defer.get("params", True), arguments, f"{module}:{target}")


def effective_memo(requested: Selector, run_memo: bool) -> Selector:
    """The memo selector of a submission: absent means the run's default (§7.3)."""
    if requested is None:
        return True if run_memo else None
    return requested


def cache_hit(
    store: ports.OrchestrationStore, execution: model.Execution, cache: dict[str, Any], now: int
) -> int | None:
    """The execution a due first attempt can be resolved from, if any."""
    if execution.cache_key is None:
        return None
    max_age = cache.get("maxAge")
    return store.find_reusable(
        cache_key=execution.cache_key,
        workspaces=store.workspace_chain(execution.workspace_id),
        exclude_step=execution.step_id,
        succeeded_since=None if max_age is None else now - max_age,
    )


def memo_hit(
    store: ports.OrchestrationStore, run_id: int, key: str, workspace_id: int
) -> int | None:
    """The execution of this run a memoised submission resolves to, if any."""
    return store.find_reusable(
        memo_key=key, run_id=run_id, workspaces=store.workspace_chain(workspace_id)
    )
