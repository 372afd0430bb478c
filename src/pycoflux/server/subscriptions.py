"""Live topics over WebSocket (``/topics``): a reset, then ordered batches of updates.

Theory of operation. A subscription computes its topic's value with the same builder
as the REST snapshot and sends it as a reset. The project host tells every listener
which topics a committed batch touched; a subscription whose topic was touched
recomputes its value and sends the difference as set/unset updates. Recomputation
is coalesced: however many batches touch a topic while one recomputation runs, at
most one more follows, so a slow client sees fewer, larger batches and never stalls
the project. A run topic is built in slices of steps, each a read of its own, so the
commands queued meanwhile go through between slices; and a topic whose build is
expensive is rebuilt at most every ``PACE`` times its cost, so watching a run of
thousands of steps while it runs costs the project a bounded share of its time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from starlette.websockets import WebSocket, WebSocketDisconnect

from pycoflux.protocol import version
from pycoflux.server import auth, projects, topics, wsprotocol
from pycoflux.server.context import ApiError
from pycoflux.storage import views

log = logging.getLogger("pycoflux.server.topics")

Update = list[Any]

PACE = 4  # a rebuild costing at least PACE_FROM seconds waits PACE times its cost
PACE_FROM = 0.002


def topic_key(segments: list[str]) -> tuple[str, ...] | None:
    """The key the core publishes when the topic at these segments may have changed."""
    match segments:
        case ["workspaces"]:
            return ("workspaces",)
        case ["tokens"]:
            return ("tokens",)
        case ["workspaces", ws, "runs", run]:
            return ("run", ws, run)
        case ["workspaces", ws, "workflows", module, target]:
            return ("workflow", ws, module, target)
        case [
            "workspaces",
            ws,
            ("manifests" | "modules" | "queue" | "sessions" | "inputs") as kind,
        ]:
            return (kind, ws)
        case ["workspaces", ws, "pools"]:
            return ("pools", ws)
        case ["workspaces", ws, "pools", name]:
            return ("pool", ws, name)
        case ["inputs", *parts] if parts:
            return ("input", "/".join(parts))
        case ["asset", asset_id]:
            return ("asset", asset_id)
        case ["streams", stream_id]:
            return ("stream", stream_id)
    return None


def _touched(key: tuple[str, ...], published: frozenset[tuple[str, ...]]) -> bool:
    if key[0] == "run":
        # A run topic shows executions of several workspaces; match on the run alone.
        return any(p[0] == "run" and p[2] == key[2] for p in published)
    if key[0] == "workflow" and ("workflows", key[1]) in published:
        return True  # the workspace's manifests changed (or its base's)
    return key in published


def diff(old: Any, new: Any, path: list[Any] | None = None) -> list[Update]:
    """Updates turning ``old`` into ``new``: set (0) and unset (1) operations."""
    path = path or []
    if old == new:
        return []
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [[0, path, new]]
    updates: list[Update] = []
    for key in old:
        if key not in new:
            updates.append([1, path, key])
    for key, value in new.items():
        if key not in old:
            updates.append([0, [*path, key], value])
        else:
            updates.extend(diff(old[key], value, [*path, key]))
    return updates


def _segments(topic: Any) -> list[str] | None:
    if isinstance(topic, str):
        return [unquote(s) for s in topic.split("/") if s]
    if isinstance(topic, list) and all(isinstance(s, str) for s in topic):
        return list(topic)
    return None


class Subscription:
    def __init__(
        self, channel: int, key: tuple[str, ...], builder: topics.Builder, value: Any
    ) -> None:
        self.channel = channel
        self.key = key
        self.builder = builder
        self.value = value
        self.dirty = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class TopicSession:
    """One client connection and its subscriptions."""

    def __init__(self, websocket: WebSocket, host: projects.ProjectHost) -> None:
        self._websocket = websocket
        self._host = host
        self._subscriptions: dict[int, Subscription] = {}
        self._send_lock = asyncio.Lock()
        self._direct = wsprotocol.direct(websocket.scope)

    async def send(self, frame: list[Any]) -> None:
        text = json.dumps(frame, separators=(",", ":"))
        direct = self._direct
        if direct is not None and not self._send_lock.locked() and direct.send_now(text):
            return
        async with self._send_lock:
            await self._websocket.send_text(text)

    def topics_changed(self, published: frozenset[tuple[str, ...]]) -> None:
        for subscription in self._subscriptions.values():
            if _touched(subscription.key, published):
                subscription.dirty.set()

    async def _follow(self, subscription: Subscription) -> None:
        while True:
            await subscription.dirty.wait()
            subscription.dirty.clear()
            value, spent = await topics.read(self._host, subscription.builder)
            started = time.perf_counter()
            updates = diff(subscription.value, value)
            spent += time.perf_counter() - started
            subscription.value = value
            if updates:
                await self.send([3, subscription.channel, updates])
            if spent >= PACE_FROM:
                # A big topic changing all the time (a run of thousands of steps, watched
                # while it runs) is rebuilt at most every so often: its builds take at
                # most 1/(PACE+1) of the store's and the loop's time.
                await asyncio.sleep(spent * PACE)

    async def subscribe(self, channel: int, topic: Any) -> None:
        segments = _segments(topic)
        builder = None if segments is None else topics.builder_for(self._host, segments)
        key = None if segments is None else topic_key(segments)
        if builder is None or key is None:
            await self.send([0, channel, "not_found"])
            return
        for existing in self._subscriptions.values():
            if existing.key == key:
                await self.send([4, channel, existing.channel])
                return
        # Listening before the first read: a change committed after the read saw the store
        # but published before the reset is sent marks the subscription dirty, and its
        # follower sends it, instead of the subscriber keeping a stale value for good.
        subscription = Subscription(channel, key, builder, None)
        self._subscriptions[channel] = subscription
        value = (await topics.read(self._host, builder))[0]
        if value is None:
            del self._subscriptions[channel]
            await self.send([0, channel, "not_found"])
            return
        subscription.value = value
        await self.send([2, channel, value])
        subscription.task = asyncio.create_task(self._follow(subscription), name=f"topic-{channel}")

    async def execute(self, channel: int, topic: Any, action: Any, args: Any) -> None:
        """An action on a topic; the only one is a search (``workspaces/{ws}/search``)."""
        match _segments(topic), action, args:
            case ["workspaces", ws, "search"], "query", [str(query)]:
                matches = await self._host.read(lambda db, _: views.search(db, ws, query))
                if matches is not None:
                    await self.send([1, channel, matches])
                    return
        await self.send([0, channel, "not_found"])

    def unsubscribe(self, channel: int) -> None:
        subscription = self._subscriptions.pop(channel, None)
        if subscription is not None and subscription.task is not None:
            subscription.task.cancel()

    async def run(self) -> None:
        self._host.listen(self)
        try:
            while True:
                try:
                    frame = json.loads(await self._websocket.receive_text())
                except ValueError:
                    continue  # malformed frames are ignored
                if not isinstance(frame, list) or not frame:
                    continue
                match frame:
                    case [2, int(channel), topic, *_]:
                        await self.subscribe(channel, topic)
                    case [3, int(channel)]:
                        self.unsubscribe(channel)
                    case [1, int(channel), topic, action, args, *_]:
                        await self.execute(channel, topic, action, args)
                    case [1, int(channel), *_]:
                        await self.send([0, channel, "not_found"])
        finally:
            self._host.unlisten(self)
            for channel in list(self._subscriptions):
                self.unsubscribe(channel)


def topics_endpoint(server: Any) -> Callable[[WebSocket], Awaitable[None]]:
    async def endpoint(websocket: WebSocket) -> None:
        subprotocols = list(websocket.scope.get("subprotocols", []))
        try:
            host = await server.project(websocket)
            await server.authenticate(
                websocket, host, auth.subprotocol_token(subprotocols, "bearer")
            )
            expected = websocket.query_params.get("version")
            if expected and expected != version.API_VERSION:
                raise ApiError(
                    409,
                    "version_mismatch",
                    {"server": version.SERVER_VERSION, "expected": expected},
                )
        except ApiError as e:
            await websocket.send_denial_response(e.response())
            return
        await websocket.accept(subprotocol="v1" if "v1" in subprotocols else None)
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await TopicSession(websocket, host).run()

    return endpoint
