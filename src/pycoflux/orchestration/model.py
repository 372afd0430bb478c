"""Domain vocabulary of the orchestration core: identifiers, states and value shapes."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from typing import Any, NewType

WorkspaceId = NewType("WorkspaceId", str)  # external id, "W..."
RunId = NewType("RunId", str)  # "R..."
StepId = NewType("StepId", str)  # "<run>:<number>"
ExecutionId = NewType("ExecutionId", str)  # "<run>:<number>:<attempt>"
SessionId = NewType("SessionId", str)  # 13 random chars (the public half of a session token)

# Random ids avoid vowels and 0/1 so they never spell words or look alike.
ALPHABET = "bcdfghjklmnpqrstvwxyzBCDFGHJKLMNPQRSTVWXYZ23456789"

JSON = Any
Value = list[Any]  # server form: ["raw", data, refs] | ["blob", key, size, refs]
TagSet = dict[str, list[str]]


def random_id(prefix: str, length: int) -> str:
    """``prefix`` + ``length + 1`` random characters (the reference's short-id rule)."""
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(length + 1))


class TargetType(enum.IntEnum):
    TASK = 0
    WORKFLOW = 1

    @classmethod
    def parse(cls, name: str | None) -> TargetType:
        return cls.WORKFLOW if name == "workflow" else cls.TASK

    @property
    def label(self) -> str:
        return "workflow" if self is TargetType.WORKFLOW else "task"


class WorkspaceState(enum.IntEnum):
    ACTIVE = 0
    PAUSED = 1
    ARCHIVED = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class Completion(enum.IntEnum):
    """Terminal marker of an execution; an execution without one is live."""

    SUCCEEDED = 0
    ERRORED = 1
    ABANDONED = 2
    CRASHED = 3
    TIMEOUT = 4
    CANCELLED = 5
    SUSPENDED = 6
    RECURRED = 7
    DEFERRED = 8
    CACHED = 9
    SPAWNED = 10
    STREAM_ERRORED = 11
    STREAM_TIMEOUT = 12

    @property
    def is_failure(self) -> bool:
        return self in _FAILURES

    @property
    def is_handoff(self) -> bool:
        return self in (Completion.DEFERRED, Completion.CACHED, Completion.SPAWNED)


_FAILURES = frozenset(
    {
        Completion.ERRORED,
        Completion.ABANDONED,
        Completion.CRASHED,
        Completion.TIMEOUT,
        Completion.STREAM_ERRORED,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Retries:
    limit: int | None  # None: unlimited
    backoff_min: int = 0
    backoff_max: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorInfo:
    type: str
    message: str
    frames: list[list[Any]] = field(default_factory=list)  # [file, line, name, code]


@dataclass(frozen=True, slots=True, kw_only=True)
class StepOptions:
    """What a submission says about how its step runs."""

    wait_for: list[int] = field(default_factory=list)
    cache: dict[str, Any] | None = None
    defer: dict[str, Any] | None = None
    memo: bool | list[int] | None = None
    delay: int = 0
    retries: Retries | None = None
    recurrent: bool = False
    requires: TagSet = field(default_factory=dict)
    timeout: int = 0
    streams: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Execution:
    """One attempt at a step, as the core reads it from the store."""

    id: int
    external_id: ExecutionId
    run_id: int
    run_external_id: RunId
    step_id: int
    step_number: int
    attempt: int
    workspace_id: int
    module: str
    target: str
    type: TargetType
    parent_id: int | None  # the step's parent execution (row id)
    execute_after: int | None
    created_at: int
    cache_key: str | None = None
    defer_key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Stride:
    """Which sequences of a stream a subscription takes: ``start``, ``start + step``, ..."""

    start: int = 0
    stop: int | None = None
    step: int = 1

    def matches(self, sequence: int) -> bool:
        return (
            sequence >= self.start
            and (sequence - self.start) % self.step == 0
            and (self.stop is None or sequence < self.stop)
        )

    def exhausted(self, cursor: int) -> bool:
        return self.stop is not None and cursor >= self.stop


def execution_external_id(run: str, step: int, attempt: int) -> ExecutionId:
    return ExecutionId(f"{run}:{step}:{attempt}")


def parse_execution_id(value: str) -> tuple[str, int, int] | None:
    parts = value.split(":")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), int(parts[2])


def parse_step_id(value: str) -> tuple[str, int] | None:
    run, sep, number = value.partition(":")
    if not sep or not run or not number.isdigit():
        return None
    return run, int(number)


def parse_stream_id(value: str) -> tuple[str, int, int] | None:
    """``<run>:<step>_<index>`` -> (run, step number, index)."""
    step, sep, index = value.rpartition("_")
    parsed = parse_step_id(step) if sep else None
    if parsed is None or not index.isdigit():
        return None
    return parsed[0], parsed[1], int(index)


def stream_external_id(run: str, step: int, index: int) -> str:
    return f"{run}:{step}_{index}"


def parse_input_id(value: str) -> tuple[str, int] | None:
    """``<run>/i<n>`` -> (run, n)."""
    run, sep, number = value.partition("/i")
    if not sep or not run or not number.isdigit():
        return None
    return run, int(number)


def value_references(value: Value) -> list[list[Any]]:
    if value[0] == "raw":
        return list(value[2]) if len(value) > 2 else []
    return list(value[3]) if len(value) > 3 else []


def tags_match(requires: TagSet, provides: TagSet, accepts: TagSet) -> bool:
    """Whether a session offering ``provides``/``accepts`` may run work requiring ``requires``."""
    offered: dict[str, list[str]] = {}
    for source in (provides, accepts):
        for key, values in source.items():
            offered.setdefault(key, []).extend(values)
    for key, wanted in requires.items():
        if not set(wanted) & set(offered.get(key, [])):
            return False
    return all(set(accepted) & set(requires.get(key, [])) for key, accepted in accepts.items())


def merge_requires(run_requires: TagSet, step_requires: TagSet) -> TagSet:
    merged = {**run_requires, **step_requires}
    return {key: values for key, values in merged.items() if values}
