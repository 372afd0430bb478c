"""Effects: what the shell must do after a command was applied. Names are nouns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """The command's caller gets this result."""

    result: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    """The command's caller gets an expected failure (an API error or a worker error reply)."""

    error: str
    status: int = 400
    details: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    """A frame for a worker session; the shell queues it while the session is disconnected."""

    session_id: str
    frame: list[Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseSession:
    """Close the session's connection with code 4000 and this reason."""

    session_id: str
    reason: str
    forget: bool = False  # drop frames queued for it too (the session is gone)


@dataclass(frozen=True, slots=True, kw_only=True)
class ArmTimer:
    key: tuple[Any, ...]
    at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DisarmTimer:
    key: tuple[Any, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Publish:
    """These topics may have changed."""

    topics: frozenset[tuple[str, ...]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Launch:
    """Start a pool's worker with its launcher; the outcome comes back as ``LaunchSucceeded``
    or ``LaunchFailed``. The shell adds the server's host and project to the environment."""

    worker_id: str
    launcher: dict[str, Any]
    modules: tuple[str, ...]
    workspace: str  # the workspace's name (``COFLUX_WORKSPACE``)
    session: str  # the session token (``COFLUX_SESSION``)


@dataclass(frozen=True, slots=True, kw_only=True)
class PollWorker:
    """Ask the launcher whether the worker still runs; answered by ``WorkerPolled``."""

    worker_id: str
    launcher: dict[str, Any]
    data: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class HaltWorker:
    """Stop a launched worker; answered by ``WorkerStopped``."""

    worker_id: str
    launcher: dict[str, Any]
    data: dict[str, Any]


Effect = (
    Reply
    | Rejected
    | Send
    | CloseSession
    | ArmTimer
    | DisarmTimer
    | Publish
    | Launch
    | PollWorker
    | HaltWorker
)
