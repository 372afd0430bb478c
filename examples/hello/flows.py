"""A small workflow for the quickstart: tasks called in sequence, in parallel and nested."""

from __future__ import annotations

import coflux as cf


@cf.task()
def greet(name: str) -> str:
    print(f"greeting {name}")
    return f"Hello, {name}!"


@cf.task()
def shout(text: str) -> str:
    return text.upper()


@cf.task()
def greet_loudly(name: str) -> str:
    # Nested: a task calling a task.
    return shout(greet(name))


@cf.workflow()
def hello(names: list[str]) -> dict:
    """Greet everyone: one greeting at a time, then all of them in parallel."""
    first = greet(names[0])
    loud = [greet_loudly.submit(name) for name in names]
    return {"first": first, "loud": [execution.result() for execution in loud]}
