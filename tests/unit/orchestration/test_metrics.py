"""Metric definitions an execution declares, shown in the run topic (``semantics.md`` §2.18)."""

from __future__ import annotations

from pycoflux.orchestration import commands
from pycoflux.storage import views
from tests.unit.orchestration.conftest import Driver


def test_metric_definitions_appear_in_the_run_topic_and_the_first_one_stands(
    driver: Driver,
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    for definition in ({"units": "items", "progress": True, "upper": 10}, {"units": "other"}):
        driver.handle(
            commands.DefineMetric(
                session_id=worker.id, execution_id=root, key="done", definition=definition
            )
        )
    driver.handle(
        commands.DefineMetric(
            session_id=worker.id, execution_id="Rnope:1:1", key="x", definition={}
        )
    )
    assert not driver.closed  # unknown executions are ignored, not fatal
    run = views.run(driver.db, ws, root.split(":")[0])
    assert run is not None
    assert run["steps"][root.rsplit(":", 1)[0]]["executions"]["1"]["metrics"] == {
        "done": {
            "group": None,
            "groupUnits": None,
            "groupLower": None,
            "groupUpper": None,
            "scale": None,
            "units": "items",
            "progress": True,
            "lower": None,
            "upper": 10,
        }
    }
