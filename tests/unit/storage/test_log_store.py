"""The log and metric stores across partitions (``semantics.md`` §12.1-12.2)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from pycoflux.storage import epochs, logs, metrics

DAY = int(datetime(2026, 5, 1, 12, tzinfo=UTC).timestamp() * 1000)
NEXT_DAY = DAY + 24 * 3600 * 1000


def message(run: str, timestamp: int, **extra: Any) -> dict[str, Any]:
    return {
        "runId": run,
        "executionId": f"{run}:1:1",
        "workspaceId": "W1",
        "timestamp": timestamp,
        "level": 2,
        "template": "step {n}",
        "values": {"n": {"type": "raw", "data": timestamp, "references": []}},
        **extra,
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[logs.LogStore]:
    store = logs.LogStore(tmp_path)
    store.open()
    yield store
    store.close()


def timestamps(page: epochs.Page) -> list[int]:
    return [entry["timestamp"] for entry in page.entries]


def test_entries_keep_their_shape(store: logs.LogStore) -> None:
    store.append([[message("R1", 5, template=None, values={}), message("R1", 3)]], DAY)
    page = store.query(logs.LogQuery(run_id="R1"), 10)
    assert page.entries == [
        {
            "executionId": "R1:1:1",
            "workspaceId": "W1",
            "timestamp": 3,
            "level": 2,
            "template": "step {n}",
            "values": {"n": {"type": "raw", "data": 3, "references": []}},
        },
        {
            "executionId": "R1:1:1",
            "workspaceId": "W1",
            "timestamp": 5,
            "level": 2,
            "template": None,
            "values": {},
        },
    ]
    assert page.cursor == ":5:1"


def test_unvalidated_fields_are_coerced_not_refused(store: logs.LogStore) -> None:
    store.append(
        [[{"runId": "R1", "timestamp": "soon", "level": "loud", "template": 7, "values": {}}]],
        DAY,
    )
    (entry,) = store.query(logs.LogQuery(run_id="R1"), 10).entries
    assert entry == {
        "executionId": "",
        "workspaceId": "",
        "timestamp": DAY,  # arrival time
        "level": 2,
        "template": None,
        "values": {},
    }


def test_templates_are_stored_once_per_partition(store: logs.LogStore) -> None:
    store.append([[message("R1", i) for i in range(50)]], DAY)
    store.append([[message("R2", 1, template="other")]], DAY)
    db = store.partitions.active
    assert db.execute("SELECT count(*) FROM templates").fetchone() == (2,)
    store.rotate(DAY)
    store.append([[message("R1", 99)]], DAY)
    assert store.partitions.active.execute("SELECT template FROM templates").fetchall() == [
        ("step {n}",)
    ]
    assert store.query(logs.LogQuery(run_id="R1"), 100).entries[-1]["template"] == "step {n}"


def test_filters_by_execution_and_workspaces(store: logs.LogStore) -> None:
    store.append(
        [
            [
                message("R1", 1),
                message("R1", 2, executionId="R1:2:1", workspaceId="W2"),
                message("R1", 3, workspaceId="W3"),
            ]
        ],
        DAY,
    )
    assert timestamps(store.query(logs.LogQuery(run_id="R1", execution_id="R1:2:1"), 10)) == [2]
    query = logs.LogQuery(run_id="R1", workspaces=frozenset({"W1", "W3"}))
    assert timestamps(store.query(query, 10)) == [1, 3]


def test_a_failing_batch_is_rolled_back_alone(store: logs.LogStore) -> None:
    bad = message("R1", 2, values={"x": {"type": "raw", "data": float("nan")}})
    outcomes = store.append([[message("R1", 1)], [message("R1", 3), bad]], DAY)
    assert not isinstance(outcomes[0], Exception)
    assert isinstance(outcomes[1], ValueError)
    assert timestamps(store.query(logs.LogQuery(run_id="R1"), 10)) == [1]


def test_queries_span_partitions_oldest_first(store: logs.LogStore) -> None:
    store.append([[message("R1", 10), message("R2", 1)]], DAY)
    first = store.rotate(DAY)
    store.append([[message("R1", 5)]], DAY)  # earlier timestamp, later partition
    second = store.rotate(DAY)
    store.append([[message("R1", 7)]], DAY)
    page = store.query(logs.LogQuery(run_id="R1"), 10)
    assert timestamps(page) == [10, 5, 7]
    assert page.cursor is not None and page.cursor.startswith(":7:")
    two = store.query(logs.LogQuery(run_id="R1"), 2)
    assert two.cursor == f"{second}:5:3"
    rest = store.query(logs.LogQuery(run_id="R1", after=epochs.Cursor.parse(two.cursor, int)), 10)
    assert timestamps(rest) == [7]
    one = store.query(logs.LogQuery(run_id="R1"), 1)
    assert one.cursor == f"{first}:10:1"


def test_pagination_across_partitions_visits_every_entry_once(store: logs.LogStore) -> None:
    expected = []
    for partition in range(3):
        batch = [message("R1", partition * 1000 + i) for i in range(700)]
        expected += [m["timestamp"] for m in batch]
        store.append([batch], DAY)
        if partition < 2:
            store.rotate(DAY)
    seen: list[int] = []
    after: epochs.Cursor[int] | None = None
    pages = 0
    while True:
        page = store.query(logs.LogQuery(run_id="R1", after=after), logs.PAGE)
        if not page.entries:
            assert page.cursor is None
            break
        pages += 1
        assert len(page.entries) <= logs.PAGE
        seen += timestamps(page)
        assert page.cursor is not None
        after = epochs.Cursor.parse(page.cursor, int)
    assert pages == 3
    assert seen == expected


def test_bloom_filters_keep_other_runs_out(store: logs.LogStore) -> None:
    store.append([[message("R1", 1)]], DAY)
    epoch_id = store.rotate(DAY)
    assert store.partitions.build_filters(epoch_id)
    store.partitions.archive_path(epoch_id).rename(store.partitions.archive_dir / "moved")
    # R2 is ruled out by the filter, so the (now missing) archive is never opened.
    assert store.query(logs.LogQuery(run_id="R2"), 10).entries == []


def test_from_skips_partitions_rotated_before_its_day(store: logs.LogStore) -> None:
    store.append([[message("R1", 1)]], DAY)
    store.rotate(DAY)
    store.append([[message("R1", 2)]], DAY)
    store.rotate(NEXT_DAY)
    store.append([[message("R1", 3)]], DAY)
    assert timestamps(store.query(logs.LogQuery(run_id="R1", since=date(2026, 5, 2)), 10)) == [
        2,
        3,
    ]
    assert timestamps(store.query(logs.LogQuery(run_id="R1", since=date(2026, 5, 3)), 10)) == [3]


def test_a_cursor_from_before_a_rotation_still_resumes_in_place(store: logs.LogStore) -> None:
    store.append([[message("R1", 1), message("R1", 2)]], DAY)
    page = store.query(logs.LogQuery(run_id="R1"), 1)
    assert page.cursor == ":1:1"
    store.rotate(DAY)
    store.append([[message("R1", 0)]], DAY)
    rest = store.query(logs.LogQuery(run_id="R1", after=epochs.Cursor.parse(page.cursor, int)), 10)
    assert timestamps(rest) == [2, 0]


def test_data_survives_reopening(tmp_path: Path) -> None:
    store = logs.LogStore(tmp_path)
    store.open()
    store.append([[message("R1", 1)]], DAY)
    store.rotate(DAY)
    store.append([[message("R1", 2)]], DAY)
    store.close()
    again = logs.LogStore(tmp_path)
    assert again.open() == ["20260501_0001"]  # its filters were never built
    assert timestamps(again.query(logs.LogQuery(run_id="R1"), 10)) == [1, 2]
    again.close()


# --- metrics ---------------------------------------------------------------------------


def point(run: str, key: str, value: float, at: float, **extra: Any) -> dict[str, Any]:
    return {
        "runId": run,
        "executionId": f"{run}:1:1",
        "workspaceId": "W1",
        "key": key,
        "value": value,
        "at": at,
        **extra,
    }


@pytest.fixture
def metric_store(tmp_path: Path) -> Iterator[metrics.MetricStore]:
    store = metrics.MetricStore(tmp_path)
    store.open()
    yield store
    store.close()


def test_metrics_order_by_at_and_page_with_float_cursors(
    metric_store: metrics.MetricStore,
) -> None:
    metric_store.append([[point("R1", "loss", 0.5, 2), point("R1", "acc", 1, 1.5)]], DAY)
    epoch_id = metric_store.rotate(DAY)
    metric_store.append([[point("R1", "loss", 0.1, 1)]], DAY)
    page = metric_store.query(metrics.MetricQuery(run_id="R1"), 10)
    assert [(m["key"], m["at"]) for m in page.entries] == [
        ("acc", 1.5),
        ("loss", 2.0),
        ("loss", 1.0),
    ]
    assert page.cursor == ":1.0:3"
    first = metric_store.query(metrics.MetricQuery(run_id="R1"), 1)
    assert first.cursor == f"{epoch_id}:1.5:2"
    after = epochs.Cursor.parse(first.cursor, float)
    rest = metric_store.query(metrics.MetricQuery(run_id="R1", after=after), 10)
    assert [m["at"] for m in rest.entries] == [2.0, 1.0]


def test_metrics_filter_by_execution_workspace_and_keys(
    metric_store: metrics.MetricStore,
) -> None:
    metric_store.append(
        [
            [
                point("R1", "a", 1, 1),
                point("R1", "b", 2, 2, executionId="R1:2:1"),
                point("R1", "c", 3, 3, workspaceId="W2"),
                point("R2", "a", 4, 4),
            ]
        ],
        DAY,
    )

    def keys(**query: Any) -> list[str]:
        page = metric_store.query(metrics.MetricQuery(**query), 10)
        return [m["key"] for m in page.entries]

    assert keys(run_id="R1") == ["a", "b", "c"]
    assert keys(execution_id="R1:2:1") == ["b"]
    assert keys(run_id="R1", execution_id="R1:1:1") == ["a", "c"]
    assert keys(run_id="R1", keys=frozenset({"a", "c"})) == ["a", "c"]
    assert keys(run_id="R1", workspaces=frozenset({"W2"})) == ["c"]


def test_a_metric_batch_that_cannot_be_stored_is_rolled_back_alone(
    metric_store: metrics.MetricStore,
) -> None:
    outcomes = metric_store.append(
        [[point("R1", "a", 1, 1)], [point("R1", "b", 2, 2), point("R1", "c", "x", 3)]],  # type: ignore[arg-type]
        DAY,
    )
    assert isinstance(outcomes[1], ValueError)
    page = metric_store.query(metrics.MetricQuery(run_id="R1"), 10)
    assert [m["key"] for m in page.entries] == ["a"]
