"""Content-addressed blob storage: HTTP and S3 stores plus a local read cache."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import os
import tempfile
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from pycoflux import errors
from pycoflux.worker import console

log = console.get_logger()

_CHUNK = 1024 * 1024


class BlobError(errors.WorkerError):
    """A blob transfer failed."""


class BlobNotFoundError(BlobError):
    """blob not found"""


@dataclass(frozen=True, slots=True, kw_only=True)
class ByteRange:
    offset: int
    length: int | None  # None: to the end


class BlobStore(Protocol):
    """Where blobs live. The first configured store receives every write."""

    name: str

    async def put(self, key: str, source: Path | bytes) -> None: ...

    async def get(self, key: str, dest: Path, byte_range: ByteRange | None) -> bool:
        """Write the blob (or the range) to ``dest``; False when the store lacks it."""
        ...


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_file(path: Path) -> tuple[str, int]:
    """SHA-256 and size of a file (blocking: run it in a thread)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, _CHUNK):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


def range_header(byte_range: ByteRange) -> str:
    if byte_range.length is None:
        return f"bytes={byte_range.offset}-"
    return f"bytes={byte_range.offset}-{byte_range.offset + byte_range.length - 1}"


class HttpBlobStore:
    """``GET``/``PUT <url>/<key>``, usually the server's ``/blobs``."""

    def __init__(
        self, url: str, headers: dict[str, str], client: httpx.AsyncClient, name: str = "http"
    ) -> None:
        self.name = name
        self._url = url.rstrip("/")
        self._headers = headers
        self._client = client

    async def put(self, key: str, source: Path | bytes) -> None:
        headers = {**self._headers, "Content-Type": "application/octet-stream"}
        content: bytes | AsyncIterator[bytes]
        if isinstance(source, bytes):
            content = source
        else:
            content = _file_chunks(source)
            headers["Content-Length"] = str((await asyncio.to_thread(source.stat)).st_size)
        try:
            response = await self._client.put(
                f"{self._url}/{key}", content=content, headers=headers
            )
        except httpx.HTTPError as exc:
            raise BlobError(f"upload of {key} failed: {exc or type(exc).__name__}") from exc
        if response.status_code not in (200, 201, 204):
            raise BlobError(f"upload of {key} failed: HTTP {response.status_code}")

    async def get(self, key: str, dest: Path, byte_range: ByteRange | None) -> bool:
        headers = dict(self._headers)
        if byte_range is not None:
            headers["Range"] = range_header(byte_range)
        try:
            async with self._client.stream(
                "GET", f"{self._url}/{key}", headers=headers
            ) as response:
                if response.status_code == 404:
                    return False
                if response.status_code == 416:
                    await asyncio.to_thread(dest.write_bytes, b"")
                    return True
                if response.status_code not in (200, 206):
                    raise BlobError(f"download of {key} failed: HTTP {response.status_code}")
                # A 200 to a ranged request carries the whole blob: slice it here.
                skip = byte_range.offset if byte_range and response.status_code == 200 else 0
                remaining = (
                    byte_range.length
                    if byte_range and byte_range.length is not None and response.status_code == 200
                    else None
                )
                handle = await asyncio.to_thread(dest.open, "wb")
                try:
                    async for chunk in response.aiter_bytes(_CHUNK):
                        if skip:
                            dropped = min(skip, len(chunk))
                            chunk = chunk[dropped:]
                            skip -= dropped
                        if remaining is not None:
                            chunk = chunk[:remaining]
                            remaining -= len(chunk)
                        if chunk:
                            await asyncio.to_thread(handle.write, chunk)
                        if remaining == 0:
                            break
                finally:
                    await asyncio.to_thread(handle.close)
        except httpx.HTTPError as exc:
            raise BlobError(f"download of {key} failed: {exc or type(exc).__name__}") from exc
        return True


