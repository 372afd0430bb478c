"""Blob stores against real servers: S3 (moto in server mode) and the pycoflux HTTP store.

``worker.md`` §8.4, ``cli.md`` §3.5 and §4.12.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pycoflux.worker import blobs
from tests.integration.storage.stack import S3Server
from tests.support.server import ServerProcess
from tests.support.worker_stack import WorkerStack, worker_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = f"blobs-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


def key_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


# --- The worker's S3 store ---------------------------------------------------------------


@pytest.mark.usefixtures("aws_env")
async def test_s3_store_round_trip_with_prefix_layout(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    store = blobs.S3BlobStore(bucket, prefix="/team/blobs/")
    content = b"hello s3 " * 100
    key = key_of(content)
    await store.put(key, content)
    objects = s3.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in objects] == [f"team/blobs/{key[:2]}/{key[2:4]}/{key[4:]}"]
    dest = tmp_path / "out"
    assert await store.get(key, dest, None)
    assert dest.read_bytes() == content


@pytest.mark.usefixtures("aws_env")
async def test_s3_store_files_ranges_and_missing_keys(bucket: str, tmp_path: Path) -> None:
    store = blobs.S3BlobStore(bucket)
    source = tmp_path / "source"
    source.write_bytes(bytes(range(256)) * 4)
    key, size = blobs.hash_file(source)
    await store.put(key, source)
    part = tmp_path / "part"
    assert await store.get(key, part, blobs.ByteRange(offset=10, length=5))
    assert part.read_bytes() == bytes(range(10, 15))
    assert await store.get(key, part, blobs.ByteRange(offset=1020, length=None))
    assert part.read_bytes() == bytes(range(252, 256))
    # Past the end: the available bytes, i.e. none (worker.md §8.4).
    assert await store.get(key, part, blobs.ByteRange(offset=size + 5, length=3))
    assert part.read_bytes() == b""
    assert not await store.get("f" * 64, tmp_path / "missing", None)


async def test_an_s3_store_without_a_bucket_is_skipped() -> None:
    async with httpx.AsyncClient() as client:
        stores = blobs.build_stores(
            ({"type": "s3"}, {"type": "s3", "bucket": "b", "prefix": "p"}),
            default_url="http://localhost:1",
            headers_for=lambda token: {},
            client=client,
        )
    assert [store.name for store in stores] == ["s3[1]"]


@pytest.mark.usefixtures("aws_env")
async def test_reads_fall_through_the_stores_in_order(
    bucket: str, tmp_path: Path, server: ServerProcess
) -> None:
    content = b"only on the server " * 10
    key = key_of(content)
    async with httpx.AsyncClient(trust_env=False) as client:
        assert (await client.put(f"{server.url}/blobs/{key}", content=content)).status_code == 204
        stores: list[blobs.BlobStore] = [
            blobs.S3BlobStore(bucket),
            blobs.HttpBlobStore(f"{server.url}/blobs", {}, client),
        ]
        manager = blobs.BlobManager(stores, tmp_path / "cache")
        dest = tmp_path / "range"
        # Not cached yet: the range goes to the stores; S3 lacks it, HTTP answers 206.
        await manager.fetch_range(key, dest, 3, 4)
        assert dest.read_bytes() == content[3:7]
        assert (await manager.fetch(key)).read_bytes() == content
        written = await manager.put_bytes(b"written to the first store")
        assert written == key_of(b"written to the first store")
    assert await stores[0].get(written, tmp_path / "check", None)


async def test_http_ranged_reads_use_the_servers_206(tmp_path: Path, server: ServerProcess) -> None:
    content = bytes(range(200))
    key = key_of(content)
    async with httpx.AsyncClient(trust_env=False) as client:
        await client.put(f"{server.url}/blobs/{key}", content=content)
        store = blobs.HttpBlobStore(f"{server.url}/blobs", {}, client)
        dest = tmp_path / "part"
        assert await store.get(key, dest, blobs.ByteRange(offset=190, length=50))
        assert dest.read_bytes() == content[190:]
        assert await store.get(key, dest, blobs.ByteRange(offset=500, length=1))
        assert dest.read_bytes() == b""


# --- A workflow whose values live in S3 ------------------------------------------------------

FLOWS = textwrap.dedent(
    """
    import coflux as cf


    @cf.task()
    def big(size: int) -> str:
        return "s" * size


    @cf.workflow()
    def large(size: int) -> int:
        return len(big(size))
    """
)


@pytest.fixture
def s3_stack(tmp_path: Path, s3: S3Server, bucket: str) -> Iterator[Any]:
    (tmp_path / "coflux.toml").write_text(
        textwrap.dedent(
            f"""
            [[blobs.stores]]
            type = "s3"
            bucket = "{bucket}"
            prefix = "results"
            region = "us-east-1"
            """
        )
    )
    with worker_stack(tmp_path, FLOWS, env=s3.env) as stack:
        yield stack


def test_a_workflow_result_goes_to_s3_and_back(s3_stack: Any, s3: S3Server, bucket: str) -> None:
    stack = s3_stack
    run_id = stack.submit("large", 5000)
    result = stack.result(run_id)
    assert result["type"] == "value", result
    assert result["value"]["data"] == 5000
    child = json.loads(stack.cli("runs", "result", "-o", "json", f"{run_id}:2").stdout)
    assert child["value"]["type"] == "blob"
    key = child["value"]["key"]
    # The blob is in the bucket under the prefix, and not on the server.
    stored = s3.client().get_object(Bucket=bucket, Key=f"results/{key[:2]}/{key[2:4]}/{key[4:]}")
    assert stored["Body"].read() == json.dumps("s" * 5000).encode()
    server_blobs = stack.server.data_dir / "blobs"
    assert not (server_blobs / key[:2] / key[2:4] / key[4:]).exists()
    # The CLI reads it back through the same store configuration.
    text = stack.cli("runs", "result", f"{run_id}:2")
    assert text.returncode == 0, text.stderr
    assert text.stdout.strip() == '"' + "s" * 5000 + '"'
    out = stack.directory / "blob.json"
    got = stack.cli("blobs", "get", key, "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert json.loads(out.read_bytes()) == "s" * 5000
    missing = stack.cli("blobs", "get", "0" * 64, "-o", str(out))
    assert (missing.returncode, missing.stderr) == (1, f"blob not found: {'0' * 64}\n")


def test_the_cli_reads_through_the_stores_in_order(
    tmp_path: Path, s3: S3Server, bucket: str, server: ServerProcess
) -> None:
    on_server, in_s3 = b"kept by the server", b"kept in the bucket"
    httpx.put(f"{server.url}/blobs/{key_of(on_server)}", content=on_server, trust_env=False)
    s3.client().put_object(Bucket=bucket, Key=blobs.s3_object_key("", key_of(in_s3)), Body=in_s3)
    (tmp_path / "coflux.toml").write_text(
        textwrap.dedent(
            f"""
            [[blobs.stores]]
            type = "s3"
            bucket = "{bucket}"

            [[blobs.stores]]
            type = "http"
            """
        )
    )
    stack = WorkerStack(server=server, directory=tmp_path, extra_env=s3.env)
    for content in (on_server, in_s3):
        out = tmp_path / "out"
        done = stack.cli("blobs", "get", key_of(content), "-o", str(out))
        assert done.returncode == 0, done.stderr
        assert out.read_bytes() == content
