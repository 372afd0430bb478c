"""The ``auth-and-config.md``, ``server-api.md`` and ``worker.md`` tables of
``tests/CONFORMANCE.md`` list each checklist item exactly once, with a test."""

from __future__ import annotations

import re

import pytest

from tests.unit.test_conformance_map import NODE_ID, sections

CHECKLISTS = {"auth-and-config.md": 78, "server-api.md": 133, "worker.md": 30}


@pytest.mark.parametrize(("spec", "count"), CHECKLISTS.items())
def test_every_item_is_listed_once_with_a_test(spec: str, count: int) -> None:
    rows = re.findall(r"^\| (\d+) \| (.*?) \|", sections()[spec], flags=re.M)
    assert sorted(int(item) for item, _ in rows) == list(range(1, count + 1))
    assert [item for item, tests in rows if not NODE_ID.search(tests)] == []
