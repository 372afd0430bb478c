"""Decoding worker frames (``server-api.md`` §9.4) into orchestration commands."""

from __future__ import annotations

import json
from typing import Any

from pycoflux.orchestration import commands, model


class ProtocolError(Exception):
    """A frame whose params do not have the documented shape."""


class Unsupported(Exception):
    """A request this server does not implement yet; the worker gets an error reply."""

    def __init__(self, request_id: int, name: str) -> None:
        super().__init__(f"not_supported: {name}")
        self.request_id = request_id


def _options(
    wait_for: Any,
    cache: Any,
    defer: Any,
    memo: Any,
    delay: Any,
    retries: Any,
    recurrent: Any,
    requires: Any,
    timeout: Any,
    streams: Any,
) -> model.StepOptions:
    if cache is not None:
        cache = {
            "params": cache.get("params", False),
            "maxAge": cache.get("max_age", cache.get("maxAge")),
            "namespace": cache.get("namespace"),
            "version": cache.get("version"),
        }
    parsed_retries = None
    if retries is not None:
        parsed_retries = model.Retries(
            limit=retries.get("limit"),
            backoff_min=int(retries.get("backoff_min") or 0),
            backoff_max=int(retries.get("backoff_max") or 0),
        )
    return model.StepOptions(
        wait_for=list(wait_for or []),
        cache=cache,
        defer=defer,
        memo=memo,
        delay=int(delay or 0),
        retries=parsed_retries,
        recurrent=bool(recurrent),
        requires=dict(requires or {}),
        timeout=int(timeout or 0),
        streams=streams,
    )


def _error(value: Any) -> tuple[model.ErrorInfo, bool | None]:
    if not isinstance(value, list) or len(value) < 2:
        raise ProtocolError("error must be [type, message, frames]")
    frames = value[2] if len(value) > 2 and isinstance(value[2], list) else []
    retryable = value[3] if len(value) > 3 and isinstance(value[3], bool) else None
    return model.ErrorInfo(type=str(value[0]), message=str(value[1]), frames=frames), retryable


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ProtocolError("expected a string")
    return value


def _texts(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise ProtocolError("expected a list of strings")
    return [_text(item) for item in value]


def _optional_int(value: Any) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ProtocolError("expected an integer or null")
    return value


def _targets(value: Any) -> dict[str, dict[str, list[str]]]:
    if not isinstance(value, dict) or not all(isinstance(k, dict) for k in value.values()):
        raise ProtocolError("targets must be {module: {kind: [names]}}")
    return {
        module: {kind: _texts(names) for kind, names in kinds.items()}
        for module, kinds in value.items()
    }


def _handles(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(h, dict) for h in value):
        raise ProtocolError("handles must be a list of objects")
    return value


def _value(value: Any) -> model.Value:
    if not isinstance(value, list) or not value or value[0] not in ("raw", "blob"):
        raise ProtocolError("value must be ['raw', ...] or ['blob', ...]")
    return value


def decode(session_id: str, text: str) -> commands.Command | ProtocolError | Unsupported | None:
    """The command a frame asks for; None for frames with no server effect."""
    try:
        message = json.loads(text)
        if not isinstance(message, dict):
            raise ProtocolError("frame must be an object")
        name = message.get("request")
        params = message.get("params") or []
        request_id = message.get("id")
        if not isinstance(params, list):
            raise ProtocolError("params must be a list")
        command = _decode(session_id, name, params, request_id)
        if command is None and isinstance(request_id, int):
            return Unsupported(request_id, str(name))
        return command
    except ProtocolError as e:
        return e
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        return ProtocolError(str(e))


def _decode(session_id: str, name: Any, p: list[Any], request_id: Any) -> commands.Command | None:
    s = session_id
    match name:
        case "declare_targets":
            return commands.DeclareTargets(
                session_id=s, targets=_targets(p[0]), concurrency=int(p[1] or 0)
            )
        case "session_draining":
            return commands.DrainSession(session_id=s)
        case "record_heartbeats":
            if not isinstance(p[0], dict):
                raise ProtocolError("heartbeats must be {executionId: status}")
            return commands.RecordHeartbeats(session_id=s, statuses=p[0])
        case "started" | "define_metric":
            return None
        case "put_result":
            return commands.RecordResult(session_id=s, execution_id=_text(p[0]), value=_value(p[1]))
        case "put_error":
            error, retryable = _error(p[1])
            return commands.RecordError(
                session_id=s, execution_id=_text(p[0]), error=error, retryable=retryable
            )
        case "put_timeout":
            return commands.RecordTimeout(session_id=s, execution_id=_text(p[0]))
        case "notify_terminated":
            return commands.RecordTermination(session_id=s, execution_ids=_texts(p[0]))
        case "suspend":
            return commands.Suspend(
                session_id=s,
                execution_id=_text(p[0]),
                execute_after=_optional_int(p[1]) if len(p) > 1 else None,
            )
        case "register_group":
            return commands.RegisterGroup(
                session_id=s, execution_id=_text(p[0]), group_id=int(p[1]), name=p[2]
            )
        case "submit":
            padded = p + [None] * (16 - len(p))
            return commands.SubmitChild(
                session_id=s,
                request_id=int(request_id),
                module=_text(padded[0]),
                target=_text(padded[1]),
                type=model.TargetType.parse(padded[2]),
                arguments=[_value(v) for v in padded[3]],
                parent_id=_text(padded[4]),
                group_id=_optional_int(padded[5]),
                options=_options(*padded[6:16]),
            )
        case "select":
            return commands.Select(
                session_id=s,
                request_id=int(request_id),
                handles=_handles(p[0]),
                execution_id=_text(p[1]),
                timeout_ms=_optional_int(p[2]),
                suspend=bool(p[3]),
                cancel_remaining=bool(p[4]) if len(p) > 4 else False,
            )
        case "cancel":
            return commands.CancelHandles(
                session_id=s,
                request_id=int(request_id),
                handles=_handles(p[0]),
                execution_id=_text(p[1]),
            )
    return None
