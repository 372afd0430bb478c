"""Live topic subscriptions (``subscriptions.TopicSession``) against a project's store, with
the host's reads and publications played by the test."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from pycoflux.server import subscriptions
from tests.unit.orchestration.conftest import Driver


class Socket:
    """The frames a session sends; no direct-write extension."""

    scope: dict[str, Any] = {}

    def __init__(self) -> None:
        self.frames: list[list[Any]] = []

    async def send_text(self, text: str) -> None:
        self.frames.append(json.loads(text))


class Host:
    """Reads run on the driver's store; ``during_read`` runs once, after the first read."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.during_read: Callable[[], None] | None = None

    async def read(self, fn: Any) -> Any:
        value = fn(self.driver.db, self.driver.core)
        hook, self.during_read = self.during_read, None
        if hook is not None:
            hook()
        return value


async def test_a_change_published_while_the_first_read_completes_is_sent() -> None:
    driver = Driver()
    try:
        ws = driver.workspace()
        worker = driver.session(ws)
        root = driver.submit(ws)
        run_id = root.split(":")[0]
        socket, host = Socket(), Host(driver)
        session = subscriptions.TopicSession(socket, host)  # type: ignore[arg-type]

        def finish_and_publish() -> None:
            # Committed after the read saw the store, published before the reset is sent.
            worker.finish(root, "done")
            session.topics_changed(frozenset({("run", ws, run_id)}))

        host.during_read = finish_and_publish
        await session.subscribe(1, f"workspaces/{ws}/runs/{run_id}")
        reset = socket.frames[0]
        assert reset[:2] == [2, 1]
        assert reset[2]["steps"][f"{run_id}:1"]["executions"]["1"]["result"] is None
        async with asyncio.timeout(5):
            while len(socket.frames) < 2:
                await asyncio.sleep(0.01)
        kind, channel, updates = socket.frames[1]
        assert (kind, channel) == (3, 1)
        assert any(
            update[0] == 0 and "result" in json.dumps(update[1:]) and "done" in json.dumps(update)
            for update in updates
        ), updates
        session.unsubscribe(1)
    finally:
        driver.close()


async def test_an_unknown_run_is_not_found_and_leaves_no_subscription() -> None:
    driver = Driver()
    try:
        ws = driver.workspace()
        socket = Socket()

        class Epochs:
            def search(self, *_: Any) -> None:
                return None

        host = Host(driver)
        host.epochs = Epochs()  # type: ignore[attr-defined]
        session = subscriptions.TopicSession(socket, host)  # type: ignore[arg-type]
        await session.subscribe(1, f"workspaces/{ws}/runs/Rnope")
        assert socket.frames == [[0, 1, "not_found"]]
        session.topics_changed(frozenset({("run", ws, "Rnope")}))  # nobody is listening
        await session.subscribe(2, f"workspaces/{ws}/runs/Rnope")
        assert socket.frames[-1] == [0, 2, "not_found"]  # not a duplicate of channel 1
    finally:
        driver.close()
