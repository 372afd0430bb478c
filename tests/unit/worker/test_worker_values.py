"""Pure pieces: traceback frames, value conversion, metric x-values/throttle, checkpoints."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from pycoflux.worker.api import ServerAddress, is_local_host, parse_tags
from pycoflux.worker.blobs import BlobManager, ByteRange
from pycoflux.worker.checkpoints import CheckpointBuffer
from pycoflux.worker.connection import ReplyError
from pycoflux.worker.metrics import MetricTracker
from pycoflux.worker.tracebacks import parse_frames
from pycoflux.worker.values import ValueCodec
from tests.support.eventually import eventually_async as eventually


class MemoryStore:
    """An in-memory ``BlobStore``."""

    name = "memory"

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    async def put(self, key: str, source: Path | bytes) -> None:
        self.blobs[key] = (
            source if isinstance(source, bytes) else await asyncio.to_thread(source.read_bytes)
        )

    async def get(self, key: str, dest: Path, byte_range: ByteRange | None) -> bool:
        if key not in self.blobs:
            return False
        data = self.blobs[key]
        if byte_range is not None:
            end = None if byte_range.length is None else byte_range.offset + byte_range.length
            data = data[byte_range.offset : end]
        await asyncio.to_thread(dest.write_bytes, data)
        return True


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def codec(store: MemoryStore, tmp_path: Path) -> ValueCodec:
    return ValueCodec(BlobManager([store], tmp_path / "cache"), threshold=100)


# --- tracebacks -------------------------------------------------------------------------

TRACEBACK = """Traceback (most recent call last):
  File "/app/flows.py", line 40, in fetch_page
    r.raise_for_status()
    ^^^^^^^^^^^^^^^^^^^^
  File "/app/lib.py", line 7, in <module>
