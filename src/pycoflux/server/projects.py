"""Project hosts: one orchestration core per project, its writer thread, inbox and effects.

Theory of operation. Every mutation of a project goes through ``ProjectHost.execute``,
which puts the command on a bounded inbox. One task drains the inbox in batches and
hands each batch to the project's writer thread, which applies the commands to the
core inside a single SQLite transaction (one savepoint per command) and commits once
(group commit). Only after the commit do the effects run on the event loop: replies
resolve their callers, frames go to workers, timers are armed, topics are notified.
So nothing is acknowledged before it is durable, and time reaches the core only as
the ``now`` argument and as ``TimerFired`` commands.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pycoflux.orchestration import commands, core, effects
from pycoflux.server import config as config_module
from pycoflux.server import feeds
from pycoflux.storage import admin as admin_store
from pycoflux.storage import logs as log_store
from pycoflux.storage import metrics as metric_store
from pycoflux.storage import orchestration as orchestration_store
from pycoflux.storage import sqlite

log = logging.getLogger("pycoflux.server")

T = TypeVar("T")
BATCH_LIMIT = 512
INBOX_LIMIT = 10_000
PROJECT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")


def valid_project_id(project_id: str) -> bool:
    return bool(PROJECT_ID.match(project_id)) and project_id not in (".", "..")


def now_ms() -> int:
    return int(time.time() * 1000)


class Connection(Protocol):
    """A worker's live WebSocket, as the host sees it."""

    def send(self, frame: list[Any]) -> None: ...
    def close(self, reason: str | None) -> None: ...


class TopicListener(Protocol):
    def topics_changed(self, topics: frozenset[tuple[str, ...]]) -> None: ...


@dataclass(slots=True)
class _Pending:
    command: commands.Command
    future: asyncio.Future[effects.Reply | effects.Rejected | None]


