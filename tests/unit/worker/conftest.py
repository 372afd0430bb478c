"""Fixtures for the worker tests: a fake server, a project directory, in-process workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.worker_harness import FakeServer, RunningWorker, make_config, write_module


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeServer]:
    server = FakeServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_module(tmp_path)
    return tmp_path


@pytest.fixture
async def start_worker(fake_server: FakeServer, project: Path) -> AsyncIterator[Any]:
    workers: list[RunningWorker] = []

    async def start(**overrides: Any) -> RunningWorker:
        worker = RunningWorker(make_config(fake_server, **overrides), project)
        workers.append(worker)
        await worker.wait_connected(fake_server)
        return worker

    yield start
    for worker in workers:
        if not worker.task.done():
            await worker.stop()