requests.exceptions.HTTPError: 503 Server Error
"""


def test_frames_are_parsed_from_a_traceback() -> None:
    assert parse_frames(TRACEBACK) == [
        ["/app/flows.py", 40, "fetch_page", "r.raise_for_status()"],
        ["/app/lib.py", 7, "<module>", ""],
    ]


def test_empty_and_unparseable_tracebacks() -> None:
    assert parse_frames("") == []
    assert parse_frames(None) == []
    assert parse_frames("something odd") == [["", 0, "", "something odd"]]


# --- values -----------------------------------------------------------------------------


async def test_small_inline_values_stay_raw(codec: ValueCodec) -> None:
    value = {"type": "inline", "format": "json", "value": {"type": "dict", "items": ["a", 1]}}
    assert await codec.to_server(value) == ["raw", {"type": "dict", "items": ["a", 1]}, []]
    assert await codec.to_server(None) == ["raw", None, []]
    assert await codec.to_server({"type": "inline", "format": "json"}) == ["raw", None, []]


async def test_values_over_the_threshold_become_blobs(
    codec: ValueCodec, store: MemoryStore
) -> None:
    text = "z" * 99  # 101 bytes once JSON-encoded: strictly greater than the threshold
    encoded = json.dumps(text).encode()
    key = hashlib.sha256(encoded).hexdigest()
    result = await codec.to_server({"type": "inline", "format": "json", "value": text})
    assert result == ["blob", key, 101, []]
    assert store.blobs[key] == encoded
    exactly = "z" * 98  # 100 bytes: stays inline
    assert (await codec.to_server({"type": "inline", "value": exactly}))[0] == "raw"


async def test_file_values_and_fragments_are_uploaded(
    codec: ValueCodec, store: MemoryStore, tmp_path: Path
) -> None:
    value_file = tmp_path / "value.json"
    value_file.write_text("[1,2,3]")
    fragment = tmp_path / "fragment.bin"
    fragment.write_bytes(b"\x00\x01")
    result = await codec.to_server(
        {
            "type": "file",
            "format": "json",
            "path": str(value_file),
            "references": [
                ["fragment", "bytes", str(fragment), 2, {}],
                ["execution", "R1:2:1", "m", "t"],
            ],
        }
    )
    fragment_key = hashlib.sha256(b"\x00\x01").hexdigest()
    assert result == [
        "blob",
        hashlib.sha256(b"[1,2,3]").hexdigest(),
        7,
        [["fragment", "bytes", fragment_key, 2, {}], ["execution", "R1:2:1", "m", "t"]],
    ]


async def test_server_values_become_adapter_values(codec: ValueCodec, store: MemoryStore) -> None:
    assert await codec.to_adapter(["raw", 5, []]) == {
        "type": "inline",
        "format": "json",
        "value": 5,
    }
    assert await codec.to_adapter(["raw", None, []]) == {"type": "inline", "format": "json"}
    store.blobs["ab" * 32] = b'"big"'
    adapter_value = await codec.to_adapter(["blob", "ab" * 32, 5, [["input", "R1/i1"]]])
    assert adapter_value["type"] == "file"
    assert await asyncio.to_thread(Path(adapter_value["path"]).read_bytes) == b'"big"'
    assert adapter_value["references"] == [["input", "R1/i1"]]
    with pytest.raises(Exception, match="malformed"):
        await codec.to_adapter({"not": "a value"})


async def test_log_values_use_the_log_api_shape(codec: ValueCodec, tmp_path: Path) -> None:
    assert await codec.to_log_value({"type": "inline", "value": 7}) == {
        "type": "raw",
        "data": 7,
        "references": [],
    }
    big = await codec.to_log_value({"type": "inline", "value": "q" * 200})
    assert big["type"] == "blob" and big["size"] == 202
    refs = await codec.to_log_value(
        {"type": "inline", "value": 1, "references": [["execution", "R1:2:1", "m", "t"]]}
    )
    assert refs["references"] == [
        {"type": "execution", "executionId": "R1:2:1", "module": "m", "target": "t"}
    ]
    assert await codec.to_log_value(None) == {"type": "raw", "references": []}


async def test_byte_ranges_come_from_the_cache_or_the_store(
    store: MemoryStore, tmp_path: Path
) -> None:
    blobs = BlobManager([store], tmp_path / "cache")
    key = await blobs.put_bytes(b"abcdefgh")
    target = tmp_path / "out" / "nested" / "range"
    await blobs.fetch_range(key, target, 2, 3)
    assert target.read_bytes() == b"cde"
    await blobs.fetch(key)  # now cached
    await blobs.fetch_range(key, target, 6, 10)
    assert target.read_bytes() == b"gh"
    await blobs.fetch_range(key, target, 1, 0)
    assert target.read_bytes() == b""
    with pytest.raises(Exception, match="blob not found"):
        await blobs.fetch("00" * 32)


# --- metrics ----------------------------------------------------------------------------


class Collect:
    def __init__(self) -> None:
        self.points: list[dict[str, Any]] = []

    def add(self, entry: dict[str, Any]) -> None:
        self.points.append(entry)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_metric_x_values_and_custom_ordering() -> None:
    store, clock = Collect(), Clock()
    tracker = MetricTracker(
        execution_id="E",
        run_id="R",
        workspace_id="W",
        store=store,
        started=99.0,
        clock=clock,  # type: ignore[arg-type]
    )
    tracker.define("auto", {})
    tracker.define("custom", {})
    tracker.record("auto", 1.0, None)
    tracker.record("custom", 1.0, 5)
    tracker.record("custom", 2.0, 5)  # not increasing: dropped
    tracker.record("custom", 3.0, 6)
    assert [(p["key"], p["at"]) for p in store.points] == [
        ("auto", 1.0),
        ("custom", 5),
        ("custom", 6),
    ]


async def test_metric_throttle_keeps_a_trailing_point() -> None:
    store, clock = Collect(), Clock()
    tracker = MetricTracker(
        execution_id="E",
        run_id="R",
        workspace_id="W",
        store=store,
        started=100.0,
        clock=clock,  # type: ignore[arg-type]
    )
    tracker.define("loss", {"throttle": 20})  # 50 ms window
    for value in (1.0, 2.0, 3.0):
        tracker.record("loss", value, None)
    assert [p["value"] for p in store.points] == [1.0]
    await eventually(lambda: len(store.points) == 2)
    assert store.points[-1]["value"] == 3.0  # only the last point inside the window
    tracker.record("loss", 4.0, None)
    tracker.flush_trailing()
    assert [p["value"] for p in store.points][-1] == 4.0


# --- checkpoints -------------------------------------------------------------------------


class FakeConnection:
    def __init__(self) -> None:
        self.calls: list[list[Any]] = []
        self.error: Exception | None = None

    async def request(self, request: str, params: list[Any], **_: Any) -> Any:
        self.calls.append(params)
        if self.error is not None:
            raise self.error
        return None


def _buffer(codec: ValueCodec, connection: FakeConnection) -> CheckpointBuffer:
    return CheckpointBuffer(
        execution_id="E",
        codec=codec,
        connection=connection,  # type: ignore[arg-type]
        interval=0.2,
        request_timeout=1,
    )


def _value(v: Any) -> dict[str, Any]:
    return {"type": "inline", "format": "json", "value": v}


async def test_checkpoints_coalesce_within_the_window(codec: ValueCodec) -> None:
    connection = FakeConnection()
    buffer = _buffer(codec, connection)
    buffer.update({"a": _value(1)}, None)  # leading edge: delivered at once
    await eventually(lambda: connection.calls)
    buffer.update({"a": _value(2)}, None)
    buffer.update({"a": _value(3)}, ["b"])
    await buffer.flush()
    assert connection.calls == [
        ["E", {"a": ["raw", 1, []]}, []],
        ["E", {"a": ["raw", 3, []]}, ["b"]],
    ]
    await buffer.close()


async def test_failed_delivery_is_merged_back_and_completed_discards(
    codec: ValueCodec,
) -> None:
    connection = FakeConnection()
    buffer = _buffer(codec, connection)
    connection.error = ReplyError("boom")
    with pytest.raises(ReplyError):
        buffer.update({"a": _value(1)}, None)
        await buffer.flush()
    assert buffer.pending
    connection.error = ReplyError("execution_completed")
    await buffer.flush()
    assert not buffer.pending
    buffer.update({"a": _value(2)}, None)  # discarded from now on
    assert not buffer.pending
    await buffer.close()


# --- addressing --------------------------------------------------------------------------


def test_local_hosts_default_to_insecure() -> None:
    assert is_local_host("localhost:7777")
    assert is_local_host("proj.localhost:7777")
    assert is_local_host("127.0.0.1")
    assert is_local_host("[::1]:7777")
    assert not is_local_host("coflux.example.com")
    assert ServerAddress.resolve("example.com", None, None).http_base == "https://example.com"
    assert ServerAddress.resolve("localhost:1", None, "p").ws_base == "ws://localhost:1"


def test_tags_group_by_key() -> None:
    assert parse_tags(["gpu:a100", "gpu:h100", "fast"]) == {
        "gpu": ["a100", "h100"],
        "fast": ["true"],
    }