class ProjectHost:
    """Owns one project's store, core, worker connections and timers."""

    def __init__(self, project_id: str, directory: Path) -> None:
        self.project_id = project_id
        self.directory = directory
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"store-{project_id}")
        self._inbox: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=INBOX_LIMIT)
        self._connections: dict[str, Connection] = {}
        self._outbox: dict[str, list[list[Any]]] = {}
        self._timers: dict[tuple[Any, ...], asyncio.TimerHandle] = {}
        self._listeners: set[TopicListener] = set()
        self._db: sqlite3.Connection | None = None
        # Logs and metrics have their own thread: a flood of them never delays a commit.
        self._telemetry = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"telemetry-{project_id}"
        )
        self.logs = feeds.Feed(log_store.LogStore(directory), self._telemetry, name="logs")
        self.metrics = feeds.Feed(
            metric_store.MetricStore(directory), self._telemetry, name="metrics"
        )
        self._store: orchestration_store.SqliteOrchestrationStore | None = None
        self._core: core.Orchestrator | None = None
        self._task: asyncio.Task[None] | None = None
        self.admin = admin_store.AdminStore(directory / "admin.sqlite")

    # --- Lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._db = await self._on_thread(
            lambda: sqlite.connect(self.directory / "orchestration.sqlite")
        )
        await self.logs.open()
        await self.metrics.open()
        await self._on_thread(self.admin.open)
        self._store = orchestration_store.SqliteOrchestrationStore(self._db)
        self._core = core.Orchestrator(self._store)
        self._task = asyncio.create_task(self._run(), name=f"project-{self.project_id}")
        await self.execute(commands.Start())

    async def write_admin(self, fn: Callable[[admin_store.AdminStore], T]) -> T:
        """Run an admin-store (tokens, principals) write on the project's storage thread."""
        return await self._on_thread(lambda: fn(self.admin))

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for connection in list(self._connections.values()):
            connection.close(None)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._db is not None:
            db = self._db
            await self._on_thread(db.close)
        await self.logs.close()
        await self.metrics.close()
        await self._on_thread(self.admin.close)
        self._telemetry.shutdown(wait=True)
        self._thread.shutdown(wait=True)

    def end_streams(self) -> None:
        """End the log and metric event streams (called when the server starts shutting down)."""
        self.logs.end_subscriptions()
        self.metrics.end_subscriptions()

    async def _on_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    # --- Commands ------------------------------------------------------------------------

    async def execute(self, command: commands.Command) -> effects.Reply | effects.Rejected | None:
        """Apply a command durably; returns the reply addressed to the caller, if any."""
        future: asyncio.Future[effects.Reply | effects.Rejected | None] = (
            asyncio.get_running_loop().create_future()
        )
        await self._inbox.put(_Pending(command, future))
        return await future

    def submit(self, command: commands.Command) -> None:
        """Enqueue a command whose reply nobody waits for (worker notifications, timers)."""
        future: asyncio.Future[effects.Reply | effects.Rejected | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._inbox.put_nowait(_Pending(command, future))

    async def read(self, fn: Callable[[sqlite3.Connection, core.Orchestrator], T]) -> T:
        """Run a read on the writer thread, so it sees every committed batch."""
        assert self._db is not None and self._core is not None
        db, orchestrator = self._db, self._core
        return await self._on_thread(lambda: fn(db, orchestrator))

    async def _run(self) -> None:
        while True:
            batch = [await self._inbox.get()]
            while len(batch) < BATCH_LIMIT and not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            now = now_ms()
            try:
                outcomes = await self._on_thread(lambda b=batch, n=now: self._apply(b, n))  # type: ignore[misc]
            except Exception as e:
                log.exception("batch failed in project %s", self.project_id)
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(e)
                continue
            for pending, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    pending.future.set_exception(outcome)
                    continue
                reply = self._perform(outcome)
                if not pending.future.done():
                    pending.future.set_result(reply)

    def _apply(self, batch: list[_Pending], now: int) -> list[list[effects.Effect] | BaseException]:
        """Apply a batch in one transaction, one savepoint per command (writer thread)."""
        assert self._db is not None and self._core is not None
        db = self._db
        outcomes: list[list[effects.Effect] | BaseException] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for pending in batch:
                db.execute("SAVEPOINT command")
                try:
                    outcomes.append(self._core.handle(pending.command, now))
                    db.execute("RELEASE command")
                except Exception as e:
                    log.exception("command %r failed", type(pending.command).__name__)
                    db.execute("ROLLBACK TO command")
                    db.execute("RELEASE command")
                    outcomes.append(e)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return outcomes

    # --- Effects ---------------------------------------------------------------------------

    def _perform(self, outcome: list[effects.Effect]) -> effects.Reply | effects.Rejected | None:
        reply: effects.Reply | effects.Rejected | None = None
        for effect in outcome:
            match effect:
                case effects.Reply() | effects.Rejected():
                    reply = effect
                case effects.Send(session_id=session_id, frame=frame):
                    connection = self._connections.get(session_id)
                    if connection is None:
                        self._outbox.setdefault(session_id, []).append(frame)
                    else:
                        connection.send(frame)
                case effects.CloseSession(session_id=session_id, reason=reason, forget=forget):
                    if forget:
                        self._outbox.pop(session_id, None)
                    connection = self._connections.pop(session_id, None)
                    if connection is not None:
                        connection.close(reason)
                        if not forget:
                            self.submit(commands.DisconnectSession(session_id=session_id))
                case effects.ArmTimer(key=key, at=at):
                    self._arm(key, at)
                case effects.DisarmTimer(key=key):
                    handle = self._timers.pop(key, None)
                    if handle is not None:
                        handle.cancel()
                case effects.Publish(topics=topics):
                    for listener in list(self._listeners):
                        listener.topics_changed(topics)
        return reply

    def _arm(self, key: tuple[Any, ...], at: int) -> None:
        previous = self._timers.pop(key, None)
        if previous is not None:
            previous.cancel()
        delay = max(0.0, (at - now_ms()) / 1000)

        def fire() -> None:
            self._timers.pop(key, None)
            self.submit(commands.TimerFired(key=key))

        self._timers[key] = asyncio.get_running_loop().call_later(delay, fire)

    # --- Worker connections and topic listeners ----------------------------------------------

    def attach(self, session_id: str, connection: Connection, session_frame: list[Any]) -> None:
        """Make ``connection`` the session's current one: session frame first, then the backlog."""
        previous = self._connections.pop(session_id, None)
        if previous is not None:
            previous.close(None)
        connection.send(session_frame)
        for frame in self._outbox.pop(session_id, []):
            connection.send(frame)
        self._connections[session_id] = connection

    def detach(self, session_id: str, connection: Connection) -> None:
        if self._connections.get(session_id) is connection:
            del self._connections[session_id]
            self.submit(commands.DisconnectSession(session_id=session_id))

    def listen(self, listener: TopicListener) -> None:
        self._listeners.add(listener)

    def unlisten(self, listener: TopicListener) -> None:
        self._listeners.discard(listener)

    def publish(self, topics: frozenset[tuple[str, ...]]) -> None:
        """Tell topic listeners about a change made outside the core (e.g. tokens)."""
        for listener in list(self._listeners):
            listener.topics_changed(topics)


class Projects:
    """Starts project hosts on first use and stops them at shutdown."""

    def __init__(self, config: config_module.ServerConfig) -> None:
        self.config = config
        self._hosts: dict[str, ProjectHost] = {}
        self._starting: dict[str, asyncio.Task[ProjectHost]] = {}

    async def get(self, project_id: str) -> ProjectHost:
        host = self._hosts.get(project_id)
        if host is not None:
            return host
        task = self._starting.get(project_id)
        if task is None:
            task = asyncio.create_task(self._start(project_id), name=f"start-{project_id}")
            self._starting[project_id] = task
        try:
            return await asyncio.shield(task)
        finally:
            self._starting.pop(project_id, None)

    async def _start(self, project_id: str) -> ProjectHost:
        host = ProjectHost(project_id, self.config.data_dir / "projects" / project_id)
        await host.start()
        self._hosts[project_id] = host
        return host

    def running(self) -> list[ProjectHost]:
        return list(self._hosts.values())

    async def stop(self) -> None:
        hosts, self._hosts = self._hosts, {}
        for host in hosts.values():
            await host.stop()
