"""The content-addressed blob store over HTTP (``/blobs/{key}``), shared by all projects.

Uploads stream to a temporary file while hashing and are renamed into place only when
the content matches the key, so a reader never sees a partial or wrong blob and a
rejected upload leaves nothing behind (the ``max_blob_size`` limit is enforced on the
body stream by ``app.BodyLimit``; its error unwinds through the cleanup here).
Downloads honour a single ``Range: bytes=...`` (206), which the worker's ranged reads use.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from pycoflux.server.context import ApiError, Context

log = logging.getLogger("pycoflux.server")

KEY = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def blob_path(root: Path, key: str) -> Path:
    return root / "blobs" / key[0:2] / key[2:4] / key[4:]


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The inclusive ``(first, last)`` byte of a single-range request, None to send it all.

    Ranges in other units and multi-range requests are ignored (RFC 9110 allows it);
    a malformed byte range is a 400, one that starts past the end a 416.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _RANGE.match(f"bytes={spec.strip()}")
    if match is None or match.groups() == ("", ""):
        raise ApiError(400, "invalid_range", {"range": header})
    first, last = match.groups()
    if first == "":  # a suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - length), size - 1
    start = int(first)
    if last != "" and int(last) < start:
        raise ApiError(400, "invalid_range", {"range": header})
    if start >= size:
        raise _unsatisfiable(size)
    return start, size - 1 if last == "" else min(int(last), size - 1)


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(416, "range_not_satisfiable", {"size": size})


async def _read(path: Path, start: int, length: int) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        await asyncio.to_thread(handle.seek, start)
        while length > 0:
            chunk = await asyncio.to_thread(handle.read, min(CHUNK, length))
            if not chunk:
                break
            length -= len(chunk)
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


async def handle(context: Context) -> Response:
    request = context.request
    key = request.path_params["key"]
    valid = bool(KEY.match(key))
    try:
        if request.method in ("GET", "HEAD"):
            return await _get(context, key if valid else None)
        if request.method == "PUT":
            if not valid:
                raise ApiError(400, "invalid_key")
            return await _put(context, key)
        return Response(status_code=405)
    except ApiError as e:
        response = e.response()
        if e.status == 416:
            response.headers["content-range"] = f"bytes */{e.details['size']}"
        return response


async def _get(context: Context, key: str | None) -> Response:
    head = context.request.method == "HEAD"
    root: Path = context.server.config.data_dir
    path = blob_path(root, key) if key is not None else None
    try:
        size = path.stat().st_size if path is not None else None
    except OSError:
        size = None
    if path is None or size is None:
        return Response(status_code=404) if head else PlainTextResponse("Not found", 404)
    headers = {"accept-ranges": "bytes", "content-type": "application/octet-stream"}
    if head:
        return Response(status_code=200, headers={**headers, "content-length": str(size)})
    header = context.request.headers.get("range")
    chosen = byte_range(header, size) if header else None
    if chosen is None:
        headers["content-length"] = str(size)
        return StreamingResponse(_read(path, 0, size), status_code=200, headers=headers)
    first, last = chosen
    headers["content-length"] = str(last - first + 1)
    headers["content-range"] = f"bytes {first}-{last}/{size}"
    return StreamingResponse(_read(path, first, last - first + 1), status_code=206, headers=headers)


async def _put(context: Context, key: str) -> Response:
    request = context.request
    root: Path = context.server.config.data_dir
    incoming = root / "blobs" / "incoming"
    await asyncio.to_thread(incoming.mkdir, parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, temporary = tempfile.mkstemp(dir=incoming)
    try:
        with os.fdopen(fd, "wb") as file:
            try:
                async for chunk in request.stream():
                    digest.update(chunk)
                    await asyncio.to_thread(file.write, chunk)
            except ClientDisconnect:
                # The uploader went away mid-body: keep nothing; nobody reads the answer.
                log.info("blob upload abandoned by the client", extra={"key": key})
                return Response(status_code=400)
            await asyncio.to_thread(file.flush)
            await asyncio.to_thread(os.fsync, file.fileno())
        if digest.hexdigest() != key:
            raise ApiError(400, "hash_mismatch")
        target = blob_path(root, key)
        await asyncio.to_thread(_move_into_place, Path(temporary), target)
        return Response(status_code=204)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _move_into_place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError:
        # A data directory split across filesystems: copy next to the target, then rename.
        staging = target.with_name(f".{target.name}.part")
        shutil.copyfile(source, staging)
        os.replace(staging, target)
    with contextlib.suppress(OSError):
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
