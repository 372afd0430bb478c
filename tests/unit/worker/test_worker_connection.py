"""The worker connection on its own: envelope, ordering, re-issue and pruning across drops."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from pycoflux import errors
from pycoflux.worker.connection import (
    Connection,
    NotConnectedError,
    ReplyError,
    RetryPolicy,
    session_subprotocol,
)
from tests.support.eventually import eventually_async as eventually
from tests.support.worker_harness import FAST


class Handler:
    """Records what the connection tells the instance; re-sends a report after each session."""

    def __init__(self) -> None:
        self.live: set[str] = {"E1"}
        self.sessions: list[list[str]] = []
        self.commands: list[tuple[str, list[Any]]] = []
        self.connection: Connection | None = None
        self.reports: list[tuple[str, list[Any], str]] = []

    def on_session(self, session_id: str, execution_ids: list[str]) -> None:
        self.sessions.append(execution_ids)
        self.live &= set(execution_ids)

    def is_live(self, execution_id: str) -> bool:
        return execution_id in self.live

    def after_session(self, first: bool) -> None:
        assert self.connection is not None
        for request, params, execution_id in self.reports:
            if execution_id in self.live:
                self.connection.report(request, params, execution_id)

    def on_command(self, command: str, params: list[Any]) -> None:
        self.commands.append((command, params))

    def heartbeat(self) -> dict[str, int]:
        return {execution_id: 1 for execution_id in self.live}


class Server:
    """A scripted ``/worker`` endpoint built directly on websockets."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, dict[str, Any]]] = []
        self.held: list[str] = ["E1"]
        self.replies: dict[str, Any] = {}
        self.hold_replies: set[str] = set()
        self.sockets: list[ServerConnection] = []
        self.subprotocols: list[str] = []
        self.refuse_with: str | None = None

    async def handle(self, socket: ServerConnection) -> None:
        if self.refuse_with is not None:
            await socket.close(4000, self.refuse_with)
            return
        self.sockets.append(socket)
        number = len(self.sockets)
        self.subprotocols.append(socket.request.headers.get("Sec-WebSocket-Protocol", ""))
        await socket.send(json.dumps([0, "sid", self.held]))
        async for raw in socket:
            frame = json.loads(raw)
            self.frames.append((number, frame))
            if "id" in frame and frame["request"] not in self.hold_replies:
                reply = self.replies.get(frame["request"])
                if isinstance(reply, Exception):
                    await socket.send(json.dumps([3, frame["id"], str(reply)]))
                else:
                    await socket.send(json.dumps([2, frame["id"], reply]))

    def named(self, request: str) -> list[tuple[int, dict[str, Any]]]:
        return [(n, f) for n, f in self.frames if f["request"] == request]


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, str]]:
    state = Server()
    async with serve(state.handle, "127.0.0.1", 0, subprotocols=["v1"]) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        yield state, f"ws://127.0.0.1:{port}/worker?workspaceId=W1"


@pytest.fixture
async def connected(
    server: tuple[Server, str],
) -> AsyncIterator[tuple[Server, Connection, Handler]]:
    state, url = server
    handler = Handler()
    connection = Connection(
        url=url,
        session_token="tok.secret",
        headers={},
        declare=lambda: [{"m": {"task": ["t"]}}, 3],
        handler=handler,
        timings=FAST,
    )
    handler.connection = connection
    task = asyncio.create_task(connection.run(), name="connection-under-test")
    await eventually(lambda: connection.ready)
    yield state, connection, handler
    await connection.close()
    await asyncio.wait_for(task, 5)


async def test_declares_targets_first_and_offers_the_session(connected) -> None:
    state, _connection, _handler = connected
    await eventually(lambda: state.frames)
    _, first = state.frames[0]
    assert first == {"request": "declare_targets", "params": [{"m": {"task": ["t"]}}, 3]}
    assert state.subprotocols == [f"{session_subprotocol('tok.secret')}, v1"]
    assert session_subprotocol("tok.secret") == "session.dG9rLnNlY3JldA"


async def test_requests_get_increasing_ids_and_replies(connected) -> None:
    state, connection, _handler = connected
    state.replies["submit"] = ["E2", "m", "t"]
    state.replies["get_asset"] = ReplyError("not_found")
    assert await connection.request("submit", ["m", "t"], execution_id="E1") == ["E2", "m", "t"]
    with pytest.raises(ReplyError, match="not_found"):
        await connection.request("get_asset", ["A1", "E1"], execution_id="E1")
    ids = [frame["id"] for _, frame in state.frames if "id" in frame]
    assert ids == [1, 2]


async def test_select_is_reissued_after_a_drop(connected) -> None:
    state, connection, _handler = connected
    state.hold_replies.add("select")
    pending = asyncio.create_task(
        connection.request("select", [[], "E1"], execution_id="E1", policy=RetryPolicy.RETRY)
    )
    await eventually(lambda: state.named("select"))
    await state.sockets[0].close()
    state.hold_replies.clear()
    state.replies["select"] = {"winner": 0, "status": "ok"}

    assert await asyncio.wait_for(pending, 10) == {"winner": 0, "status": "ok"}
    assert [n for n, _ in state.named("select")] == [1, 2]


