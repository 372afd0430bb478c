"""The run topic built in slices (``views.RunBuild``), as the server follows a big run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pycoflux.storage import views
from tests.unit.orchestration.conftest import Driver, Session
from tests.unit.storage.test_archives import EpochDriver


@pytest.fixture
def driver() -> Iterator[Driver]:
    d = Driver()
    yield d
    d.close()


def run_with_children(driver: Driver, children: int) -> tuple[str, Session, str, list[str]]:
    """A run whose root has ``children`` children, the first half of them finished."""
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    made = [worker.child(root, arguments=[i]) for i in range(children)]
    for child in made[: children // 2]:
        worker.finish(child, "done")
    return ws, worker, root, made


def test_a_build_in_slices_equals_the_run_read_at_once(driver: Driver) -> None:
    ws, _, root, _ = run_with_children(driver, 12)
    run_id = root.split(":")[0]
    build = views.RunBuild(ws, run_id, budget=0)  # one step per slice
    value = build.start(driver.db)
    slices = 1
    while not build.done:
        build.resume(driver.db)
        slices += 1
    assert slices == 13
    assert value is build.value
    assert value == views.run(driver.db, ws, run_id)
    assert len(value["steps"]) == 13


def test_changes_between_slices_show_where_not_yet_built_and_in_the_next_build(
    driver: Driver,
) -> None:
    ws, worker, root, children = run_with_children(driver, 6)
    run_id = root.split(":")[0]
    build = views.RunBuild(ws, run_id, budget=0)
    build.start(driver.db)
    build.resume(driver.db)  # steps 1 (the root) and 2 built
    added = worker.child(root, arguments=["late"])  # step 8; the root gains a child
    worker.finish(children[3], "late result")  # step 5, not built yet
    while not build.done:
        build.resume(driver.db)
    value = build.value
    assert value is not None
    steps = value["steps"]
    assert f"{run_id}:8" == added.rsplit(":", 1)[0]
    assert f"{run_id}:8" in steps
    assert steps[f"{run_id}:5"]["executions"]["1"]["result"] is not None
    assert len(steps[f"{run_id}:1"]["executions"]["1"]["children"]) == 6  # built before
    again = views.run(driver.db, ws, run_id)
    assert again is not None
    assert len(again["steps"][f"{run_id}:1"]["executions"]["1"]["children"]) == 7
    assert {k: v for k, v in again["steps"].items() if k != f"{run_id}:1"} == {
        k: v for k, v in steps.items() if k != f"{run_id}:1"
    }


def test_a_run_that_left_the_store_between_slices_is_read_again(tmp_path: Path) -> None:
    driver = EpochDriver(tmp_path)
    try:
        ws = driver.workspace()
        worker = driver.session(ws)
        root = driver.submit(ws)
        for i in range(3):
            worker.finish(worker.child(root, arguments=[i]), i)
        worker.finish(root, "root")
        run_id = root.split(":")[0]
        build = views.RunBuild(ws, run_id, budget=0)
        assert build.start(driver.db) is not None
        assert not build.done
        driver.rotate()  # the finished run moves to the archive
        driver.workspace("other")  # and its row id is taken by something else
        build.resume(driver.db)
        assert build.done and build.value is None  # not in the active epoch any more
    finally:
        driver.close()


def test_every_execution_shows_its_own_children_and_dependencies_across_slices(
    driver: Driver,
) -> None:
    # 150 steps span three slices of 64; only some executions have children or
    # dependencies, which a slice finds with one query per table.
    ws, worker, root, made = run_with_children(driver, 150)
    # Running children (the second half) submit a grandchild each, every seventh of them.
    grandchildren = {child: worker.child(child) for child in made[75::7]}
    worker.select(root, made[:40])  # the root depends on the first 40 children
    worker.select(made[100], [made[0]])  # a child in the second slice depends on one
    run_id = root.split(":")[0]
    value = views.run(driver.db, ws, run_id)
    assert value is not None and len(value["steps"]) == 1 + 150 + len(grandchildren)

    def execution(external_id: str) -> dict[str, object]:
        step = value["steps"][external_id.rsplit(":", 1)[0]]
        return step["executions"][external_id.rsplit(":", 1)[1]]  # type: ignore[no-any-return]

    def children_of(external_id: str) -> list[str]:
        return [c["stepId"] for c in execution(external_id)["children"]]  # type: ignore[attr-defined]

    assert children_of(root) == [c.rsplit(":", 1)[0] for c in made]
    for child in made:
        grandchild = grandchildren.get(child)
        assert children_of(child) == ([] if grandchild is None else [grandchild.rsplit(":", 1)[0]])
    assert list(execution(root)["dependencies"]) == made[:40]  # type: ignore[call-overload]
    assert list(execution(made[100])["dependencies"]) == [made[0]]  # type: ignore[call-overload]
    others = [c for c in made if c != made[100]]
    assert all(execution(c)["dependencies"] == {} for c in others)
    assert views.RunBuild(ws, run_id, budget=0).start(driver.db) is not None
