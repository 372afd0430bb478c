"""Project hosts: one orchestration core per project, its writer thread, inbox and effects.

Theory of operation. Every mutation of a project goes through ``ProjectHost.execute``,
which puts the command on a bounded inbox. One task drains the inbox in batches and
hands each batch to the project's writer thread, which applies the commands to the
core inside a single SQLite transaction (one savepoint per command) and commits once
(group commit). Only after the commit is on disk do the effects run on the event loop:
replies resolve their callers, frames go to workers, timers are armed, topics are
notified. So nothing is acknowledged before it is durable, and time reaches the core
only as the ``now`` argument and as ``TimerFired`` commands.

Commits are pipelined. The writer commits a batch to the operating system and goes on
with the next one at once, while a second thread fsyncs the write-ahead log; the effects
of every batch committed before an fsync started are performed, in commit order, when it
returns. One fsync thus covers all the batches committed while the previous one ran, and
under load the writer never waits for the disk. When nothing else is waiting, the writer
fsyncs right after its commit instead: there is nothing to overlap, and the hand-off
would only add latency; the batch loop then performs the effects itself when every
earlier batch is settled. Reads on the writer thread wait, before they answer, for the
fsync that covers what they saw.
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
from pycoflux.server import feeds, rotation, writer
from pycoflux.server import launchers as launchers_module
from pycoflux.storage import admin as admin_store
from pycoflux.storage import epochs, sqlite
from pycoflux.storage import logs as log_store
from pycoflux.storage import metrics as metric_store
from pycoflux.storage import orchestration as orchestration_store

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


@dataclass(slots=True)
class _Committed:
    """A batch on its way to disk: its effects wait for the fsync that covers it."""

    sequence: int
    batch: list[_Pending]
    outcomes: list[list[effects.Effect] | BaseException]
    durable: bool  # the writer synced it itself


class ProjectHost(rotation.Rotation):
    """Owns one project's store, core, worker connections and timers."""

    def __init__(
        self, project_id: str, directory: Path, *, epoch_size: int = epochs.ROTATE_SIZE
    ) -> None:
        self.project_id = project_id
        self.directory = directory
        self.launchers: launchers_module.Launchers | None = None  # set by Projects
        self._init_rotation(directory, epoch_size)  # orchestration epochs (rotation.py)
        self._thread = writer.SerialThread(f"store-{project_id}")
        self._syncer = writer.SerialThread(f"sync-{project_id}")
        self._inbox: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=INBOX_LIMIT)
        # Pipelined commits: batches committed (writer thread) and made durable (syncer).
        self._committed_sequence = 0
        self._durable_sequence = 0
        self._unsynced: asyncio.Queue[_Committed] = asyncio.Queue()
        self._settling = False  # ``_settle`` is between taking batches and finishing them
        self._durable_waiters: list[tuple[int, asyncio.Future[None]]] = []
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
        self._sync_task: asyncio.Task[None] | None = None
        self.admin = admin_store.AdminStore(directory / "admin.sqlite")

    # --- Lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._db = await self._on_thread(self._open_epochs)
        await self.logs.open()
        await self.metrics.open()
        await self._on_thread(self.admin.open)
        self._store = orchestration_store.SqliteOrchestrationStore(self._db, self.epochs)
        self._core = core.Orchestrator(self._store)
        self._task = asyncio.create_task(self._run(), name=f"project-{self.project_id}")
        self._sync_task = asyncio.create_task(self._settle(), name=f"sync-{self.project_id}")
        self._start_rotation()
        await self.execute(commands.Start())

    async def write_admin(self, fn: Callable[[admin_store.AdminStore], T]) -> T:
        """Run an admin-store (tokens, principals) write on the project's storage thread."""
        return await self._on_thread(lambda: fn(self.admin))

    async def stop(self) -> None:
        await self._stop_rotation()
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for connection in list(self._connections.values()):
            connection.close(None)
        for task in (self._task, self._sync_task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        if self._db is not None:
            await self._on_thread(self.epochs.close)
        await self.logs.close()
        await self.metrics.close()
        await self._on_thread(self.admin.close)
        self._telemetry.shutdown(wait=True)
        self._thread.shutdown()
        self._syncer.shutdown()
        self._shutdown_rotation()

    def end_streams(self) -> None:
        """End the log and metric event streams (called when the server starts shutting down)."""
        self.logs.end_subscriptions()
        self.metrics.end_subscriptions()

    async def _on_thread(self, fn: Callable[[], T]) -> T:
        return await self._thread.call(fn)

    # --- Commands ------------------------------------------------------------------------

    async def execute(self, command: commands.Command) -> effects.Reply | effects.Rejected | None:
        """Apply a command durably; returns the reply addressed to the caller, if any."""
        self.last_used = time.monotonic()
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
        """Run a read on the writer thread, so it sees every committed batch; answer once
        what it saw is on disk."""
        assert self._db is not None and self._core is not None
        self.last_used = time.monotonic()

        def read() -> tuple[T, int]:
            # Taken on the thread: a rotation may have replaced the connection.
            assert self._db is not None and self._core is not None
            return fn(self._db, self._core), self._committed_sequence

        result, sequence = await self._on_thread(read)
        await self._durable(sequence)
        return result

    async def _durable(self, sequence: int) -> None:
        if sequence <= self._durable_sequence:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._durable_waiters.append((sequence, future))
        await future

    async def _run(self) -> None:
        while True:
            batch = [await self._inbox.get()]
            while len(batch) < BATCH_LIMIT and not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            now = now_ms()
            try:
                async with self._writer:  # never while an epoch rotates
                    outcomes, durable = await self._on_thread(
                        lambda b=batch, n=now: self._apply(b, n)  # type: ignore[misc]
                    )
            except Exception as e:
                log.exception("batch failed in project %s", self.project_id)
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(e)
                continue
            committed = _Committed(self._committed_sequence, batch, outcomes, durable)
            if durable and not self._settling and self._unsynced.empty():
                # Synced by the writer, and every earlier batch is settled: its effects
                # can go now, without the hand-off to ``_settle``.
                self._finish([committed])
            else:
                self._unsynced.put_nowait(committed)

    async def _settle(self) -> None:
        """Fsync the log for every batch committed so far, then perform their effects."""
        assert self._db is not None
        path = self.epochs.active_path
        while True:
            committed = [await self._unsynced.get()]
            self._settling = True
            try:
                while not self._unsynced.empty():
                    committed.append(self._unsynced.get_nowait())
                try:
                    if not all(item.durable for item in committed):
                        await self._syncer.call(lambda: sqlite.sync_wal(path))
                except OSError as e:
                    # The disk refused: what these batches did may not survive a power
                    # loss, so none of it is acknowledged (the operator must look at it).
                    log.critical("cannot sync the log of project %s: %s", self.project_id, e)
                    for item in committed:
                        for pending in item.batch:
                            if not pending.future.done():
                                pending.future.set_exception(e)
                    continue
                self._finish(committed)
            finally:
                self._settling = False

    def _finish(self, committed: list[_Committed]) -> None:
        """Perform the effects of durable batches, in commit order; wake durable reads."""
        for item in committed:
            for pending, outcome in zip(item.batch, item.outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    pending.future.set_exception(outcome)
                    continue
                try:
                    reply = self._perform(outcome)
                except Exception as e:
                    log.exception("effects of %r failed", type(pending.command).__name__)
                    reply = None
                    pending.future.set_exception(e)
                if not pending.future.done():
                    pending.future.set_result(reply)
        self._durable_sequence = committed[-1].sequence
        waiters, self._durable_waiters = self._durable_waiters, []
        for sequence, future in waiters:
            if sequence > self._durable_sequence:
                self._durable_waiters.append((sequence, future))
            elif not future.done():
                future.set_result(None)

    def _apply(
        self, batch: list[_Pending], now: int
    ) -> tuple[list[list[effects.Effect] | BaseException], bool]:
        """Apply a batch in one transaction, one savepoint per command (writer thread).

        When no other command is waiting, the writer fsyncs the log itself: there is no
        next batch to overlap the fsync with, and it saves a hand-off to the syncer.
        Says whether it did."""
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
                    self._store_caches_stale()
                    outcomes.append(e)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._store_caches_stale()
            raise
        self._committed_sequence += 1
        if self._inbox.empty():  # read across threads: a hint, either answer is safe
            sqlite.sync_wal(self.epochs.active_path)
            return outcomes, True
        return outcomes, False

    def _store_caches_stale(self) -> None:
        if self._store is not None:
            self._store.discard_caches()

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
                case effects.Launch() | effects.PollWorker() | effects.HaltWorker():
                    self._call_launcher(effect)
        return reply

    def _call_launcher(
        self, effect: effects.Launch | effects.PollWorker | effects.HaltWorker
    ) -> None:
        """Run a pool launcher call off the writer; its outcome comes back as a command."""

        async def call() -> None:
            self.submit(await launchers_module.perform(self.launchers, self.project_id, effect))

        task = asyncio.create_task(call(), name=f"launcher-{effect.worker_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _arm(self, key: tuple[Any, ...], at: int) -> None:
        previous = self._timers.pop(key, None)
        if previous is not None:
            previous.cancel()
        delay = max(0.0, (at - now_ms()) / 1000)

        def fire() -> None:
            self._timers.pop(key, None)
            self.submit(commands.TimerFired(key=key))

        self._timers[key] = asyncio.get_running_loop().call_later(delay, fire)

    def idle_for(self) -> float:
        """Seconds since the last use, or 0 while anything keeps the project busy: a session
        (connected or awaiting reconnection), a topic or event-stream listener, a timer."""
        busy = (
            self._connections
            or self._listeners
            or any(key != ("tick",) for key in self._timers)  # the periodic pass is no work
            or not self._inbox.empty()
            or self._durable_sequence < self._committed_sequence
            or self.logs.subscribed
            or self.metrics.subscribed
            or self._core is None
            or not self._core.idle
        )
        return 0.0 if busy else time.monotonic() - self.last_used

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
    """Starts project hosts on first use, stops idle ones, and stops them all at shutdown.

    A project with no sessions, no listeners and no timers for ``project_idle_timeout``
    seconds is stopped (files closed, threads ended); the next request starts it again.
    """

    def __init__(self, config: config_module.ServerConfig) -> None:
        self.config = config
        self._hosts: dict[str, ProjectHost] = {}
        self._starting: dict[str, asyncio.Task[ProjectHost]] = {}
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._reaper: asyncio.Task[None] | None = None

    async def get(self, project_id: str) -> ProjectHost:
        if self._reaper is None and self.config.project_idle_timeout:
            self._reaper = asyncio.create_task(self._stop_idle(), name="stop-idle-projects")
        host = self._hosts.get(project_id)
        if host is not None:
            host.last_used = time.monotonic()
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
        stopping = self._stopping.get(project_id)
        if stopping is not None:
            await asyncio.shield(stopping)  # an idle stop closes its files first
        host = ProjectHost(
            project_id,
            self.config.data_dir / "projects" / project_id,
            epoch_size=self.config.epoch_size,
        )
        host.launchers = launchers_module.Launchers(self.config, host.directory / "workers")
        await host.start()
        self._hosts[project_id] = host
        return host

    async def _stop_idle(self) -> None:
        timeout = float(self.config.project_idle_timeout)
        while True:
            await asyncio.sleep(min(5.0, timeout / 2))
            for project_id, host in list(self._hosts.items()):
                if host.idle_for() < timeout or project_id in self._starting:
                    continue
                del self._hosts[project_id]
                log.info("project %s idle for %ss: stopping it", project_id, int(timeout))
                task = asyncio.create_task(host.stop(), name=f"stop-{project_id}")
                self._stopping[project_id] = task
                try:
                    await asyncio.shield(task)
                except Exception:
                    log.exception("stopping idle project %s failed", project_id)
                finally:
                    self._stopping.pop(project_id, None)

    def running(self) -> list[ProjectHost]:
        return list(self._hosts.values())

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
            self._reaper = None
        hosts, self._hosts = self._hosts, {}
        for host in hosts.values():
            await host.stop()
