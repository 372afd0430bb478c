"""A failed log or metric batch is retried on a timer, with nothing logged after it."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from pycoflux.worker import batching


def log_batcher(client: httpx.AsyncClient, *, flush_interval: float) -> batching.HttpBatcher:
    return batching.HttpBatcher(
        client=client,
        url="http://server/logs",
        headers={},
        body_key="messages",
        batch_size=100,
        flush_interval=flush_interval,
        name="logs",
    )


def test_a_failed_batch_is_delivered_without_another_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batching, "RETRY_MIN", 0.01)
    delivered: list[list[dict[str, object]]] = []
    calls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls <= 2:  # the server is briefly unavailable
            return httpx.Response(503, json={"error": "unavailable"})
        delivered.append(json.loads(request.content)["messages"])
        return httpx.Response(204)

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
            batcher = log_batcher(client, flush_interval=0.01)
            batcher.add({"n": 1})
            batcher.add({"n": 2})
            for _ in range(500):
                if delivered:
                    break
                await asyncio.sleep(0.01)
            await batcher.close()

    asyncio.run(main())
    assert calls == 3
    assert delivered == [[{"n": 1}, {"n": 2}]]


def test_no_retry_timer_after_close(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batching, "RETRY_MIN", 0.01)
    calls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503)

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
            batcher = log_batcher(client, flush_interval=10)
            batcher.add({"n": 1})
            await batcher.close()  # one final attempt, which fails
            seen = calls
            await asyncio.sleep(0.1)
            assert calls == seen == 1

    asyncio.run(main())
