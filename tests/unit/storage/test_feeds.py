"""Feeds: group-committed appends, rotation after a flush, and subscriptions."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pycoflux import errors
from pycoflux.server import feeds
from pycoflux.storage import epochs, logs, metrics

NOW = 1_777_777_777_000


def message(run: str, timestamp: int) -> dict[str, Any]:
    return {
        "runId": run,
        "executionId": f"{run}:1:1",
        "workspaceId": "W1",
        "timestamp": timestamp,
        "level": 2,
        "template": "t",
        "values": {},
    }


@pytest.fixture
async def thread() -> AsyncIterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=1)
    yield executor
    executor.shutdown(wait=True)


async def open_feed(
    tmp_path: Path, thread: ThreadPoolExecutor, **kwargs: Any
) -> feeds.Feed[logs.LogQuery]:
    feed = feeds.Feed(logs.LogStore(tmp_path, **kwargs), thread, name="logs", clock=lambda: NOW)
    await feed.open()
    return feed


def stamps(page: epochs.Page) -> list[int]:
    return [entry["timestamp"] for entry in page.entries]


async def test_concurrent_appends_are_all_committed(
    tmp_path: Path, thread: ThreadPoolExecutor
) -> None:
    feed = await open_feed(tmp_path, thread)
    await asyncio.gather(*(feed.append([message("R1", i)]) for i in range(200)))
    page = await feed.query(logs.LogQuery(run_id="R1"), 1000)
    assert sorted(stamps(page)) == list(range(200))
    await feed.close()


async def test_a_failing_batch_fails_alone(tmp_path: Path, thread: ThreadPoolExecutor) -> None:
    feed = feeds.Feed(metrics.MetricStore(tmp_path), thread, name="metrics")
    await feed.open()
    good = {"runId": "R1", "executionId": "E", "workspaceId": "W", "key": "a", "value": 1, "at": 1}
    bad = {**good, "value": "not a number"}
    outcomes = await asyncio.gather(
        feed.append([good]), feed.append([good, bad]), return_exceptions=True
    )
    assert outcomes[0] is None
    assert isinstance(outcomes[1], ValueError)
    page = await feed.query(metrics.MetricQuery(run_id="R1"), 10)
    assert len(page.entries) == 1
    await feed.close()


async def test_a_failed_write_is_reported_not_dropped(
    tmp_path: Path, thread: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = logs.LogStore(tmp_path)
    feed = feeds.Feed(store, thread, name="logs")
    await feed.open()
    real = store.append

    def broken(batches: list[list[Any]], now: int) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "append", broken)
    with pytest.raises(errors.StoreError, match="disk I/O error"):
        await feed.append([message("R1", 1)])
    monkeypatch.setattr(store, "append", real)
    await feed.append([message("R1", 2)])
    assert stamps(await feed.query(logs.LogQuery(run_id="R1"), 10)) == [2]
    await feed.close()


async def test_the_active_partition_rotates_when_full_and_gets_filters(
    tmp_path: Path, thread: ThreadPoolExecutor
) -> None:
    feed = await open_feed(tmp_path, thread, rotate_size=32 * 1024)
    for batch in range(10):
        await feed.append([message("R1", batch * 100 + i) for i in range(100)])
    await feed.close()  # waits for the queued filter builds
    index = json.loads((tmp_path / "logs" / "index.json").read_text())
    assert index, "at least one rotation happened"
    assert all(filters is not None for filters, _ in index.values())
    reopened = await open_feed(tmp_path, thread)
    page = await reopened.query(logs.LogQuery(run_id="R1"), 1000)
    assert stamps(page) == list(range(1000))
    first = await reopened.query(logs.LogQuery(run_id="R1"), 1)
    assert first.cursor is not None
    assert epochs.EPOCH_ID.match(first.cursor.split(":")[0]), "the first entry is archived"
    await reopened.close()


async def test_a_subscriber_gets_the_snapshot_then_only_newer_entries(
    tmp_path: Path, thread: ThreadPoolExecutor
) -> None:
    feed = await open_feed(tmp_path, thread)
    await feed.append([message("R1", 1)])
    query = logs.LogQuery(run_id="R1")
    page, subscription = await feed.subscribe(query, query.matches, 1000)
    assert stamps(page) == [1]
    await feed.append([message("R2", 2)])
    await feed.append([message("R1", 3)])
    await feed.rotate()
    await feed.append([message("R1", 4)])
    stream = feed.follow(subscription, keepalive=5)
    assert [e["timestamp"] for e in await anext(stream)] == [3]
    assert [e["timestamp"] for e in await anext(stream)] == [4]
    await stream.aclose()
    await feed.close()


async def test_an_idle_stream_yields_keepalives(tmp_path: Path, thread: ThreadPoolExecutor) -> None:
    feed = await open_feed(tmp_path, thread)
    query = logs.LogQuery(run_id="R1")
    _, subscription = await feed.subscribe(query, query.matches, 1000)
    stream = feed.follow(subscription, keepalive=0.01)
    assert await anext(stream) == []
    await stream.aclose()
    await feed.close()


async def test_a_subscriber_that_falls_behind_is_dropped(
    tmp_path: Path, thread: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feeds, "SUBSCRIBER_QUEUE", 2)
    feed = await open_feed(tmp_path, thread)
    query = logs.LogQuery(run_id="R1")
    _, subscription = await feed.subscribe(query, query.matches, 1000)
    for i in range(3):
        await feed.append([message("R1", i)])
    assert subscription.dropped
    assert await subscription.next(timeout=5) is None
    await feed.close()


async def test_close_ends_subscriptions_and_refuses_new_writes(
    tmp_path: Path, thread: ThreadPoolExecutor
) -> None:
    feed = await open_feed(tmp_path, thread)
    query = logs.LogQuery(run_id="R1")
    _, subscription = await feed.subscribe(query, query.matches, 1000)
    await feed.close()
    assert await subscription.next(timeout=5) is None
    with pytest.raises(errors.StoreError):
        await feed.append([message("R1", 1)])
