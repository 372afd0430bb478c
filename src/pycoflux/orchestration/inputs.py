"""Human inputs: schema checks, key reuse and how an input resolves (``semantics.md`` §7.8).

An input is raised by an execution with a prompt (template and placeholder values),
an optional JSON Schema and an optional key. A key makes the input reusable within
the run: asking again with the same prompt, schema and requirements returns the same
input; asking with a different one is an ``input_mismatch``. A response (a value,
a dismissal or a cancellation) is recorded at most once and wakes everyone waiting.
"""

from __future__ import annotations

import copy
import enum
import json
from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema import validators

from pycoflux.orchestration import model


class Response(enum.IntEnum):
    VALUE = 1
    DISMISSED = 2
    CANCELLED = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class Prompt:
    """What identifies an input's request, compared when a key is reused."""

    template: str
    placeholders: dict[str, model.Value]
    schema: str | None
    requires: model.TagSet


class InputError(Exception):
    """An input request or response that must be refused; the message is the wire error."""


def _relaxed(schema: Any) -> Any:
    """The schema without ``required`` rules, for checking a partial (initial) value."""
    if isinstance(schema, dict):
        return {k: _relaxed(v) for k, v in schema.items() if k != "required"}
    if isinstance(schema, list):
        return [_relaxed(item) for item in schema]
    return schema


def _validator(schema: Any) -> Any:
    cls = validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _failures(validator: Any, value: Any) -> str | None:
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    return "; ".join(
        "/" + "/".join(str(p) for p in error.absolute_path) + f": {error.message}"
        for error in errors
    )


def check_request(schema: str | None, initial: Any, has_initial: bool) -> None:
    """Raise InputError unless the schema is a valid JSON Schema and ``initial`` fits it."""
    parsed = None
    if schema is not None:
        try:
            parsed = json.loads(schema)
            _validator(parsed)
        except ValueError as e:
            raise InputError(f"invalid_schema: {e}") from None
        except jsonschema.SchemaError as e:
            raise InputError(f"invalid_schema: {e.message}") from None
    if not has_initial:
        return
    if parsed is None:
        raise InputError("invalid_initial: initial value requires a schema")
    failures = _failures(_validator(_relaxed(copy.deepcopy(parsed))), initial)
    if failures is not None:
        raise InputError(f"invalid_initial: {failures}")


def validate_response(schema: str | None, value: Any) -> str | None:
    """Why ``value`` fails the input's schema, or None when it is acceptable."""
    if schema is None:
        return None
    try:
        validator = _validator(json.loads(schema))
    except (ValueError, jsonschema.SchemaError):
        return None  # checked when the input was created
    return _failures(validator, value)


def select_status(response: tuple[Response, Any] | None) -> dict[str, Any] | None:
    """The select reply fields for an input handle, or None while it is unanswered."""
    if response is None:
        return None
    kind, value = response
    if kind is Response.VALUE:
        return {"status": "ok", "value": ["raw", value, []]}
    return {"status": kind.label}
