"""Serving adapter requests (worker spec §7): one server round-trip or blob transfer each."""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from pycoflux import errors
from pycoflux.worker import console
from pycoflux.worker.batching import HttpBatcher
from pycoflux.worker.blobs import BlobManager
from pycoflux.worker.checkpoints import CheckpointBuffer
from pycoflux.worker.config import Timings
from pycoflux.worker.connection import Connection, RetryPolicy
from pycoflux.worker.metrics import MetricTracker
from pycoflux.worker.streams import ProducerStreams
from pycoflux.worker.values import ValueCodec

log = console.get_logger()

_ERROR_CODES = {
    "submit_execution": "submit_error",
    "select": "select_error",
    "cancel": "cancel_error",
    "suspend": "suspend_error",
    "persist_asset": "persist_error",
    "get_asset": "get_asset_error",
    "download_blob": "download_error",
    "upload_blob": "upload_error",
    "submit_input": "input_error",
    "flush": "flush_error",
    "stream_register": "stream_register_error",
}


class ResponseError(TypedDict):
    code: str
    message: str


class Response(TypedDict):
    """A response to an adapter request: ``result``, plus ``error`` on failure."""

    id: Any
    result: Any
    error: NotRequired[ResponseError]


class ParamError(Exception):
    """The request's params could not be decoded (``parse_error``)."""


