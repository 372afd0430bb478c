"""The text value formatter (cli.md §4.5.5)."""

from __future__ import annotations

from typing import Any

import pytest

from pycoflux.cli import values


@pytest.mark.parametrize(
    ("data", "text"),
    [
        ("hi", '"hi"'),
        (3, "3"),
        (3.0, "3"),
        (2.5, "2.5"),
        (True, "True"),
        (None, "None"),
        ([1, "a", None], '[1, "a", None]'),
        ({"type": "dict", "items": []}, "{}"),
        ({"type": "set", "items": []}, "∅"),
        ({"type": "set", "items": [1, 2]}, "{1, 2}"),
        ({"type": "tuple", "items": [1, "x"]}, '(1, "x")'),
        ({"type": "datetime", "value": "2024-01-02T03:04:05"}, "2024-01-02T03:04:05"),
        ({"type": "decimal", "value": "1.10"}, "1.10"),
        ({"type": "uuid", "value": "u-u"}, "u-u"),
        ({"type": "duration", "value": 93784.5}, "1d2h3m4.5s"),
        ({"type": "duration", "value": 0}, "0s"),
        ({"type": "ref", "index": 5}, "<ref ?>"),
    ],
)
def test_format_data(data: Any, text: str) -> None:
    assert values.format_data(data) == text


def test_nested_dicts_are_multiline() -> None:
    data = {"type": "dict", "items": ["a", {"type": "dict", "items": ["b", 1]}, "c", [1]]}
    assert values.format_data(data) == '{\n  "a" ↦ {\n    "b" ↦ 1\n  }\n  "c" ↦ [1]\n}'


@pytest.mark.parametrize(
    ("ref", "text"),
    [
        (
            {"type": "execution", "executionId": "R:1:1", "module": "m", "target": "t"},
            "<execution m/t>",
        ),
        ({"type": "execution", "executionId": "R:1:1"}, "<execution>"),
        (
            {
                "type": "asset",
                "assetId": "A1",
                "asset": {"name": "data", "totalCount": 2, "totalSize": 1536},
            },
            '<asset "data" (2 files, 1.5KiB)>',
        ),
        (
            {"type": "asset", "assetId": "A1", "totalCount": 1, "totalSize": 10},
            "<asset (1 files, 10 bytes)>",
        ),
        ({"type": "fragment", "format": "pickle", "size": 99}, "<fragment pickle (99 bytes)>"),
        ({"type": "input", "inputId": "R/i1"}, "<input R/i1>"),
    ],
)
def test_references(ref: dict[str, Any], text: str) -> None:
    assert values.format_data({"type": "ref", "index": 0}, [ref]) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 bytes"),
        (1023, "1023 bytes"),
        (1536, "1.5KiB"),
        (3 * 1024**2, "3.0MiB"),
        (2 * 1024**4, "2.0TiB"),
    ],
)
def test_human_size(size: int, text: str) -> None:
    assert values.human_size(size) == text


def test_error_without_type_or_frames() -> None:
    assert values.format_error({"type": "", "message": "plain", "frames": []}) == ["plain"]