def s3_object_key(prefix: str, key: str) -> str:
    """``[<prefix>/]<k[0:2]>/<k[2:4]>/<k[4:]>`` (worker.md §8.4; the CLI reads the same layout)."""
    sharded = f"{key[0:2]}/{key[2:4]}/{key[4:]}"
    prefix = prefix.strip("/")
    return f"{prefix}/{sharded}" if prefix else sharded


_S3_MISSING = frozenset({"NoSuchKey", "NotFound", "404"})


class S3BlobStore:
    """Objects in one S3 bucket, through boto3 in worker threads.

    Credentials, and the endpoint (``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``), come from
    the standard AWS configuration chain. boto3 is imported, and the client built, on first
    use: it costs a few hundred milliseconds that a worker without S3 shouldn't pay.
    """

    def __init__(
        self, bucket: str, *, prefix: str = "", region: str | None = None, name: str = "s3"
    ) -> None:
        self.name = name
        self._bucket = bucket
        self._prefix = prefix
        self._region = region
        self._client: Any = None
        self._lock = threading.Lock()

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3

                # Sessions are not thread-safe, clients are: one private session builds it.
                self._client = boto3.session.Session().client("s3", region_name=self._region)
            return self._client

    async def put(self, key: str, source: Path | bytes) -> None:
        await asyncio.to_thread(self._put, key, source)

    def _put(self, key: str, source: Path | bytes) -> None:
        name = s3_object_key(self._prefix, key)
        try:
            if isinstance(source, bytes):
                self._s3().put_object(Bucket=self._bucket, Key=name, Body=source)
            else:
                # Multipart for large files, with retries, in boto3's transfer manager.
                self._s3().upload_file(str(source), self._bucket, name)
        except Exception as exc:  # botocore and the transfer manager each raise their own types
            raise BlobError(f"upload of {key} to s3://{self._bucket}/{name} failed: {exc}") from exc

    async def get(self, key: str, dest: Path, byte_range: ByteRange | None) -> bool:
        return await asyncio.to_thread(self._get, key, dest, byte_range)

    def _get(self, key: str, dest: Path, byte_range: ByteRange | None) -> bool:
        import botocore.exceptions

        name = s3_object_key(self._prefix, key)
        request: dict[str, Any] = {"Bucket": self._bucket, "Key": name}
        if byte_range is not None:
            request["Range"] = range_header(byte_range)
        try:
            response = self._s3().get_object(**request)
            with dest.open("wb") as handle:
                for chunk in response["Body"].iter_chunks(_CHUNK):
                    handle.write(chunk)
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _S3_MISSING:
                return False
            if code == "InvalidRange":  # past the end: the available bytes, i.e. none
                dest.write_bytes(b"")
                return True
            raise BlobError(
                f"download of {key} from s3://{self._bucket}/{name} failed: {exc}"
            ) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise BlobError(
                f"download of {key} from s3://{self._bucket}/{name} failed: {exc}"
            ) from exc
        return True


