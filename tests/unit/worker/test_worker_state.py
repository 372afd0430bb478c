"""Checkpoints, metrics, assets, suspension and streams through the real SDK."""

from __future__ import annotations

import asyncio

from tests.support.eventually import eventually_async as eventually
from tests.support.worker_harness import FakeServer, wait_result


def _checkpoint_values(server: FakeServer, execution_id: str) -> list[object]:
    return [
        f["params"][1]["progress"][1]
        for f in server.named("checkpoint_update", execution_id)
        if "progress" in f["params"][1]
    ]


async def test_checkpoint_writes_coalesce_and_the_last_one_precedes_the_result(
    fake_server: FakeServer, start_worker
) -> None:
    await start_worker()
    await fake_server.execute("R1:1:1", "checkpointer", [["raw", 50, []]])

    assert await wait_result(fake_server, "R1:1:1") == ["raw", 50, []]
    values = _checkpoint_values(fake_server, "R1:1:1")
    assert values[-1] == 50
    assert len(values) < 50, "rapid writes are coalesced"
    order = fake_server.requests_for("R1:1:1")
    last_update = len(order) - 1 - order[::-1].index("checkpoint_update")
    assert last_update < order.index("put_result")


async def test_checkpoints_are_handed_to_the_execution(
    fake_server: FakeServer, start_worker
) -> None:
    await start_worker()
    await fake_server.execute(
        "R1:1:2", "checkpointer", [["raw", 1, []]], checkpoints={"progress": ["raw", 41, []]}
    )
    assert await wait_result(fake_server, "R1:1:2") == ["raw", 42, []]


async def test_flush_waits_for_the_checkpoint_acknowledgement(
    fake_server: FakeServer, start_worker
) -> None:
    release = asyncio.Event()

    async def slow_ack(params: list[object]) -> None:
        await release.wait()

    fake_server.handlers["checkpoint_update"] = slow_ack
    await start_worker()
    await fake_server.execute("R1:1:1", "flusher", [])
    await eventually(lambda: fake_server.named("checkpoint_update", "R1:1:1"))
    await asyncio.sleep(0.3)  # give a premature flush reply the chance to show itself
    assert not fake_server.named("put_result", "R1:1:1")
    release.set()
    assert await wait_result(fake_server, "R1:1:1") == ["raw", "flushed", []]


async def test_suspend_delivers_checkpoints_first_and_ends_quietly(
    fake_server: FakeServer, start_worker
) -> None:
    await start_worker()
    await fake_server.execute("R1:1:1", "suspender", [])

    [suspend] = await eventually(lambda: fake_server.named("suspend", "R1:1:1"))
    assert suspend["params"] == ["R1:1:1", None, None]
    order = fake_server.requests_for("R1:1:1")
    assert order.index("checkpoint_update") < order.index("suspend")
    # The SDK waits for stdin EOF; the worker closes it even without an abort.
    await eventually(lambda: fake_server.named("notify_terminated", "R1:1:1"))
    assert not fake_server.named("put_error", "R1:1:1")
    assert not fake_server.named("put_result", "R1:1:1")


async def test_metrics_are_posted_with_resolved_x_values(
    fake_server: FakeServer, start_worker
) -> None:
    await start_worker()
    await fake_server.execute("R1:1:1", "measured", [])

    await eventually(lambda: len(fake_server.metrics) >= 1)
    [define] = await eventually(lambda: fake_server.named("define_metric", "R1:1:1"))
    assert define["params"][1] == "loss"
    first = fake_server.metrics[0]
    assert first["key"] == "loss"
    assert first["value"] == 1.0
    assert 0 <= first["at"] < 5
    assert (first["runId"], first["workspaceId"]) == ("R1", "W1")


async def test_assets_are_uploaded_and_ranges_downloaded(
    fake_server: FakeServer, start_worker
) -> None:
    await start_worker()
    await fake_server.execute("R1:1:1", "asset_maker", [])

    assert await wait_result(fake_server, "R1:1:1") == ["raw", "cde", []]
    [put_asset] = fake_server.named("put_asset", "R1:1:1")
    _, name, entries = put_asset["params"]
    assert name == "rep"
    [(path, (key, size, metadata))] = entries.items()
    assert (path, size, metadata) == ("report.txt", 8, {"type": "text/plain"})
    assert fake_server.blobs[key] == b"abcdefgh"
    assert fake_server.named("get_asset", "A1")