class RequestError(Exception):
    """A request failed with a specific adapter error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def require(params: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = params.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ParamError(f"missing or invalid '{key}'")
    return value


def optional_int(params: dict[str, Any], key: str) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ParamError(f"invalid '{key}'")
    return int(value)


def error_response(request_id: Any, code: str, message: str) -> Response:
    return {"id": request_id, "result": None, "error": {"code": code, "message": message}}


def describe(exc: BaseException) -> str:
    """The adapter-facing message for a failure."""
    if isinstance(exc, errors.SessionLostError):
        return "not connected to server"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _submit_cache(cache: Any) -> dict[str, Any] | None:
    if not isinstance(cache, dict):
        return None
    return {
        "params": cache.get("params", True),
        "max_age": cache.get("max_age_ms"),
        "namespace": cache.get("namespace"),
        "version": cache.get("version"),
    }


def _submit_retries(retries: Any) -> dict[str, Any] | None:
    if not isinstance(retries, dict):
        return None
    result: dict[str, Any] = {"limit": retries.get("limit")}
    if "backoff_min_ms" in retries:
        result["backoff_min"] = retries["backoff_min_ms"]
    if "backoff_max_ms" in retries:
        result["backoff_max"] = retries["backoff_max_ms"]
    return result


class RequestHandlers:
    """The request methods of one execution's adapter, mapped to server calls."""

    def __init__(
        self,
        *,
        execution_id: str,
        connection: Connection,
        codec: ValueCodec,
        blobs: BlobManager,
        log_store: HttpBatcher,
        metric_store: HttpBatcher,
        timings: Timings,
        checkpoints: CheckpointBuffer,
        metrics: MetricTracker,
        producers: ProducerStreams,
        on_suspended: Callable[[], None],
    ) -> None:
        self._execution_id = execution_id
        self._connection = connection
        self._codec = codec
        self._blobs = blobs
        self._log_store = log_store
        self._metric_store = metric_store
        self._timings = timings
        self._checkpoints = checkpoints
        self._metrics = metrics
        self._producers = producers
        self._on_suspended = on_suspended
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "submit_execution": self.submit_execution,
            "select": self.select,
            "cancel": self.cancel,
            "suspend": self.suspend,
            "persist_asset": self.persist_asset,
            "get_asset": self.get_asset,
            "download_blob": self.download_blob,
            "upload_blob": self.upload_blob,
            "submit_input": self.submit_input,
            "flush": self.flush,
            "stream_register": self.stream_register,
        }

    async def respond(self, request_id: Any, method: str, params: dict[str, Any]) -> Response:
        """Serve one request; failures become error responses with the method's code."""
        handler = self._handlers.get(method)
        try:
            if handler is None:
                raise RequestError("unknown_method", f"unknown method: {method}")
            return {"id": request_id, "result": await handler(params)}
        except RequestError as exc:
            return error_response(request_id, exc.code, exc.message)
        except ParamError as exc:
            return error_response(request_id, "parse_error", str(exc))
        except (errors.WorkerError, OSError, ValueError, TypeError, TimeoutError) as exc:
            log.warning(
                "adapter request failed",
                extra=console.fields(
                    execution_id=self._execution_id, method=method, error=describe(exc)
                ),
            )
            return error_response(request_id, _ERROR_CODES.get(method, "internal"), describe(exc))

    async def submit_execution(self, params: dict[str, Any]) -> Any:
        module = require(params, "module", str)
        target = require(params, "target", str)
        raw_arguments = params.get("arguments") or []
        if not isinstance(raw_arguments, list):
            raise ParamError("invalid 'arguments'")
        arguments = [await self._codec.to_server(a) for a in raw_arguments]
        defer = params.get("defer")
        timeout = optional_int(params, "timeout")
        delay = params.get("delay")
        reply = await self._connection.request(
            "submit",
            [
                module,
                target,
                params.get("type") or "task",
                arguments,
                self._execution_id,
                params.get("group_id"),
                params.get("wait_for"),
                _submit_cache(params.get("cache")),
                {"params": defer.get("params", True)} if isinstance(defer, dict) else None,
                params.get("memo"),
                round(delay)
                if isinstance(delay, int | float) and not isinstance(delay, bool)
                else 0,
                _submit_retries(params.get("retries")),
                bool(params.get("recurrent", False)),
                params.get("requires"),
                timeout or None,
                params.get("streams"),
            ],
            execution_id=self._execution_id,
        )
        if not isinstance(reply, list) or len(reply) < 3:
            raise errors.WorkerError(f"unexpected submit reply: {reply!r:.100}")
        return {"execution_id": reply[0], "module": reply[1], "target": reply[2]}

    async def select(self, params: dict[str, Any]) -> Any:
        handles = require(params, "handles", list)
        suspend = params.get("suspend", True)
        reply = await self._connection.request(
            "select",
            [
                handles,
                self._execution_id,
                optional_int(params, "timeout_ms"),
                bool(suspend),
                bool(params.get("cancel_remaining", False)),
            ],
            execution_id=self._execution_id,
            policy=RetryPolicy.RETRY,
        )
        if reply is None:
            return None
        if not isinstance(reply, dict):
            raise errors.WorkerError(f"unexpected select reply: {reply!r:.100}")
        result = {key: value for key, value in reply.items() if key != "value"}
        if reply.get("value") is not None:
            result["value"] = await self._codec.to_adapter(reply["value"])
        return result

    async def cancel(self, params: dict[str, Any]) -> Any:
        handles = require(params, "handles", list)
        await self._connection.request(
            "cancel",
            [handles, self._execution_id],
            execution_id=self._execution_id,
            policy=RetryPolicy.RETRY,
        )
        return {}

    async def suspend(self, params: dict[str, Any]) -> Any:
        execute_after = optional_int(params, "execute_after")
        stream_wait = params.get("stream_wait")
        await self._checkpoints.flush()
        written = self._connection.notify(
            "suspend",
            [
                self._execution_id,
                execute_after,
                stream_wait if isinstance(stream_wait, dict) else None,
            ],
            execution_id=self._execution_id,
            replayable=True,
        )
        try:
            async with asyncio.timeout(self._timings.request_wait):
                await asyncio.shield(written)
        finally:
            if not written.done():
                written.cancel()
        self._on_suspended()
        return {}

    async def persist_asset(self, params: dict[str, Any]) -> Any:
        paths = params.get("paths")
        items: list[tuple[str, str]]
        if isinstance(paths, list):
            items = [(Path(str(p)).name, str(p)) for p in paths]
        elif isinstance(paths, dict):
            items = [(str(k), str(v)) for k, v in paths.items()]
        elif paths is None:
            items = []
        else:
            raise ParamError("invalid 'paths'")
        entries_in = params.get("entries")
        entries: dict[str, Any] = dict(entries_in) if isinstance(entries_in, dict) else {}
        for asset_path, local in items:
            key, size = await self._blobs.put_file(Path(local))
            mime = mimetypes.guess_type(local)[0]
            entries[asset_path] = [key, size, {"type": mime} if mime else {}]
        metadata = params.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        reply = await self._connection.request(
            "put_asset", [self._execution_id, name, entries], execution_id=self._execution_id
        )
        if not isinstance(reply, list) or not reply:
            raise errors.WorkerError(f"unexpected put_asset reply: {reply!r:.100}")
        return {"asset_id": reply[0], "reference": ["asset", *reply]}

    async def get_asset(self, params: dict[str, Any]) -> Any:
        asset_id = require(params, "asset_id", str)
        reply = await self._connection.request(
            "get_asset",
            [asset_id, self._execution_id],
            execution_id=self._execution_id,
            policy=RetryPolicy.WAIT,
            timeout=self._timings.request_wait,
        )
        return {"entries": reply}

    async def download_blob(self, params: dict[str, Any]) -> Any:
        await self._blobs.fetch_range(
            require(params, "blob_key", str),
            Path(require(params, "target_path", str)),
            optional_int(params, "offset"),
            optional_int(params, "length"),
        )
        return {}

    async def upload_blob(self, params: dict[str, Any]) -> Any:
        key, _size = await self._blobs.put_file(Path(require(params, "source_path", str)))
        return {"blob_key": key}

    async def submit_input(self, params: dict[str, Any]) -> Any:
        template = require(params, "template", str)
        raw = params.get("placeholders")
        placeholders = {
            str(name): await self._codec.to_server(value)
            for name, value in (raw.items() if isinstance(raw, dict) else [])
        }
        reply = await self._connection.request(
            "submit_input",
            [
                self._execution_id,
                template,
                placeholders,
                params.get("schema"),
                params.get("key"),
                params.get("title"),
                params.get("actions"),
                params.get("initial"),
                params.get("requires"),
            ],
            execution_id=self._execution_id,
        )
        return {"input_id": reply}

    async def flush(self, params: dict[str, Any]) -> Any:
        # Every frame this adapter produced before the flush line is already queued
        # (notifications are handled inline), so a barrier covers them all.
        await self._connection.barrier(self._timings.request_wait)
        await self._checkpoints.flush()
        self._metrics.flush_trailing()
        await self._metric_store.flush()
        await self._log_store.flush()
        return {}

    async def stream_register(self, params: dict[str, Any]) -> Any:
        position = require(params, "position", int)
        timeout_ms = optional_int(params, "timeout_ms")
        reply = await self._connection.request(
            "stream_register",
            [self._execution_id, position, optional_int(params, "buffer"), timeout_ms],
            execution_id=self._execution_id,
            policy=RetryPolicy.WAIT,
            timeout=self._timings.request_wait,
        )
        if not isinstance(reply, dict) or not isinstance(reply.get("index"), int):
            raise errors.WorkerError(f"unexpected stream_register reply: {reply!r:.100}")
        self._producers.register(reply["index"], timeout_ms)
        return reply
