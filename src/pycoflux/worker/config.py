"""The worker's resolved settings: built by ``coflux worker`` from flags, env and coflux.toml."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


def default_concurrency() -> int:
    return min((os.cpu_count() or 1) + 4, 32)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    """Everything a worker needs; the CLI resolves precedence (flag > env > file > default)."""

    host: str = "localhost:7777"
    secure: bool | None = None  # None: derived from the host (localhost-like -> insecure)
    project: str | None = None
    token: str | None = None  # bearer for the HTTP API; falls back to the session token
    workspace: str = "default"
    session: str | None = None  # a launcher-created session token
    adapter: tuple[str, ...] = ()  # empty: auto-detect
    modules: tuple[str, ...] = ()
    concurrency: int = field(default_factory=default_concurrency)
    provides: tuple[str, ...] = ()  # "key:value" or bare "key"
    accepts: tuple[str, ...] = ()
    register: bool = False
    watch: bool = False
    drain_timeout: float = 120.0  # seconds; 0 waits forever
    blobs_threshold: int = 100
    blob_stores: tuple[dict[str, Any], ...] = ()  # empty: one HTTP store at the server
    logs_batch_size: int = 100
    logs_flush_interval: float = 0.5
    logs_token: str | None = None
    metrics_batch_size: int = 100
    metrics_flush_interval: float = 0.2
    metrics_token: str | None = None
    log_level: str = "info"
    ready_timeout: float = 60.0  # seconds to wait for an adapter's ready line
    executor: str | None = None  # "fork" | "spawn" | "reuse"; None: fork where available


@dataclass(frozen=True, slots=True, kw_only=True)
class Timings:
    """Protocol timings (seconds); the defaults follow the worker spec, tests shrink them."""

    heartbeat_interval: float = 5.0
    backoff_initial: float = 1.0
    backoff_max: float = 10.0
    ping_interval: float = 54.0
    ping_timeout: float = 10.0
    write_timeout: float = 10.0
    open_timeout: float = 10.0
    graceful_exit: float = 5.0
    suspend_close_delay: float = 1.0
    request_wait: float = 30.0
    checkpoint_interval: float = 0.5
    stream_close_reply: float = 10.0
    watch_poll: float = 0.5
    stop_flush: float = 5.0
