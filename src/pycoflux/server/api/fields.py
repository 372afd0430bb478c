"""Request body validation shared by the API handlers (``server-api.md`` §4.1-4.2)."""

from __future__ import annotations

import re
from typing import Any

from pycoflux.orchestration import model
from pycoflux.server.context import ApiError

MODULE = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$", re.IGNORECASE)
TARGET = re.compile(r"^[a-z_][a-z0-9_]*$", re.IGNORECASE)
TAG_KEY = re.compile(r"^[a-z0-9_-]{1,20}$", re.IGNORECASE)
TAG_VALUE = re.compile(r"^[a-z0-9_-]{1,30}$", re.IGNORECASE)


class Invalid(Exception):
    def __init__(self, code: str = "invalid") -> None:
        super().__init__(code)
        self.code = code


class Fields:
    """Collects per-field errors so one response lists all of them."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.errors: dict[str, str] = {}

    def get(self, name: str, key: str, parse: Any = None, *, required: bool = False) -> Any:
        if name not in self.body:
            if required:
                self.errors[key] = "required"
            return None
        value = self.body[name]
        if value is None and not required:
            return None
        if value is None:
            self.errors[key] = "missing"
            return None
        if parse is None:
            return value
        try:
            return parse(value)
        except Invalid as e:
            self.errors[key] = e.code
            return None

    def check(self) -> None:
        if self.errors:
            raise ApiError(400, "bad_request", self.errors)


def string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid()
    return value


def integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid()
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid()
    return value


def module_name(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 100 or not MODULE.match(value):
        raise Invalid()
    return value


def target_name(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 100 or not TARGET.match(value):
        raise Invalid()
    return value


def tag_set(value: Any) -> model.TagSet:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 10:
        raise Invalid()
    tags: model.TagSet = {}
    for key, raw in value.items():
        if not isinstance(key, str) or not TAG_KEY.match(key):
            raise Invalid()
        items = raw if isinstance(raw, list) else [raw]
        if len(items) > 10:
            raise Invalid()
        values: list[str] = []
        for item in items:
            if isinstance(item, bool):
                item = "true" if item else "false"
            if not isinstance(item, str) or not TAG_VALUE.match(item):
                raise Invalid()
            values.append(item)
        tags[key] = values
    return tags


def index_list(value: Any) -> list[int]:
    if not isinstance(value, list) or len(value) > 20:
        raise Invalid()
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise Invalid()
    return list(value)


def params(value: Any) -> bool | list[int]:
    if isinstance(value, bool):
        return value
    return index_list(value)


def _pick(data: dict[str, Any], camel: str, snake: str) -> Any:
    return data[camel] if camel in data else data.get(snake)


def cache(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid()
    max_age = _pick(value, "maxAge", "max_age")
    namespace, version = value.get("namespace"), value.get("version")
    if max_age is not None:
        integer(max_age)
    for text in (namespace, version):
        if text is not None and (not isinstance(text, str) or len(text) > 200):
            raise Invalid()
    return {
        "params": params(value.get("params", False)),
        "maxAge": max_age,
        "namespace": namespace,
        "version": version,
    }


def defer(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid()
    return {"params": params(value.get("params", False))}


def retries(value: Any) -> model.Retries:
    if not isinstance(value, dict):
        raise Invalid()
    limit = value.get("limit")
    backoff_min = _pick(value, "backoffMin", "backoff_min") or 0
    backoff_max = _pick(value, "backoffMax", "backoff_max") or 0
    for number in (backoff_min, backoff_max):
        integer(number)
    if limit is not None:
        integer(limit)
    return model.Retries(limit=limit, backoff_min=backoff_min, backoff_max=backoff_max)


def retries_json(value: model.Retries | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"limit": value.limit, "backoffMin": value.backoff_min, "backoffMax": value.backoff_max}


def memo(value: Any) -> bool | list[int]:
    return params(value)


def streams(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid()
    # The worker-wire form: both keys always present (``buffer: null`` is unbounded).
    timeout = _pick(value, "timeoutMs", "timeout_ms")
    result: dict[str, Any] = {
        "buffer": value.get("buffer"),
        "timeout_ms": None if timeout is None else integer(timeout),
    }
    if result["buffer"] is not None and integer(result["buffer"]) < 0:
        raise Invalid()
    if result["timeout_ms"] is not None and result["timeout_ms"] <= 0:
        raise Invalid()
    return result
