"""Epoch ids, the index file and rotation of a partitioned store (``auth-and-config.md`` §2)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from pycoflux.storage import epochs

SCHEMA = epochs.Schema(
    name="things",
    migrations=(
        "CREATE TABLE things (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL) STRICT",
    ),
    filters={"runs": "SELECT DISTINCT run_id FROM things"},
    sequence="things",
)

DAY = int(datetime(2026, 5, 1, 12, tzinfo=UTC).timestamp() * 1000)
NEXT_DAY = DAY + 24 * 3600 * 1000


def ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def test_epoch_ids_count_per_utc_day() -> None:
    assert epochs.next_epoch_id([], DAY) == "20260501_0001"
    assert epochs.next_epoch_id(["20260501_0001", "20260501_0007"], DAY) == "20260501_0008"
    assert epochs.next_epoch_id(["20260501_0003"], NEXT_DAY) == "20260502_0001"
    assert epochs.epoch_day("20260501_0008") == date(2026, 5, 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":17:42", epochs.Cursor("", 17, 42)),
        ("17:42", epochs.Cursor("", 17, 42)),  # legacy form: the active partition
        ("20260501_0001:17:42", epochs.Cursor("20260501_0001", 17, 42)),
    ],
)
def test_cursors_parse_and_render(text: str, expected: epochs.Cursor[int]) -> None:
    cursor = epochs.Cursor.parse(text, int)
    assert cursor == expected
    assert epochs.Cursor.parse(cursor.render(), int) == cursor


def test_float_cursors_render_the_position_as_a_float() -> None:
    cursor = epochs.Cursor("", 2.0, 5)
    assert cursor.render() == ":2.0:5"
    assert epochs.Cursor.parse(":2.5:5", float) == epochs.Cursor("", 2.5, 5)


@pytest.mark.parametrize("text", ["", "x", "a:b:c", "2026:1:2", "1:2:3:4", ":nan:1", ":1.5:2"])
def test_bad_cursors_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        epochs.Cursor.parse(text, float if "nan" in text else int)


def open_partitions(tmp_path: Path, rotate_size: int = epochs.ROTATE_SIZE) -> epochs.Partitions:
    partitions = epochs.Partitions(tmp_path, SCHEMA, rotate_size=rotate_size)
    partitions.open()
    return partitions


def insert(partitions: epochs.Partitions, *runs: str) -> list[int]:
    db = partitions.active
    return [
        int(db.execute("INSERT INTO things (run_id) VALUES (?) RETURNING id", (run,)).fetchone()[0])
        for run in runs
    ]


def test_rotation_archives_the_active_file_and_lists_it_in_the_index(tmp_path: Path) -> None:
    partitions = open_partitions(tmp_path)
    insert(partitions, "R1", "R2")
    epoch_id = partitions.rotate(DAY)
    assert epoch_id == "20260501_0001"
    archive = tmp_path / "things" / "20260501_0001.sqlite"
    assert archive.is_file()
    # An archive is one self-contained file: no WAL or shared-memory companions.
    assert not list((tmp_path / "things").glob("*-wal"))
    index = json.loads((tmp_path / "things" / "index.json").read_text())
    assert index == {"20260501_0001": [None, DAY]}
    # The fresh active file is empty and writable.
    assert partitions.active.execute("SELECT count(*) FROM things").fetchone() == (0,)
    with epochs.open_read_only(archive) as db:
        assert sorted(r[0] for r in db.execute("SELECT run_id FROM things")) == ["R1", "R2"]
    assert partitions.rotate(DAY) == "20260501_0002"


def test_filters_are_built_into_the_index_and_narrow_the_search(tmp_path: Path) -> None:
    partitions = open_partitions(tmp_path)
    insert(partitions, "R1")
    first = partitions.rotate(DAY)
    insert(partitions, "R2")
    second = partitions.rotate(DAY)
    assert partitions.unfiltered() == [first, second]
    # Unfiltered archives are always searched.
    assert [p.epoch_id for p in partitions.select(field="runs", key="R2")] == [first, second, ""]
    assert partitions.build_filters(first)
    assert partitions.build_filters(second)
    assert partitions.unfiltered() == []
    assert [p.epoch_id for p in partitions.select(field="runs", key="R2")] == [second, ""]
    assert [p.epoch_id for p in partitions.select(field="runs", key="R9")] == [""]
    index = json.loads((tmp_path / "things" / "index.json").read_text())
    assert list(index) == [second, first]  # newest first
    assert set(index[first][0]) == {"runs"}


def test_selection_by_day_and_cursor(tmp_path: Path) -> None:
    partitions = open_partitions(tmp_path)
    first = partitions.rotate(DAY)
    second = partitions.rotate(NEXT_DAY)
    chosen = partitions.select
    assert [p.epoch_id for p in chosen(since=date(2026, 5, 2))] == [second, ""]
    assert [p.epoch_id for p in chosen(since=date(2026, 5, 1))] == [first, second, ""]
    assert [p.epoch_id for p in chosen(after_epoch=second)] == [second, ""]
    assert [p.epoch_id for p in chosen(after_epoch="")] == [""]


def test_a_rotation_that_died_before_the_rename_is_forgotten(tmp_path: Path) -> None:
    partitions = open_partitions(tmp_path)
    insert(partitions, "R1")
    partitions.index.archives["20260501_0001"] = epochs.Archive(
        epoch_id="20260501_0001", archived_at=DAY
    )
    partitions.index.save()
    partitions.close()
    reopened = open_partitions(tmp_path)
    assert reopened.archives() == []
    assert reopened.active.execute("SELECT run_id FROM things").fetchall() == [("R1",)]
    assert json.loads((tmp_path / "things" / "index.json").read_text()) == {}


def test_unindexed_archives_are_adopted_and_queued_for_filters(tmp_path: Path) -> None:
    partitions = open_partitions(tmp_path)
    insert(partitions, "R1")
    epoch_id = partitions.rotate(DAY)
    partitions.close()
    (tmp_path / "things" / "index.json").unlink()
    reopened = epochs.Partitions(tmp_path, SCHEMA)
    assert reopened.open() == [epoch_id]
    assert [a.epoch_id for a in reopened.archives()] == [epoch_id]
    assert reopened.build_filters(epoch_id)
    assert reopened.open() == []


def test_a_damaged_index_is_rebuilt_from_the_files(tmp_path: Path) -> None:
    partitions = open_partitions(tmp_path)
    epoch_id = partitions.rotate(DAY)
    partitions.close()
    (tmp_path / "things" / "index.json").write_text("{not json")
    reopened = epochs.Partitions(tmp_path, SCHEMA)
    assert reopened.open() == [epoch_id]


def test_ids_continue_across_partitions_so_old_cursors_find_their_archive(
    tmp_path: Path,
) -> None:
    partitions = open_partitions(tmp_path)
    assert insert(partitions, "R1", "R1") == [1, 2]
    epoch_id = partitions.rotate(DAY)
    assert insert(partitions, "R1") == [3]
    before_rotation = epochs.Cursor("", 100, 2)
    assert partitions.locate(before_rotation) == epochs.Cursor(epoch_id, 100, 2)
    assert partitions.locate(epochs.Cursor("", 100, 3)) == epochs.Cursor("", 100, 3)
    partitions.close()
    # The sequence survives a restart.
    reopened = open_partitions(tmp_path)
    assert insert(reopened, "R1") == [4]


def test_size_trigger(tmp_path: Path) -> None:
    partitions = open_partitions(tmp_path, rotate_size=64 * 1024)
    assert not partitions.full()
    insert(partitions, *(f"R{'x' * 200}{i}" for i in range(400)))
    assert partitions.full()


def test_archives_are_opened_read_only(tmp_path: Path) -> None:
    partitions = open_partitions(tmp_path)
    epoch_id = partitions.rotate(DAY)
    with (
        partitions.reading(epochs.Partition(epoch_id, partitions.archive_path(epoch_id))) as db,
        pytest.raises(sqlite3.OperationalError),
    ):
        db.execute("INSERT INTO things (run_id) VALUES ('x')")


def test_an_archive_whose_filters_cannot_be_built_stays_searchable(tmp_path: Path) -> None:
    partitions = open_partitions(tmp_path)
    epoch_id = partitions.rotate(DAY)
    partitions.archive_path(epoch_id).write_bytes(b"not a database")
    assert not partitions.build_filters(epoch_id)
    assert partitions.unfiltered() == [epoch_id]
    assert [p.epoch_id for p in partitions.select(field="runs", key="R1")] == [epoch_id, ""]