class BlobManager:
    """Uploads to the first store; downloads into the cache, trying each store in turn."""

    def __init__(self, stores: list[BlobStore], cache_dir: Path) -> None:
        if not stores:
            raise errors.ConfigError("no usable blob store configured")
        self._stores = stores
        self.cache_dir = cache_dir
        self._fetches: dict[str, asyncio.Task[Path]] = {}

    def cache_path(self, key: str) -> Path:
        return self.cache_dir / key[0:2] / key[2:4] / key

    async def put_bytes(self, data: bytes) -> str:
        key = hash_bytes(data) if len(data) < _CHUNK else await asyncio.to_thread(hash_bytes, data)
        await self._stores[0].put(key, data)
        return key

    async def put_file(self, path: Path) -> tuple[str, int]:
        try:
            key, size = await asyncio.to_thread(hash_file, path)
        except OSError as exc:
            raise BlobError(f"cannot read {path}: {exc}") from exc
        await self._stores[0].put(key, path)
        return key, size

    async def fetch(self, key: str) -> Path:
        """The cache path of a blob, downloading it first when absent."""
        path = self.cache_path(key)
        if await asyncio.to_thread(path.exists):
            return path
        # Concurrent requests for one key share a single download.
        task = self._fetches.get(key)
        if task is None:
            task = asyncio.create_task(self._download(key, path), name=f"blob-fetch-{key[:12]}")
            self._fetches[key] = task
            task.add_done_callback(lambda _: self._fetches.pop(key, None))
        return await asyncio.shield(task)

    async def _download(self, key: str, path: Path) -> Path:
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        fd, temp_name = await asyncio.to_thread(tempfile.mkstemp, prefix=".part-", dir=path.parent)
        os.close(fd)
        temp = Path(temp_name)
        try:
            for store in self._stores:
                if await store.get(key, temp, None):
                    # Rename is atomic: readers never see a partial file.
                    await asyncio.to_thread(os.replace, temp, path)
                    return path
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(temp.unlink)
        raise BlobNotFoundError(f"blob not found: {key}")

    async def fetch_range(
        self, key: str, dest: Path, offset: int | None, length: int | None
    ) -> None:
        """Write a blob, or the byte range ``[offset, offset+length)``, to ``dest``."""
        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        if offset is None and length is None:
            source = await self.fetch(key)
            await asyncio.to_thread(_copy_range, source, dest, 0, None)
            return
        start = offset or 0
        if length == 0:
            await asyncio.to_thread(dest.write_bytes, b"")
            return
        cached = self.cache_path(key)
        if await asyncio.to_thread(cached.exists):
            await asyncio.to_thread(_copy_range, cached, dest, start, length)
            return
        byte_range = ByteRange(offset=start, length=length)
        for store in self._stores:
            if await store.get(key, dest, byte_range):
                return
        raise BlobNotFoundError(f"blob not found: {key}")


def _copy_range(source: Path, dest: Path, offset: int, length: int | None) -> None:
    with source.open("rb") as reader, dest.open("wb") as writer:
        reader.seek(offset)
        remaining = length
        while remaining is None or remaining > 0:
            chunk = reader.read(_CHUNK if remaining is None else min(_CHUNK, remaining))
            if not chunk:
                break
            writer.write(chunk)
            if remaining is not None:
                remaining -= len(chunk)


def build_stores(
    configured: tuple[dict[str, Any], ...],
    *,
    default_url: str,
    headers_for: Any,
    client: httpx.AsyncClient,
) -> list[BlobStore]:
    """Instantiate configured stores; those that cannot start are skipped with an error log.

    ``headers_for(token)`` builds request headers for a store token (None: the session token).
    """
    if not configured:
        return [HttpBlobStore(f"{default_url}/blobs", headers_for(None), client)]
    stores: list[BlobStore] = []
    for index, spec in enumerate(configured):
        kind = spec.get("type", "http")
        if kind == "http":
            token = spec.get("token")
            stores.append(
                HttpBlobStore(
                    str(spec.get("url") or f"{default_url}/blobs"),
                    headers_for(token),
                    client,
                    name=f"http[{index}]",
                )
            )
        elif kind == "s3":
            bucket = spec.get("bucket")
            if not isinstance(bucket, str) or not bucket:
                log.error(
                    "skipping blob store",
                    extra=console.fields(index=index, type=kind, reason="no bucket configured"),
                )
                continue
            if importlib.util.find_spec("boto3") is None:
                log.error(
                    "skipping blob store",
                    extra=console.fields(index=index, type=kind, reason="boto3 is not installed"),
                )
                continue
            stores.append(
                S3BlobStore(
                    bucket,
                    prefix=str(spec.get("prefix") or ""),
                    region=str(spec["region"]) if spec.get("region") else None,
                    name=f"s3[{index}]",
                )
            )
        else:
            log.error(
                "skipping blob store",
                extra=console.fields(index=index, type=kind, reason="unsupported store type"),
            )
    return stores
