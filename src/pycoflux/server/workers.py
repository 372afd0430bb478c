"""Decoding worker frames (``server-api.md`` §9.4) into orchestration commands."""

from __future__ import annotations

import json
from typing import Any

from pycoflux.orchestration import commands, model


class ProtocolError(Exception):
    """A frame whose params do not have the documented shape."""


class Unsupported(Exception):
    """A request this server does not know; the worker gets an error reply."""

    def __init__(self, request_id: int, name: str) -> None:
        super().__init__(f"not_supported: {name}")
        self.request_id = request_id


Decoded = commands.Command | ProtocolError | Unsupported | None


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


def _int(value: Any, *, minimum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError("expected an integer")
    if minimum is not None and value < minimum:
        raise ProtocolError(f"expected an integer >= {minimum}")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _values(value: Any) -> dict[str, model.Value]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError("expected {name: value}")
    return {_text(name): _value(item) for name, item in value.items()}


def _tags(value: Any) -> model.TagSet:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError("requires must be a tag set")
    return {
        _text(key): [str(v) for v in (items if isinstance(items, list) else [items])]
        for key, items in value.items()
    }


def _stride(value: Any) -> model.Stride | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolError("stride must be {start, stop, step}")
    stop = value.get("stop")
    return model.Stride(
        start=_int(value.get("start", 0), minimum=0),
        stop=None if stop is None else _int(stop, minimum=0),
        step=_int(value.get("step", 1), minimum=1),
    )


def _progress(value: Any) -> tuple[int, int, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolError("progress must be {delivered, acked_count, acked_seq}")
    return (
        _int(value.get("delivered", 0), minimum=0),
        _int(value.get("acked_count", 0), minimum=0),
        _int(value.get("acked_seq", -1)),
    )


def _stream_wait(value: Any) -> tuple[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProtocolError("stream_wait must be {stream_id, sequence}")
    return _text(value.get("stream_id")), _int(value.get("sequence"), minimum=0)


def _select_handles(value: Any) -> list[dict[str, Any]]:
    handles = _handles(value)
    for handle in handles:
        if handle.get("type") == "stream" and "sequence" in handle:
            _int(handle["sequence"], minimum=0)
    return handles


def _request_id(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError("this request needs an id")
    return value


def decode(session_id: str, text: str) -> Decoded:
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
        case "started":
            return None
        case "define_metric":
            if not isinstance(p[2], dict):
                raise ProtocolError("a metric definition must be an object")
            return commands.DefineMetric(
                session_id=s, execution_id=_text(p[0]), key=_text(p[1]), definition=p[2]
            )
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
                stream_wait=_stream_wait(p[2]) if len(p) > 2 else None,
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
                handles=_select_handles(p[0]),
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
    return _decode_more(s, name, p, request_id)


def _decode_more(s: str, name: Any, p: list[Any], request_id: Any) -> commands.Command | None:
    """Inputs, assets, checkpoints and streams (0.12)."""
    match name:
        case "submit_input":
            padded = p + [None] * (9 - len(p))
            schema = padded[3]
            if schema is not None and not isinstance(schema, str):
                schema = json.dumps(schema)  # tolerate an object where a JSON text is due
            return commands.SubmitInput(
                session_id=s,
                request_id=_request_id(request_id),
                execution_id=_text(padded[0]),
                template=_text(padded[1]),
                placeholders=_values(padded[2]),
                schema=schema,
                key=_optional_text(padded[4]),
                title=_optional_text(padded[5]),
                actions=padded[6],
                initial=padded[7],
                has_initial=padded[7] is not None,
                requires=_tags(padded[8]),
            )
        case "put_asset":
            if not isinstance(p[2], dict):
                raise ProtocolError("entries must be {path: [blob key, size, metadata]}")
            return commands.PutAsset(
                session_id=s,
                request_id=_request_id(request_id),
                execution_id=_text(p[0]),
                name=_optional_text(p[1]),
                entries=p[2],
            )
        case "get_asset":
            return commands.GetAsset(
                session_id=s,
                request_id=_request_id(request_id),
                asset_id=_text(p[0]),
                execution_id=_text(p[1]),
            )
        case "checkpoint_update":
            if not isinstance(p[1], dict):
                raise ProtocolError("checkpoint sets must be {name: value}")
            return commands.UpdateCheckpoints(
                session_id=s,
                request_id=request_id if isinstance(request_id, int) else None,
                execution_id=_text(p[0]),
                sets=_values(p[1]),
                resets=_texts(p[2]) if len(p) > 2 and p[2] is not None else [],
            )
        case "stream_register":
            padded = p + [None] * (4 - len(p))
            buffer, timeout = padded[2], padded[3]
            return commands.RegisterStream(
                session_id=s,
                request_id=_request_id(request_id),
                execution_id=_text(padded[0]),
                position=_int(padded[1], minimum=0),
                buffer=None if buffer is None else _int(buffer, minimum=0),
                timeout_ms=None if timeout is None else _int(timeout, minimum=0),
            )
        case "stream_append":
            return commands.AppendStream(
                session_id=s,
                execution_id=_text(p[0]),
                index=_int(p[1], minimum=0),
                sequence=_int(p[2], minimum=0),
                value=_value(p[3]),
            )
        case "stream_close":
            error = None if len(p) < 3 or p[2] is None else _error(p[2])[0]
            return commands.CloseStream(
                session_id=s,
                request_id=request_id if isinstance(request_id, int) else None,
                execution_id=_text(p[0]),
                index=_int(p[1], minimum=0),
                error=error,
                timeout=len(p) > 3 and p[3] == "timeout",
            )
        case "stream_subscribe":
            padded = p + [None] * (7 - len(p))
            prefetch = padded[5]
            return commands.SubscribeStream(
                session_id=s,
                subscription_id=_int(padded[0]),
                execution_id=_text(padded[1]),
                stream_id=_text(padded[2]),
                from_sequence=_int(padded[3] if padded[3] is not None else 0, minimum=0),
                stride=_stride(padded[4]),
                prefetch=prefetch if isinstance(prefetch, int) and prefetch > 0 else 0,
                progress=_progress(padded[6]),
            )
        case "stream_ack":
            return commands.AckStream(
                session_id=s,
                execution_id=_text(p[0]),
                subscription_id=_int(p[1]),
                count=_int(p[2], minimum=0),
                sequence=_int(p[3]),
            )
        case "stream_unsubscribe":
            return commands.UnsubscribeStream(
                session_id=s, execution_id=_text(p[0]), subscription_id=_int(p[1])
            )
    return None
