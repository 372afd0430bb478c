"""Blob server hardening: the size limit and byte ranges (``server-api.md`` §5)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

LIMIT = 64 * 1024  # COFLUX_MAX_BLOB_SIZE of the module's server (conftest.py)


def key_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def stored(server: ServerProcess, key: str) -> Path:
    return server.data_dir / "blobs" / key[:2] / key[2:4] / key[4:]


def leftovers(server: ServerProcess) -> list[Path]:
    incoming = server.data_dir / "blobs" / "incoming"
    return list(incoming.iterdir()) if incoming.exists() else []


@pytest.fixture
async def blob(client: httpx.AsyncClient) -> tuple[str, bytes]:
    content = bytes(range(256)) * 10  # 2560 bytes
    response = await client.put(f"/blobs/{key_of(content)}", content=content)
    assert response.status_code == 204
    return key_of(content), content


async def test_a_blob_at_the_limit_is_stored(
    client: httpx.AsyncClient, server: ServerProcess
) -> None:
    content = os.urandom(LIMIT)
    response = await client.put(f"/blobs/{key_of(content)}", content=content)
    assert response.status_code == 204
    assert stored(server, key_of(content)).read_bytes() == content


async def test_a_declared_oversize_upload_is_refused_before_reading_it(
    client: httpx.AsyncClient, server: ServerProcess
) -> None:
    content = os.urandom(LIMIT + 1)
    response = await client.put(f"/blobs/{key_of(content)}", content=content)
    assert response.status_code == 413
    assert response.json() == {"error": "payload_too_large"}
    assert not stored(server, key_of(content)).exists()
    assert leftovers(server) == []


async def test_a_streamed_oversize_upload_is_refused_and_discarded(
    client: httpx.AsyncClient, server: ServerProcess
) -> None:
    chunk = os.urandom(16 * 1024)
    content = chunk * 5

    async def body() -> AsyncIterator[bytes]:
        for _ in range(5):  # chunked: no content-length to check up front
            yield chunk

    response = await client.put(f"/blobs/{key_of(content)}", content=body())
    assert response.status_code == 413
    assert response.json() == {"error": "payload_too_large"}
    assert not stored(server, key_of(content)).exists()
    assert leftovers(server) == []


async def test_a_mismatched_upload_leaves_nothing(
    client: httpx.AsyncClient, server: ServerProcess
) -> None:
    key = key_of(b"expected")
    response = await client.put(f"/blobs/{key}", content=b"something else")
    assert response.status_code == 400
    assert response.json() == {"error": "hash_mismatch"}
    assert not stored(server, key).exists()
    assert leftovers(server) == []


async def test_head_reports_the_size_and_range_support(
    client: httpx.AsyncClient, blob: tuple[str, bytes]
) -> None:
    key, content = blob
    response = await client.head(f"/blobs/{key}")
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(content))
    assert response.headers["accept-ranges"] == "bytes"


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=10-19", 10, 19),
        ("bytes=2500-", 2500, 2559),
        ("bytes=-5", 2555, 2559),
        ("bytes=2550-9999", 2550, 2559),  # clipped to the end
        ("bytes=0-0", 0, 0),
    ],
)
async def test_a_byte_range_is_answered_with_206(
    client: httpx.AsyncClient, blob: tuple[str, bytes], header: str, first: int, last: int
) -> None:
    key, content = blob
    response = await client.get(f"/blobs/{key}", headers={"range": header})
    assert response.status_code == 206
    assert response.content == content[first : last + 1]
    assert response.headers["content-range"] == f"bytes {first}-{last}/{len(content)}"
    assert response.headers["content-length"] == str(last - first + 1)


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-1"])
async def test_ranges_we_do_not_serve_get_the_whole_blob(
    client: httpx.AsyncClient, blob: tuple[str, bytes], header: str
) -> None:
    key, content = blob
    response = await client.get(f"/blobs/{key}", headers={"range": header})
    assert response.status_code == 200
    assert response.content == content


@pytest.mark.parametrize("header", ["bytes=2560-", "bytes=9000-9999", "bytes=-0"])
async def test_a_range_past_the_end_is_416(
    client: httpx.AsyncClient, blob: tuple[str, bytes], header: str
) -> None:
    key, _ = blob
    response = await client.get(f"/blobs/{key}", headers={"range": header})
    assert response.status_code == 416
    assert response.json() == {"error": "range_not_satisfiable", "details": {"size": 2560}}
    assert response.headers["content-range"] == "bytes */2560"


@pytest.mark.parametrize("header", ["bytes=5-2", "bytes=x-y", "bytes=-"])
async def test_a_malformed_range_is_400(
    client: httpx.AsyncClient, blob: tuple[str, bytes], header: str
) -> None:
    key, _ = blob
    response = await client.get(f"/blobs/{key}", headers={"range": header})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_range"


async def test_a_range_of_a_missing_blob_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/blobs/{'e' * 64}", headers={"range": "bytes=0-1"})
    assert response.status_code == 404
    assert response.text == "Not found"
