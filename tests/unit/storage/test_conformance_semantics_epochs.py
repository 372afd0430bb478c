"""``semantics.md`` §15 checklist items about epochs that no other test checks on its own:
inputs and checkpoints across a rotation (items 94, 95, 148). The core runs on real
SQLite files with the archive fallback, as in the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pycoflux.orchestration import commands
from tests.unit.orchestration.test_checkpoints import handed, write
from tests.unit.orchestration.test_inputs import ask, new_input, wait_for
from tests.unit.storage.test_archives import EpochDriver


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[EpochDriver]:
    d = EpochDriver(tmp_path)
    yield d
    d.close()


def run_of(execution_id: str) -> str:
    return execution_id.split(":")[0]


def step_of(execution_id: str) -> str:
    return execution_id.rsplit(":", 1)[0]


def test_item_94_a_keyed_input_survives_its_run_being_copied_across_an_epoch(
    driver: EpochDriver,
) -> None:
    """Item 94: after the run is copied forward, the same key gives the same input id and
    the response is still there."""
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    input_id = new_input(worker, root, key="approval")
    driver.reply(commands.RespondInput(input_id=input_id, value="yes"))
    worker.finish(root, None)
    driver.rotate(index=True)
    assert run_of(root) not in driver.active_runs()

    again = driver.reply(commands.RerunStep(workspace_id=ws, step_id=step_of(root)))
    assert run_of(root) in driver.active_runs()  # copied forward by the re-run
    retry = again["executionId"]
    assert ask(worker, retry, key="approval")[2] == input_id
    request_id = wait_for(worker, retry, input_id)
    assert worker.replies(request_id)[0][2] == {
        "winner": 0,
        "status": "ok",
        "value": ["raw", "yes", []],
    }


def test_item_95_an_input_from_an_old_epoch_is_resolved_in_a_new_one(
    driver: EpochDriver,
) -> None:
    """Item 95: a run of the new epoch waits for, and gets, the answer to an input raised
    by a run that is only in an archive."""
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    input_id = new_input(worker, first)
    worker.finish(first, None)
    driver.rotate(index=True)
    assert run_of(first) not in driver.active_runs()

    second = driver.submit(ws)
    request_id = wait_for(worker, second, input_id)
    assert worker.replies(request_id) == []
    driver.reply(commands.RespondInput(input_id=input_id, value=7))
    assert worker.replies(request_id)[0][2] == {
        "winner": 0,
        "status": "ok",
        "value": ["raw", 7, []],
    }


def test_item_148_rotation_carries_the_effective_checkpoint_state(driver: EpochDriver) -> None:
    """Item 148: the state after a reset survives a rotation, and a derived workspace's
    tombstone keeps masking the base's value after it."""
    base = driver.workspace("base")
    derived = driver.workspace("derived", base_id=base)
    base_worker = driver.session(base)
    derived_worker = driver.session(derived)
    first = driver.submit(base)
    write(base_worker, first, {"kept": 1, "dropped": 2, "masked": 3})
    base_worker.finish(first, 1)
    step = step_of(first)
    second = driver.reply(commands.RerunStep(workspace_id=base, step_id=step))["executionId"]
    write(base_worker, second, resets=["dropped"])
    base_worker.finish(second, 2)
    in_derived = driver.reply(commands.RerunStep(workspace_id=derived, step_id=step))
    write(derived_worker, in_derived["executionId"], resets=["masked"])
    derived_worker.finish(in_derived["executionId"], 3)

    driver.rotate(index=True)
    assert run_of(first) not in driver.active_runs()

    in_base = driver.reply(commands.RerunStep(workspace_id=base, step_id=step))["executionId"]
    assert handed(base_worker, in_base) == {"kept": 1, "masked": 3}
    again = driver.reply(commands.RerunStep(workspace_id=derived, step_id=step))["executionId"]
    assert handed(derived_worker, again) == {"kept": 1}
