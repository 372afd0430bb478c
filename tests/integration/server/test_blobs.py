"""The blob store over HTTP (``server-api.md`` §5, checklist 55-58)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.eventually import eventually_async as eventually
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

INVALID_KEYS = [
    "abc",
    "z" * 64,
    "A" * 64,  # uppercase hex is not a key
    "0" * 63,
    "0" * 65,
    "....%2F..%2F..%2Fetc%2Fpasswd",
    "..%2F..%2F" + "0" * 58,
    "%2E%2E",
]


def tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def snapshot(server: ServerProcess) -> set[str]:
    """Everything under the data directory's parent, where a traversal would land."""
    return tree(server.data_dir.parent)


async def test_put_then_get_and_head(client: httpx.AsyncClient, server: ServerProcess) -> None:
    content = os.urandom(4096) + b"blob"
    key = hashlib.sha256(content).hexdigest()
    put = await client.put(
        f"/blobs/{key}", content=content, headers={"content-type": "application/octet-stream"}
    )
    assert put.status_code == 204
    got = await client.get(f"/blobs/{key}")
    assert got.status_code == 200
    assert got.content == content
    head = await client.head(f"/blobs/{key}")
    assert head.status_code == 200
    assert head.content == b""
    assert (server.data_dir / "blobs" / key[:2] / key[2:4] / key[4:]).read_bytes() == content
    again = await client.put(f"/blobs/{key}", content=content)
    assert again.status_code == 204


async def test_streamed_chunked_upload(client: httpx.AsyncClient) -> None:
    chunk = os.urandom(64 * 1024)
    chunks = 48  # 3 MiB
    key = hashlib.sha256(chunk * chunks).hexdigest()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(chunks):
            yield chunk

    put = await client.put(f"/blobs/{key}", content=body())
    assert put.status_code == 204
    got = await client.get(f"/blobs/{key}")
    assert hashlib.sha256(got.content).hexdigest() == key


async def test_put_with_the_wrong_hash_stores_nothing(
    client: httpx.AsyncClient, server: ServerProcess
) -> None:
    key = "0" * 64
    before = snapshot(server)
    put = await client.put(f"/blobs/{key}", content=b"not the empty hash")
    assert put.status_code == 400
    assert put.json() == {"error": "hash_mismatch"}
    assert (await client.get(f"/blobs/{key}")).status_code == 404
    assert (await client.head(f"/blobs/{key}")).status_code == 404
    blobs = {p for p in snapshot(server) - before if "blobs" in p}
    assert not {p for p in blobs if Path(p).name not in ("blobs", "incoming")}


@pytest.mark.parametrize("key", INVALID_KEYS)
async def test_invalid_keys_touch_nothing(
    client: httpx.AsyncClient, server: ServerProcess, key: str
) -> None:
    before = snapshot(server)
    put = await client.put(f"/blobs/{key}", content=b"x")
    assert put.status_code == 400, put.text
    assert put.json() == {"error": "invalid_key"}
    get = await client.get(f"/blobs/{key}")
    assert get.status_code == 404
    head = await client.head(f"/blobs/{key}")
    assert head.status_code == 404
    assert snapshot(server) == before


async def test_get_of_an_absent_valid_key_is_not_found(client: httpx.AsyncClient) -> None:
    key = hashlib.sha256(os.urandom(32)).hexdigest()
    get = await client.get(f"/blobs/{key}")
    assert get.status_code == 404
    assert get.text == "Not found"
    head = await client.head(f"/blobs/{key}")
    assert head.status_code == 404
    assert head.content == b""


async def test_an_upload_cut_off_mid_body_keeps_nothing(server: ServerProcess) -> None:
    content = os.urandom(200_000)
    key = hashlib.sha256(content).hexdigest()
    tracebacks = len(server.tracebacks())
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"PUT /blobs/{key} HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(content)}\r\n\r\n".encode()
        + content[:50_000]
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    await eventually(lambda: "blob upload abandoned" in server.log())
    assert len(server.tracebacks()) == tracebacks
    assert not (server.data_dir / "blobs" / key[:2] / key[2:4] / key[4:]).exists()
    assert list((server.data_dir / "blobs" / "incoming").iterdir()) == []