async def test_generator_task_streams_its_items(fake_server: FakeServer, start_worker) -> None:
    await start_worker()
    await fake_server.execute("R1:1:1", "producer", [])

    [register] = await eventually(lambda: fake_server.named("stream_register", "R1:1:1"))
    assert register["params"][:2] == ["R1:1:1", 0]
    if register["params"][2] is not None:  # backpressured: the producer waits for credit
        await fake_server.send_command("stream_demand", ["R1:1:1", 0, 5])
    result = await wait_result(fake_server, "R1:1:1")
    assert result[1] == {"type": "stream", "id": "R1:1:1_0"}
    await eventually(lambda: fake_server.named("notify_terminated", "R1:1:1"))
    appends = [f["params"] for f in fake_server.named("stream_append", "R1:1:1")]
    assert appends == [["R1:1:1", 0, 0, ["raw", "a", []]], ["R1:1:1", 0, 1, ["raw", "b", []]]]
    assert fake_server.named("stream_close", "R1:1:1")[0]["params"] == ["R1:1:1", 0, None]
    order = fake_server.requests_for("R1:1:1")
    assert order.index("stream_close") < order.index("notify_terminated")


async def test_idle_stream_is_force_closed(fake_server: FakeServer, start_worker) -> None:
    await start_worker()
    await fake_server.execute("R1:1:1", "idle_producer", [], timeout_ms=0)

    [close] = await eventually(
        lambda: [f for f in fake_server.named("stream_close", "R1:1:1") if "id" in f]
    )
    assert close["params"] == ["R1:1:1", 0, None, "timeout"]
    await fake_server.send_command("abort", ["R1:1:1"])
    await eventually(lambda: fake_server.named("notify_terminated", "R1:1:1"))


async def test_consumer_receives_pushed_items(fake_server: FakeServer, start_worker) -> None:
    await start_worker()
    handle = {"type": "stream", "id": "R9:1_0"}
    await fake_server.execute("R1:1:1", "consumer", [["raw", handle, []]])

    [subscribe] = await eventually(lambda: fake_server.named("stream_subscribe"))
    subscription_id, consumer_id, stream_id, from_sequence, _stride, _prefetch, progress = (
        subscribe["params"]
    )
    assert (consumer_id, stream_id, from_sequence, progress) == ("R1:1:1", "R9:1_0", 0, None)
    await fake_server.send_command(
        "stream_items",
        ["R1:1:1", subscription_id, [[0, ["raw", "a", []]], [1, ["raw", "b", []]]]],
    )
    await fake_server.send_command("stream_closed", ["R1:1:1", subscription_id, "complete", None])

    assert await wait_result(fake_server, "R1:1:1") == ["raw", ["a", "b"], []]


async def test_subscriptions_resume_after_a_reconnect(
    fake_server: FakeServer, start_worker
) -> None:
    await start_worker()
    handle = {"type": "stream", "id": "R9:1_0"}
    await fake_server.execute("R1:1:1", "consumer", [["raw", handle, []]])
    [subscribe] = await eventually(lambda: fake_server.named("stream_subscribe"))
    subscription_id = subscribe["params"][0]
    await fake_server.send_command(
        "stream_items", ["R1:1:1", subscription_id, [[0, ["raw", "a", []]]]]
    )
    await eventually(lambda: fake_server.named("stream_ack", "R1:1:1"))  # item consumed

    fake_server.held = ["R1:1:1"]
    await fake_server.drop()
    resumed = await eventually(
        lambda: [f for f in fake_server.named("stream_subscribe") if f["_connection"] == 2]
    )
    progress = resumed[-1]["params"][6]
    assert progress is not None and progress["delivered"] == 1
    await fake_server.send_command(
        "stream_items", ["R1:1:1", subscription_id, [[1, ["raw", "b", []]]]]
    )
    await fake_server.send_command("stream_closed", ["R1:1:1", subscription_id, "complete", None])
    assert await wait_result(fake_server, "R1:1:1") == ["raw", ["a", "b"], []]