async def test_fail_policy_requests_fail_fast_when_disconnected(connected) -> None:
    state, connection, _handler = connected
    state.hold_replies.add("submit")
    pending = asyncio.create_task(connection.request("submit", [], execution_id="E1"))
    await eventually(lambda: state.named("submit"))
    await state.sockets[0].close()
    with pytest.raises(errors.SessionLostError, match="connection lost"):
        await asyncio.wait_for(pending, 5)


async def test_reports_are_regenerated_and_pruned_frames_dropped(connected) -> None:
    state, connection, handler = connected
    await state.sockets[0].close()
    await eventually(lambda: not connection.ready)
    with pytest.raises(NotConnectedError):
        await connection.request("submit", [], execution_id="E1")

    # While disconnected: a stream append for E1 is kept, a report is dropped (the handler
    # regenerates it), and frames for E9, which the server will not list, are discarded.
    connection.notify(
        "stream_append", ["E1", 0, 0, ["raw", 1, []]], execution_id="E1", replayable=True
    )
    connection.notify(
        "stream_append", ["E9", 0, 0, ["raw", 1, []]], execution_id="E9", replayable=True
    )
    connection.report("put_result", ["E1", ["raw", 2, []]], "E1")
    handler.reports.append(("put_result", ["E1", ["raw", 2, []]], "E1"))
    handler.live.add("E9")
    connection.notify("record_heartbeats", [{}])  # not replayable: dropped

    await eventually(
        lambda: [n for n, f in state.frames if n == 2 and f["request"] == "put_result"]
    )
    second = [f["request"] for n, f in state.frames if n == 2]
    assert second[:3] == ["declare_targets", "stream_append", "put_result"]
    assert all(f["params"][0] != "E9" for n, f in state.frames if f["request"] == "stream_append")
    assert len(state.named("put_result")) == 1


async def test_barrier_waits_for_earlier_frames(connected) -> None:
    state, connection, _handler = connected
    connection.notify("register_group", ["E1", 0, None], execution_id="E1", replayable=True)
    await connection.barrier(5)
    await eventually(lambda: state.named("register_group"))


async def test_fatal_close_reason_stops_the_connection(server: tuple[Server, str]) -> None:
    state, url = server

    state.refuse_with = "session_invalid"
    connection = Connection(
        url=url,
        session_token="tok",
        headers={},
        declare=lambda: [{}, 1],
        handler=Handler(),
        timings=FAST,
    )
    with pytest.raises(errors.FatalSessionError, match="session_invalid"):
        await asyncio.wait_for(connection.run(), 10)


async def test_frames_queued_together_go_in_one_write_in_order(connected) -> None:
    state, connection, _handler = connected
    ws = connection._ws
    assert ws is not None and ws.transport is not None
    transport = ws.transport
    writes: list[bytes] = []
    original = transport.write

    def counting(data: bytes) -> None:
        writes.append(bytes(data))
        original(data)

    transport.write = counting  # type: ignore[method-assign]
    try:
        state.replies["submit"] = ["E2", "m", "t"]
        reply = asyncio.create_task(connection.request("submit", ["m", "t"], execution_id="E1"))
        await asyncio.sleep(0)  # the request task queues its frame
        for i in range(5):
            connection.notify("stream_append", ["E1", 0, i, ["raw", i, []]], execution_id="E1")
        connection.notify("stream_close", ["E1", 0, None], execution_id="E1")
        await connection.barrier(5)
        assert len(writes) == 1  # seven frames, one socket write
        assert await asyncio.wait_for(reply, 5) == ["E2", "m", "t"]
    finally:
        transport.write = original  # type: ignore[method-assign]

    # Each frame is still a message of its own, in the order it was queued.
    names = [f["request"] for n, f in state.frames if f["request"] != "declare_targets"]
    assert names == ["submit"] + ["stream_append"] * 5 + ["stream_close"]
    appends = [f["params"][2] for _, f in state.named("stream_append")]
    assert appends == [0, 1, 2, 3, 4]
    assert [f["id"] for _, f in state.named("submit")] == [1]


async def test_an_unencodable_frame_fails_alone(connected) -> None:
    state, connection, _handler = connected
    first = connection.notify("register_group", ["E1", 1, "a"], execution_id="E1")
    bad = connection.notify("stream_append", ["E1", 0, 0, float("nan")], execution_id="E1")
    last = connection.notify("register_group", ["E1", 2, "b"], execution_id="E1")
    await connection.barrier(5)
    assert first.done() and first.exception() is None
    assert last.done() and last.exception() is None
    with pytest.raises(errors.WorkerError, match="cannot encode stream_append"):
        bad.result()
    await eventually(lambda: len(state.named("register_group")) == 2)
    assert [f["params"][1] for _, f in state.named("register_group")] == [1, 2]
    assert not state.named("stream_append")
