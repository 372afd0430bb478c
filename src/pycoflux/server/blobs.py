"""The content-addressed blob store over HTTP (``/blobs/{key}``), shared by all projects."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path

from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response

from pycoflux.server.context import Context

KEY = re.compile(r"^[0-9a-f]{64}$")


def blob_path(root: Path, key: str) -> Path:
    return root / "blobs" / key[0:2] / key[2:4] / key[4:]


async def handle(context: Context) -> Response:
    request = context.request
    key = request.path_params["key"]
    root: Path = context.server.config.data_dir
    valid = bool(KEY.match(key))
    if request.method in ("GET", "HEAD"):
        path = blob_path(root, key) if valid else None
        if path is None or not path.is_file():
            if request.method == "HEAD":
                return Response(status_code=404)
            return PlainTextResponse("Not found", status_code=404)
        if request.method == "HEAD":
            return Response(status_code=200, headers={"content-length": str(path.stat().st_size)})
        return FileResponse(path, media_type="application/octet-stream")
    if request.method == "PUT":
        if not valid:
            return JSONResponse({"error": "invalid_key"}, status_code=400)
        incoming = root / "blobs" / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        handle_, temporary = tempfile.mkstemp(dir=incoming)
        try:
            with os.fdopen(handle_, "wb") as file:
                async for chunk in request.stream():
                    digest.update(chunk)
                    await asyncio.to_thread(file.write, chunk)
                file.flush()
                os.fsync(file.fileno())
            if digest.hexdigest() != key:
                return JSONResponse({"error": "hash_mismatch"}, status_code=400)
            target = blob_path(root, key)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temporary, target)
            return Response(status_code=204)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    return Response(status_code=405)
