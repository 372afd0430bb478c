"""One execution from ``execute`` to termination: its process, requests, reports and timers.

Theory of operation. ``run()`` converts the arguments, binds an executor from the pool,
writes ``execute`` and then reads the adapter's stdout in order. Notifications are
handled inline, so each has reached its destination (server outbox, log buffer, metric
tracker, checkpoint buffer, timers) before the next line is read; requests get their own
task, so a long ``select`` never blocks stream traffic. Terminal reports are recorded in
``pending_reports`` and sent; the worker instance re-sends them after every session frame
until the server stops listing the execution. When stdout reaches EOF the execution is
cleaned up and the instance is told to send ``notify_terminated``; because every frame
goes through one FIFO outbox, that always follows the terminal report.

A *reusable* process (reuse mode) does not exit: it ends an execution by saying ``ready``
again. The loop stops there, stdin stays open, and a process that finished cleanly (a
terminal report, no abort, kill, timeout or suspension) goes back to the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NotRequired, Protocol, TypedDict

from pycoflux import errors
from pycoflux.worker import console, logs
from pycoflux.worker.adapter import AdapterProcess
from pycoflux.worker.batching import HttpBatcher
from pycoflux.worker.blobs import BlobManager
from pycoflux.worker.checkpoints import CheckpointBuffer
from pycoflux.worker.config import Timings
from pycoflux.worker.connection import Connection, RetryPolicy
from pycoflux.worker.metrics import MetricTracker
from pycoflux.worker.pool import ExecutorPool, PoolClosedError
from pycoflux.worker.requests import RequestHandlers, describe, optional_int, require
from pycoflux.worker.streams import ProducerStreams, Subscription
from pycoflux.worker.tracebacks import error_tuple, parse_frames
from pycoflux.worker.values import ValueCodec
from pycoflux.worker.workdirs import WorkDirs

log = console.get_logger()


class ExecuteParams(TypedDict):
    """``params`` of the ``execute`` message written to the adapter (AP §7.1)."""

    execution_id: str
    module: str
    target: str
    arguments: list[dict[str, Any]]
    working_dir: str
    streams: NotRequired[Any]
    checkpoints: NotRequired[dict[str, Any]]


class Status(enum.IntEnum):
    """Heartbeat status codes."""

    STARTING = 0
    EXECUTING = 1
    ABORTING = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Assignment:
    """The decoded ``execute`` command."""

    execution_id: str
    module: str
    target: str
    arguments: list[Any]
    run_id: str
    workspace_id: str
    timeout_ms: int
    streams: Any
    checkpoints: dict[str, Any]

    @classmethod
    def decode(cls, params: list[Any]) -> Assignment:
        if len(params) < 6 or not all(isinstance(p, str) for p in params[:3]):
            raise ValueError("execute needs [id, module, target, arguments, run, workspace, ...]")
        padded = [*params, None, None, None][:9]
        arguments = padded[3] if isinstance(padded[3], list) else []
        timeout = padded[6]
        checkpoints = padded[8] if isinstance(padded[8], dict) else {}
        return cls(
            execution_id=padded[0],
            module=padded[1],
            target=padded[2],
            arguments=arguments,
            run_id=str(padded[4]),
            workspace_id=str(padded[5]),
            timeout_ms=int(timeout) if isinstance(timeout, int | float) and timeout > 0 else 0,
            streams=padded[7],
            checkpoints=checkpoints,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    """Shared machinery every execution uses."""

    connection: Connection
    codec: ValueCodec
    blobs: BlobManager
    pool: ExecutorPool
    log_store: HttpBatcher
    metric_store: HttpBatcher
    timings: Timings
    workdirs: WorkDirs


class ExecutionHost(Protocol):
    def terminated(self, execution: Execution) -> None:
        """The process is gone and cleanup is done: deliver ``notify_terminated``."""
        ...


class Execution:
    """Runs one execution in one executor process."""

    def __init__(self, assignment: Assignment, services: Services, host: ExecutionHost) -> None:
        self.assignment = assignment
        self.id = assignment.execution_id
        self._services = services
        self._connection = services.connection
        self._codec = services.codec
        self._timings = services.timings
        self._host = host
        self.status = Status.STARTING
        self.received_at = time.monotonic()
        self.pending_reports: list[tuple[str, list[Any]]] = []
        self.terminated = False
        self.finished = asyncio.Event()
        self.aborted = False
        self.forgotten = False
        self.killed = False
        self.timed_out = False
        self.suspended = False
        self.result_reported = False
        self.error_reported = False
        self.subscriptions: dict[int, Subscription] = {}
        self._process: AdapterProcess | None = None
        self._executing = False  # ``execute`` has been written
        self._returned = False  # a reusable process said ``ready`` again: it is free
        self._workdir: str | None = None
        self._requests: dict[Any, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._deadline: asyncio.TimerHandle | None = None
        self._suspend_timer: asyncio.TimerHandle | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._timeout_task: asyncio.Task[None] | None = None
        self._push_tail: asyncio.Task[None] | None = None
        self._checkpoints = CheckpointBuffer(
            execution_id=self.id,
            codec=self._codec,
            connection=self._connection,
            interval=self._timings.checkpoint_interval,
            request_timeout=self._timings.request_wait,
        )
        self._metrics = MetricTracker(
            execution_id=self.id,
            run_id=assignment.run_id,
            workspace_id=assignment.workspace_id,
            store=services.metric_store,
            started=self.received_at,
        )
        self._producers = ProducerStreams(self._on_stream_idle)
        self._handlers: RequestHandlers | None = None  # made on the first request

    def _request_handlers(self) -> RequestHandlers:
        if self._handlers is None:
            services = self._services
            self._handlers = RequestHandlers(
                execution_id=self.id,
                connection=self._connection,
                codec=self._codec,
                blobs=services.blobs,
                log_store=services.log_store,
                metric_store=services.metric_store,
                timings=self._timings,
                checkpoints=self._checkpoints,
                metrics=self._metrics,
                producers=self._producers,
                on_suspended=self._on_suspended,
            )
        return self._handlers

    # --- state ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return not self.finished.is_set()

    def _fields(self, **extra: Any) -> dict[str, Any]:
        return console.fields(
            execution_id=self.id,
            module=self.assignment.module,
            target=self.assignment.target,
            **extra,
        )

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.received_at:.3f}s"

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"{name}-{self.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _report(self, request: str, params: list[Any]) -> None:
        self.pending_reports.append((request, params))
        self._connection.report(request, params, self.id)

    def _report_internal(self, message: str) -> None:
        if self.aborted:
            return  # the server has already moved on; an error would be noise
        log.error("execution failed to start", extra=self._fields(error=message))
        self.error_reported = True
        self._report("put_error", [self.id, ["internal", message, []]])

    # --- commands from the server ---------------------------------------------------------

    def abort(self) -> None:
        """The server no longer wants this execution: kill it, report nothing."""
        if self.finished.is_set():
            return
        self.status = Status.ABORTING
        self.aborted = True
        # The server would reject these writes now.
        self._checkpoints.discard()
        if self._process is not None:
            self._spawn(self._process.kill(), "abort")

    def kill(self) -> None:
        """The worker is stopping: kill the process; the server sees a crash (and may retry)."""
        if self.finished.is_set() or self.killed:
            return
        self.killed = True
        if self._process is not None:
            self._spawn(self._process.kill(), "kill")

    def forget(self) -> None:
        """The server no longer lists this execution: stop it without a termination."""
        self.forgotten = True
        self.abort()

    def push_items(self, subscription_id: Any, items: Any) -> None:
        async def deliver() -> None:
            converted = []
            for item in items if isinstance(items, list) else []:
                if isinstance(item, list) and len(item) == 2:
                    converted.append([item[0], await self._codec.to_adapter(item[1])])
            subscription = self.subscriptions.get(subscription_id)
            if subscription is not None:
                subscription.delivered += len(converted)
            await self._write_push(
                "stream_items",
                {"execution_id": self.id, "subscription_id": subscription_id, "items": converted},
            )

        self._chain(deliver)

    def push_closed(self, subscription_id: Any, reason: Any, error: Any) -> None:
        async def deliver() -> None:
            self.subscriptions.pop(subscription_id, None)
            params: dict[str, Any] = {
                "execution_id": self.id,
                "subscription_id": subscription_id,
                "reason": reason,
            }
            if error is not None:
                params["error"] = error
            await self._write_push("stream_closed", params)

        self._chain(deliver)

    def push_demand(self, index: Any, n: Any) -> None:
        async def deliver() -> None:
            await self._write_push(
                "stream_demand", {"execution_id": self.id, "index": index, "n": n}
            )

        self._chain(deliver)

    def _chain(self, step: Callable[[], Awaitable[None]]) -> None:
        """Run pushes one after another, off the WebSocket reader, in arrival order."""
        previous = self._push_tail

        async def run() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                await step()
            except (errors.WorkerError, OSError) as exc:
                log.warning("dropping push to executor", extra=self._fields(error=exc))

        self._push_tail = self._spawn(run(), "push")

    async def _write_push(self, method: str, params: dict[str, Any]) -> None:
        process = self._process
        if process is None or not process.alive or self.finished.is_set():
            return
        with contextlib.suppress(errors.AdapterError):
            await process.write({"method": method, "params": params})

    def resubscribe(self) -> None:
        """Re-establish consumer subscriptions after a reconnect, resuming credit accounting."""
        for subscription in self.subscriptions.values():
            self._connection.notify(
                "stream_subscribe",
                subscription.subscribe_params(self.id, resume=True),
                execution_id=self.id,
                replayable=True,
            )

    # --- lifecycle --------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if await self._start():
                await self._message_loop()
        except Exception as exc:
            log.exception("execution handling failed", extra=self._fields())
            if not (self.result_reported or self.error_reported or self.aborted):
                self._report_internal(f"worker error: {describe(exc)}")
        finally:
            await self._cleanup()

    async def _start(self) -> bool:
        assignment = self.assignment
        try:
            arguments = [await self._codec.to_adapter(a) for a in assignment.arguments]
            checkpoints = {
                str(name): await self._codec.to_adapter(value)
                for name, value in assignment.checkpoints.items()
            }
        except (errors.WorkerError, OSError) as exc:
            self._report_internal(f"failed to prepare arguments: {describe(exc)}")
            return False
        if self.aborted or self.killed:
            return False
        self.status = Status.EXECUTING
        try:
            process = await self._services.pool.acquire()
        except PoolClosedError:
            self._report_internal("pool is shut down")
            return False
        except errors.AdapterError as exc:
            self._report_internal(f"failed to spawn executor: executor not ready: {exc}")
            return False
        self._process = process
        process.label = self.id
        if self.aborted or self.killed:
            return False
        try:
            # At most one mkdir: cheaper inline than the thread hop that would carry it.
            self._workdir = self._services.workdirs.acquire()
        except OSError as exc:
            self._report_internal(f"failed to create working directory: {exc}")
            return False
        params: ExecuteParams = {
            "execution_id": self.id,
            "module": assignment.module,
            "target": assignment.target,
            "arguments": arguments,
            "working_dir": self._workdir,
        }
        if assignment.streams is not None:
            params["streams"] = assignment.streams
        if checkpoints:
            params["checkpoints"] = checkpoints
        try:
            await process.write({"method": "execute", "params": params})
        except errors.AdapterError as exc:
            self._report_internal(f"failed to send execute: {exc}")
            return False
        self._executing = True
        log.info("execution started", extra=self._fields(pid=process.pid))
        if assignment.timeout_ms > 0:
            self._deadline = asyncio.get_running_loop().call_later(
                assignment.timeout_ms / 1000, self._on_deadline
            )
        return True

    async def _message_loop(self) -> None:
        process = self._process
        assert process is not None
        while True:
            message = await process.read_message()
            if message is None:
                return
            method = message.get("method")
            params = message.get("params")
            if not isinstance(params, dict):
                params = {}
            claimed = params.get("execution_id")
            if process.reusable:
                if method == "ready" and "id" not in message:
                    self._returned = True
                    return
                if claimed is not None and claimed != self.id:
                    # A thread left behind by an earlier execution of this process.
                    log.warning(
                        "dropping a message for an earlier execution",
                        extra=self._fields(claimed=claimed, method=method),
                    )
                    continue
            elif claimed is not None and claimed != self.id:
                log.warning(
                    "adapter used another execution id", extra=self._fields(claimed=claimed)
                )
            if "id" in message:
                self._dispatch_request(message["id"], method, params)
                continue
            handler = _NOTIFICATIONS.get(str(method))
            if handler is None:
                log.warning(
                    "ignoring unknown adapter notification", extra=self._fields(method=method)
                )
                continue
            try:
                await handler(self, params)
            except (errors.WorkerError, OSError, ValueError, TypeError) as exc:
                log.warning(
                    "failed to handle adapter notification",
                    extra=self._fields(method=method, error=describe(exc)),
                )

    def _dispatch_request(self, request_id: Any, method: Any, params: dict[str, Any]) -> None:
        if self.error_reported or self.aborted or self.timed_out or self.killed:
            # The adapter is being stopped; it will not need the answer.
            return
        task = asyncio.create_task(
            self._serve_request(request_id, str(method), params),
            name=f"request-{self.id}-{request_id}",
        )
        self._requests[request_id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._requests.pop(request_id, None)
            self._maybe_finish()

        task.add_done_callback(done)

    async def _serve_request(self, request_id: Any, method: str, params: dict[str, Any]) -> None:
        response = await self._request_handlers().respond(request_id, method, params)
        process = self._process
        if process is None or self.aborted or self.timed_out or self.killed:
            return
        with contextlib.suppress(errors.AdapterError):
            await process.write(response)

    def _maybe_finish(self) -> None:
        """After a result, close stdin once no stream is open and no request is outstanding.

        A reusable process is left alone: it says ``ready`` once its streams have drained.
        """
        if (
            self._process is not None
            and not self._process.reusable
            and self.result_reported
            and not self.error_reported
            and self._stopping is None
            and not self._producers.any_open
            and not self._requests
            and not self.finished.is_set()
        ):
            self._begin_stop()

    def _begin_stop(self) -> None:
        if self._stopping is not None or self._process is None:
            return
        self._cancel_deadline()
        self._stopping = self._spawn(self._process.stop(self._timings.graceful_exit), "stop")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _on_deadline(self) -> None:
        self._deadline = None
        if (
            self.error_reported
            or self._stopping is not None
            or self.timed_out
            or self.aborted
            or self.suspended
        ):
            return
        self._timeout_task = self._spawn(self._time_out(), "timeout")

    async def _time_out(self) -> None:
        self.timed_out = True
        log.info("execution timed out", extra=self._fields(elapsed=self._elapsed()))
        if self._process is not None:
            await self._process.kill()
        await self._flush_checkpoints()
        self._report("put_timeout", [self.id])

    async def _flush_checkpoints(self) -> None:
        try:
            await self._checkpoints.flush()
        except (errors.WorkerError, TimeoutError) as exc:
            log.warning("checkpoint flush failed", extra=self._fields(error=describe(exc)))

    async def _cleanup(self) -> None:
        self._cancel_deadline()
        if self._suspend_timer is not None:
            self._suspend_timer.cancel()
        self._producers.clear()
        if self._timeout_task is not None:
            with contextlib.suppress(Exception):
                await self._timeout_task
        process = self._process
        interrupted = self.aborted or self.timed_out or self.suspended or self.killed
        reported = self.result_reported or self.error_reported
        crashed = self._executing and not (reported or interrupted)
        reuse = (
            process is not None
            and process.reusable
            and process.alive
            and self._returned
            and reported
            and not interrupted
        )
        if crashed:
            tail = "\n".join(process.stderr_tail) if process is not None else ""
            log.error(
                "executor exited without reporting a result",
                extra=self._fields(elapsed=self._elapsed(), stderr=tail[-2000:]),
            )
        if process is not None and not reuse:
            if self._stopping is not None:
                with contextlib.suppress(Exception):
                    await self._stopping
            await process.stop(self._timings.graceful_exit)
        for task in list(self._requests.values()):
            task.cancel()
        if self._requests:
            await asyncio.gather(*self._requests.values(), return_exceptions=True)
        pending = [t for t in self._tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._metrics.flush_trailing()
        if not self.aborted:
            # Writes made while streams drained after the result are still accepted.
            await self._flush_checkpoints()
        await self._checkpoints.close()
        if self._workdir is not None:
            await self._services.workdirs.release(self._workdir)
        if process is not None:
            self._services.pool.release(process, reuse=reuse)
        self.terminated = True
        self.finished.set()
        if not self.forgotten:
            self._host.terminated(self)

    # --- notifications ------------------------------------------------------------------

    async def _on_result(self, params: dict[str, Any]) -> None:
        if self.result_reported or self.error_reported:
            log.warning("ignoring second terminal message", extra=self._fields())
            return
        self.result_reported = True
        await self._flush_checkpoints()
        try:
            value = await self._codec.to_server(params.get("result"))
        except (errors.WorkerError, OSError) as exc:
            self.error_reported = True
            self._report(
                "put_error", [self.id, ["internal", f"failed to store result: {describe(exc)}", []]]
            )
            self._begin_stop()
            return
        self._report("put_result", [self.id, value])
        log.info("execution completed", extra=self._fields(elapsed=self._elapsed()))
        self._maybe_finish()

    async def _on_error(self, params: dict[str, Any]) -> None:
        if self.result_reported or self.error_reported:
            log.warning("ignoring second terminal message", extra=self._fields())
            return
        self.error_reported = True
        self._cancel_deadline()
        error = params.get("error")
        if not isinstance(error, dict):
            error = {}
        report: list[Any] = [
            str(error.get("type") or ""),
            str(error.get("message") or ""),
            parse_frames(error.get("traceback")),
        ]
        if isinstance(error.get("retryable"), bool):
            report.append(error["retryable"])
        await self._flush_checkpoints()
        self._report("put_error", [self.id, report])
        log.info(
            "execution failed",
            extra=self._fields(elapsed=self._elapsed(), error_type=report[0]),
        )
        if self._process is None or not self._process.reusable:
            self._begin_stop()

    async def _on_log(self, params: dict[str, Any]) -> None:
        entry = await logs.build_entry(
            self._codec,
            params,
            run_id=self.assignment.run_id,
            execution_id=self.id,
            workspace_id=self.assignment.workspace_id,
        )
        self._services.log_store.add(entry)

    async def _on_register_group(self, params: dict[str, Any]) -> None:
        self._connection.notify(
            "register_group",
            [self.id, params.get("group_id"), params.get("name")],
            execution_id=self.id,
            replayable=True,
        )

    async def _on_define_metric(self, params: dict[str, Any]) -> None:
        key = require(params, "key", str)
        definition = params.get("definition")
        self._metrics.define(key, definition)
        self._connection.notify(
            "define_metric",
            [self.id, key, definition if isinstance(definition, dict) else {}],
            execution_id=self.id,
            replayable=True,
        )

    async def _on_metric(self, params: dict[str, Any]) -> None:
        self._metrics.record(require(params, "key", str), params.get("value"), params.get("at"))

    async def _on_checkpoint_update(self, params: dict[str, Any]) -> None:
        if not self.aborted:
            self._checkpoints.update(params.get("set"), params.get("reset"))

    async def _on_stream_append(self, params: dict[str, Any]) -> None:
        index = require(params, "index", int)
        self._producers.appended(index)
        value = await self._codec.to_server(params.get("value"))
        self._connection.notify(
            "stream_append",
            [self.id, index, params.get("sequence"), value],
            execution_id=self.id,
            replayable=True,
        )

    async def _on_stream_close(self, params: dict[str, Any]) -> None:
        index = require(params, "index", int)
        self._producers.closed(index)
        self._connection.notify(
            "stream_close",
            [self.id, index, error_tuple(params.get("error"))],
            execution_id=self.id,
            replayable=True,
        )
        self._maybe_finish()

    async def _on_stream_subscribe(self, params: dict[str, Any]) -> None:
        subscription = Subscription(
            subscription_id=require(params, "subscription_id", int),
            stream_id=require(params, "stream_id", str),
            from_sequence=optional_int(params, "from_sequence") or 0,
            stride=params.get("stride"),
            prefetch=params.get("prefetch"),
        )
        self.subscriptions[subscription.subscription_id] = subscription
        self._connection.notify(
            "stream_subscribe",
            subscription.subscribe_params(self.id, resume=False),
            execution_id=self.id,
            replayable=True,
        )

    async def _on_stream_ack(self, params: dict[str, Any]) -> None:
        subscription_id = require(params, "subscription_id", int)
        count = require(params, "count", int)
        sequence = require(params, "sequence", int)
        subscription = self.subscriptions.get(subscription_id)
        if subscription is not None:
            subscription.acked_count = count
            subscription.acked_seq = sequence
        self._connection.notify(
            "stream_ack",
            [self.id, subscription_id, count, sequence],
            execution_id=self.id,
            replayable=True,
        )

    async def _on_stream_unsubscribe(self, params: dict[str, Any]) -> None:
        subscription_id = require(params, "subscription_id", int)
        self.subscriptions.pop(subscription_id, None)
        self._connection.notify(
            "stream_unsubscribe",
            [self.id, subscription_id],
            execution_id=self.id,
            replayable=True,
        )

    def _on_suspended(self) -> None:
        self.suspended = True
        log.info("execution suspended", extra=self._fields(elapsed=self._elapsed()))
        # The SDK waits for stdin EOF after the reply; the server's abort normally
        # provides it, but do not depend on that.
        self._suspend_timer = asyncio.get_running_loop().call_later(
            self._timings.suspend_close_delay, self._begin_stop
        )

    def _on_stream_idle(self, index: int) -> None:
        self._spawn(self._idle_close(index), "stream-idle")

    async def _idle_close(self, index: int) -> None:
        try:
            accepted = await self._connection.request(
                "stream_close",
                [self.id, index, None, "timeout"],
                execution_id=self.id,
                policy=RetryPolicy.WAIT,
                timeout=self._timings.stream_close_reply,
            )
        except (errors.WorkerError, TimeoutError):
            accepted = True  # no answer: behave like a server without pausing
        if not self._producers.is_open(index):
            return
        if accepted is False:
            # Paused: every consumer is suspended waiting on it. Check again later.
            self._producers.restart(index)
            return
        self._producers.closed(index)
        await self._write_push(
            "stream_force_close", {"execution_id": self.id, "index": index, "reason": "timeout"}
        )
        self._maybe_finish()


# Adapter notifications and their handlers (a table per class, not per execution).
_NOTIFICATIONS: dict[str, Callable[[Execution, dict[str, Any]], Awaitable[None]]] = {
    "execution_result": Execution._on_result,
    "execution_error": Execution._on_error,
    "log": Execution._on_log,
    "register_group": Execution._on_register_group,
    "define_metric": Execution._on_define_metric,
    "metric": Execution._on_metric,
    "checkpoint_update": Execution._on_checkpoint_update,
    "stream_append": Execution._on_stream_append,
    "stream_close": Execution._on_stream_close,
    "stream_subscribe": Execution._on_stream_subscribe,
    "stream_ack": Execution._on_stream_ack,
    "stream_unsubscribe": Execution._on_stream_unsubscribe,
}
