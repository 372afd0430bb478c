"""Worker-socket request params built by name (``server-api.md`` §9 request table).

The wire carries them positionally; tests name the ones they care about and leave the rest
at their "no option" values.
"""

from __future__ import annotations

from typing import Any


def raw(data: Any) -> list[Any]:
    """A ``raw`` value with no references."""
    return ["raw", data, []]


def submit_params(
    module: str,
    target: str,
    parent_id: str,
    *,
    type: str = "task",
    arguments: list[Any] | None = None,
    group_id: int | None = None,
    wait_for: list[int] | None = None,
    cache: dict[str, Any] | None = None,
    defer: dict[str, Any] | None = None,
    memo: bool | None = None,
    delay: int | None = None,
    retries: dict[str, Any] | None = None,
    recurrent: bool = False,
    requires: dict[str, list[str]] | None = None,
    timeout: int | None = None,
) -> list[Any]:
    """The 15 positional params of a ``submit`` request."""
    return [
        module,
        target,
        type,
        [] if arguments is None else arguments,
        parent_id,
        group_id,
        wait_for,
        cache,
        defer,
        memo,
        delay,
        retries,
        recurrent,
        requires,
        timeout,
    ]


def submit_input_params(
    execution_id: str,
    *,
    template: str = "Deploy {version}?",
    placeholders: dict[str, Any] | None = None,
    schema: str | None = None,
    key: str | None = "k",
    title: str | None = "Deploy",
    actions: list[str] | None = None,
    initial: Any = None,
    requires: dict[str, list[str]] | None = None,
) -> list[Any]:
    """The 9 positional params of a ``submit_input`` request."""
    return [
        execution_id,
        template,
        {"version": raw("1.2")} if placeholders is None else placeholders,
        schema,
        key,
        title,
        ["Go", "Stop"] if actions is None else actions,
        initial,
        {"role": ["ops"]} if requires is None else requires,
    ]
