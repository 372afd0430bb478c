"""One worker instance: start-up sequence, execution table, drain and stop.

A watch-mode reload replaces the whole instance (new discovery, session and executors).
The instance implements the connection's handler: it prunes and re-sends on every
session frame, routes commands to executions and reports heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pycoflux import errors
from pycoflux.worker import console, executors
from pycoflux.worker.adapter import detect_adapter, resolve_argv
from pycoflux.worker.api import ApiClient, ServerAddress, parse_tags
from pycoflux.worker.batching import HttpBatcher
from pycoflux.worker.blobs import BlobManager, build_stores
from pycoflux.worker.config import Timings, WorkerConfig
from pycoflux.worker.connection import Connection, worker_url
from pycoflux.worker.discovery import Manifest, discover
from pycoflux.worker.execution import Assignment, Execution, Services
from pycoflux.worker.pool import ExecutorPool
from pycoflux.worker.values import ValueCodec
from pycoflux.worker.workdirs import WorkDirs

log = console.get_logger()

# A termination written this long ago without a reconnect is taken as delivered.
_RECENT_TTL = 120.0
_STOP_WAIT = 10.0


@dataclass(frozen=True, slots=True)
class Delivered:
    """What is kept of an execution whose termination was written: enough to re-send it.

    Not the ``Execution`` itself, whose buffers and handlers would pile up for the whole
    retention window at hundreds of executions per second.
    """

    id: str
    pending_reports: list[tuple[str, list[Any]]]
    terminated: bool = True


def effective_concurrency(config: WorkerConfig) -> int:
    return config.concurrency if config.concurrency > 0 else (os.cpu_count() or 1) + 4


class WorkerInstance:
    """Discovery -> session -> pool -> connection, until drained and stopped."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        cwd: Path | None = None,
        timings: Timings | None = None,
        reload: bool = False,
    ) -> None:
        self._config = config
        self._cwd = cwd or Path.cwd()
        self._timings = timings or Timings()
        self._reload = reload
        self._concurrency = effective_concurrency(config)
        self._http: httpx.AsyncClient | None = None
        self._services: Services | None = None
        self._connection: Connection | None = None
        self._pool: ExecutorPool | None = None
        self._log_store: HttpBatcher | None = None
        self._metric_store: HttpBatcher | None = None
        # Recycled directories: at most one per execution that can run at once.
        self._workdirs = WorkDirs(keep=self._concurrency)
        self.manifest: Manifest | None = None
        self.session_token: str | None = None
        self.workspace_id: str | None = None
        self._table: dict[str, Execution] = {}
        self._recent: dict[str, tuple[Delivered, float]] = {}
        self._resending: dict[str, Delivered] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False

    # --- start-up ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start-up steps 1-7 (worker spec §3); raises on any failure, leaving nothing running."""
        try:
            await self._start()
        except BaseException:
            await self._close_resources()
            raise

    async def _start(self) -> None:
        config = self._config
        if not config.modules:
            raise errors.ConfigError(
                "no modules specified; pass them as arguments or set 'worker.modules' in coflux.toml"
            )
        mode = executors.parse_mode(config.executor)
        argv = resolve_argv(config.adapter or detect_adapter(self._cwd), self._cwd)
        log.info("using adapter", extra=console.fields(adapter=" ".join(argv)))
        address = ServerAddress.resolve(config.host, config.secure, config.project)
        self._http = httpx.AsyncClient(timeout=30.0)
        # Launched workers have no token of their own: the session token stands in.
        api = ApiClient(address, config.token or config.session, self._http)
        self.workspace_id = workspace_id = await api.resolve_workspace(config.workspace)
        self.manifest = manifest = await discover(
            argv, config.modules, cwd=self._cwd, allow_partial=self._reload
        )
        log.info(
            "discovered targets",
            extra=console.fields(count=len(manifest.targets), modules=",".join(config.modules)),
        )
        if config.register:
            await api.register_manifests(workspace_id, manifest.workflow_definitions())
        session = config.session or await api.create_session(
            workspace_id, parse_tags(config.provides), parse_tags(config.accepts)
        )
        self.session_token = session

        cache_dir = Path(tempfile.gettempdir()) / f"coflux-{session}" / "cache" / "blobs"
        await asyncio.to_thread(cache_dir.mkdir, parents=True, exist_ok=True)

        def headers_for(token: str | None) -> dict[str, str]:
            # None: the session token; "" (configured empty): no credentials.
            return address.headers(session if token is None else token or None)

        stores = build_stores(
            config.blob_stores,
            default_url=address.http_base,
            headers_for=headers_for,
            client=self._http,
        )
        blobs = BlobManager(stores, cache_dir)
        self._log_store = HttpBatcher(
            client=self._http,
            url=f"{address.http_base}/logs",
            headers=address.headers(config.logs_token or session),
            body_key="messages",
            batch_size=config.logs_batch_size,
            flush_interval=config.logs_flush_interval,
            name="logs",
        )
        self._metric_store = HttpBatcher(
            client=self._http,
            url=f"{address.http_base}/metrics",
            headers=address.headers(config.metrics_token or session),
            body_key="entries",
            batch_size=config.metrics_batch_size,
            flush_interval=config.metrics_flush_interval,
            name="metrics",
        )
        launcher = executors.make_launcher(
            mode,
            argv,
            # The modules that hold targets: what executions import, so worth pre-importing.
            tuple(dict.fromkeys(target.module for target in manifest.targets)),
            cwd=self._cwd,
            ready_timeout=config.ready_timeout,
        )
        self._pool = ExecutorPool(
            launcher, concurrency=self._concurrency, graceful_exit=self._timings.graceful_exit
        )
        ws_headers = {"X-Project": address.project} if address.project else {}
        target_map = manifest.target_map()
        self._connection = Connection(
            url=worker_url(address.ws_base, workspace_id),
            session_token=session,
            headers=ws_headers,
            declare=lambda: [target_map, self._concurrency],
            handler=self,
            timings=self._timings,
        )
        self._services = Services(
            connection=self._connection,
            codec=ValueCodec(blobs, config.blobs_threshold),
            blobs=blobs,
            pool=self._pool,
            log_store=self._log_store,
            metric_store=self._metric_store,
            timings=self._timings,
            workdirs=self._workdirs,
        )
        # Warm executors come up before connecting: launchers wait for them.
        await self._pool.start()

    # --- serving ----------------------------------------------------------------------

    @property
    def connection(self) -> Connection:
        assert self._connection is not None
        return self._connection

    async def serve(self, drain: asyncio.Event, abort: asyncio.Event) -> None:
        """Run until ``drain`` is set (then drain and stop) or the server refuses us for good."""
        connection = self.connection
        connection_task = asyncio.create_task(connection.run(), name="ws-connection")
        drain_task = asyncio.create_task(drain.wait(), name="drain-signal")
        try:
            done, _ = await asyncio.wait(
                {connection_task, drain_task}, return_when=asyncio.FIRST_COMPLETED
            )
            if drain_task in done:
                await self._drain(abort, connection_task)
        finally:
            drain_task.cancel()
            failure = await self._stop(connection_task)
        if failure is not None:
            raise failure

    async def _drain(self, abort: asyncio.Event, connection_task: asyncio.Task[None]) -> None:
        self._draining = True
        log.info("draining", extra=console.fields(running=self._running_count()))
        if self.connection.ready:
            self.connection.notify("session_draining", None)
        assert self._pool is not None
        await self._pool.close_warm()
        idle = asyncio.create_task(self._idle.wait(), name="drain-idle")
        aborted = asyncio.create_task(abort.wait(), name="drain-abort")
        timeout = self._config.drain_timeout
        try:
            await asyncio.wait(
                {idle, aborted, connection_task},
                timeout=timeout if timeout > 0 else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            idle.cancel()
            aborted.cancel()
        remaining = self._running_count()
        if remaining:
            log.warning(
                "drain incomplete; aborting executions", extra=console.fields(remaining=remaining)
            )
        else:
            log.info("drain complete")

    async def _stop(self, connection_task: asyncio.Task[None]) -> BaseException | None:
        """Kill what still runs, deliver terminations, close everything; return a fatal error."""
        for execution in list(self._table.values()):
            if execution.running:
                log.info("killing execution", extra=console.fields(execution_id=execution.id))
                execution.kill()
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_STOP_WAIT):
                    await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        connection = self._connection
        if connection is not None and connection.ready:
            # Give the terminations and final reports a moment to reach the server.
            with contextlib.suppress(errors.WorkerError):
                await connection.barrier(self._timings.stop_flush)
        if connection is not None:
            await connection.close()
        failure: BaseException | None = None
        if connection_task.done() and not connection_task.cancelled():
            failure = connection_task.exception()
        elif not connection_task.done():
            connection_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, errors.WorkerError):
                await connection_task
        await self._close_resources()
        return failure

    async def _close_resources(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        for store in (self._metric_store, self._log_store):
            if store is not None:
                await store.close()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self._workdirs.close()

    def kill_processes(self) -> None:
        """Emergency exit: SIGKILL every executor now."""
        if self._pool is not None:
            for process in self._pool.processes():
                process.kill_now()

    def _running_count(self) -> int:
        return sum(1 for execution in self._table.values() if execution.running)

    def _update_idle(self) -> None:
        if self._running_count():
            self._idle.clear()
        else:
            self._idle.set()

    # --- connection handler -----------------------------------------------------------

    def on_session(self, session_id: str, execution_ids: list[str]) -> None:
        listed = set(execution_ids)
        for execution_id, execution in list(self._table.items()):
            if execution_id not in listed:
                # The server expects nothing more for it.
                del self._table[execution_id]
                if execution.running:
                    log.warning(
                        "execution dropped by server",
                        extra=console.fields(execution_id=execution_id),
                    )
                    execution.forget()
        self._resending = {
            execution_id: execution
            for execution_id, (execution, _) in self._recent.items()
            if execution_id in listed
        }
        self._recent.clear()
        self._update_idle()

    def is_live(self, execution_id: str) -> bool:
        return execution_id in self._table or execution_id in self._resending

    def after_session(self, first: bool) -> None:
        connection = self.connection
        executions: list[Delivered | Execution] = [*self._resending.values(), *self._table.values()]
        for execution in executions:
            for request, params in execution.pending_reports:
                connection.report(request, params, execution.id)
            if execution.terminated:
                self._send_termination(execution)
        self._resending = {}
        for execution in self._table.values():
            if execution.running:
                execution.resubscribe()
        if self._draining:
            connection.notify("session_draining", None)

    def heartbeat(self) -> dict[str, int]:
        return {
            execution_id: int(execution.status)
            for execution_id, execution in self._table.items()
            if not execution.terminated
        }

    def on_command(self, command: str, params: list[Any]) -> None:
        if command == "execute":
            self._on_execute(params)
        elif command == "abort":
            execution = self._table.get(str(params[0])) if params else None
            if execution is not None:
                log.info("aborting execution", extra=console.fields(execution_id=execution.id))
                execution.abort()
        elif command == "stream_items" and len(params) >= 3:
            target = self._table.get(str(params[0]))
            if target is not None and target.running:
                target.push_items(params[1], params[2])
        elif command == "stream_closed" and len(params) >= 3:
            target = self._table.get(str(params[0]))
            if target is not None and target.running:
                target.push_closed(params[1], params[2], params[3] if len(params) > 3 else None)
        elif command == "stream_demand" and len(params) >= 3:
            target = self._table.get(str(params[0]))
            if target is not None and target.running:
                target.push_demand(params[1], params[2])
        else:
            log.warning("ignoring unknown command", extra=console.fields(command=command))

    def _on_execute(self, params: list[Any]) -> None:
        try:
            assignment = Assignment.decode(params)
        except (ValueError, TypeError) as exc:
            log.warning("ignoring malformed execute", extra=console.fields(error=exc))
            return
        execution_id = assignment.execution_id
        if execution_id in self._table or execution_id in self._recent:
            log.info("ignoring duplicate execute", extra=console.fields(execution_id=execution_id))
            return
        assert self._services is not None
        execution = Execution(assignment, self._services, self)
        self._table[execution_id] = execution
        # The task first: it runs before the frame writer, so the executor gets its
        # ``execute`` before the server hears ``started`` (which it needs no sooner).
        task = asyncio.create_task(execution.run(), name=f"execution-{execution_id}")
        self.connection.notify("started", [execution_id, {}], execution_id=execution_id)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._update_idle()

    # --- execution host ---------------------------------------------------------------

    def terminated(self, execution: Execution) -> None:
        self._update_idle()
        if self._table.get(execution.id) is execution:
            self._send_termination(execution)

    def _send_termination(self, execution: Execution | Delivered) -> None:
        written = self.connection.report("notify_terminated", [[execution.id]], execution.id)

        def on_written(future: asyncio.Future[None]) -> None:
            if future.cancelled() or future.exception() is not None:
                return  # re-sent after the next session frame
            if self._table.get(execution.id) is execution:
                del self._table[execution.id]
            now = time.monotonic()
            self._recent[execution.id] = (Delivered(execution.id, execution.pending_reports), now)
            # Insertion order is time order: the stale entries are at the front.
            while self._recent:
                oldest = next(iter(self._recent))
                if now - self._recent[oldest][1] <= _RECENT_TTL:
                    break
                del self._recent[oldest]

        written.add_done_callback(on_written)
