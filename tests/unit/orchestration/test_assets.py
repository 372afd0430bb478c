"""Assets in the core (``semantics.md`` §2.13; checklist J 131)."""

from __future__ import annotations

from typing import Any

from pycoflux.orchestration import commands
from pycoflux.storage import views
from tests.unit.orchestration.conftest import Driver, Session

KEY_A, KEY_B = "a" * 64, "b" * 64


def put(
    worker: Session, execution_id: str, entries: dict[str, Any], name: str | None = None
) -> list[Any]:
    return worker.request(
        lambda request_id: commands.PutAsset(
            session_id=worker.id,
            request_id=request_id,
            execution_id=execution_id,
            name=name,
            entries=entries,
        )
    )


def get(worker: Session, execution_id: str, asset_id: str) -> list[Any]:
    return worker.request(
        lambda request_id: commands.GetAsset(
            session_id=worker.id,
            request_id=request_id,
            execution_id=execution_id,
            asset_id=asset_id,
        )
    )


def test_j131_persisting_returns_a_summary_and_equal_content_the_same_asset(
    driver: Driver,
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    entries = {"data.csv": [KEY_A, 10, {"type": "text/csv"}], "b.bin": [KEY_B, 6, {}]}
    reply = put(worker, root, entries, name="dataset")
    assert reply[0] == 2
    asset_id, name, count, size = reply[2]
    assert asset_id.startswith("A") and len(asset_id) == 4
    assert (name, count, size) == ("dataset", 2, 16)
    other = driver.submit(ws)
    assert put(worker, other, entries, name="dataset")[2][0] == asset_id
    assert put(worker, other, entries, name="renamed")[2][0] != asset_id
    assert views.asset(driver.db, asset_id) == {
        "name": "dataset",
        "entries": {
            "data.csv": {"blobKey": KEY_A, "size": 10, "metadata": {"type": "text/csv"}},
            "b.bin": {"blobKey": KEY_B, "size": 6, "metadata": {}},
        },
    }
    run = views.run(driver.db, ws, root.split(":")[0])
    assert run is not None
    assets = run["steps"][root.rsplit(":", 1)[0]]["executions"]["1"]["assets"]
    assert assets == {
        asset_id: {"name": "dataset", "totalCount": 2, "totalSize": 16, "entry": None}
    }


def test_j131_getting_returns_the_entries_and_records_a_dependency(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    asset_id = put(worker, root, {"only.txt": [KEY_A, 3, {}]})[2][0]
    reader = worker.child(root)
    reply = get(worker, reader, asset_id)
    assert reply[0::2] == [2, {"only.txt": [KEY_A, 3, {}]}]
    run = views.run(driver.db, ws, root.split(":")[0])
    assert run is not None
    dependency = run["steps"][reader.rsplit(":", 1)[0]]["executions"]["1"]["dependencies"][asset_id]
    assert dependency["type"] == "asset"
    assert dependency["asset"]["entry"] == {
        "path": "only.txt",
        "blobKey": KEY_A,
        "size": 3,
        "metadata": {},
    }
    missing = get(worker, reader, "Anope")
    assert missing[0::2] == [3, "not_found"]
    assert not driver.closed
    assert views.asset(driver.db, "Anope") is None


def test_asset_references_are_expanded_for_workers_and_topics(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    asset_id = put(worker, root, {"x": [KEY_A, 4, {}]}, name="n")[2][0]
    child = worker.child(root, values=[["raw", {"type": "ref", "index": 0}, [["asset", asset_id]]]])
    (params,) = [p for p in worker.commands("execute") if p[0] == child]
    assert params[3] == [["raw", {"type": "ref", "index": 0}, [["asset", asset_id, "n", 1, 4]]]]
    run = views.run(driver.db, ws, root.split(":")[0])
    assert run is not None
    (argument,) = run["steps"][child.rsplit(":", 1)[0]]["arguments"]
    assert argument["references"][0]["asset"]["totalSize"] == 4


def test_malformed_entries_get_an_error_reply(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    for entries in ({"x": ["key"]}, {"x": [KEY_A, -1, {}]}, {"": [KEY_A, 1, {}]}):
        assert put(worker, root, entries)[0] == 3
    assert not driver.closed
