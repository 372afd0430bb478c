"""``tests/CONFORMANCE.md`` cannot rot: every test node id it names exists, and the
``semantics.md`` table lists each checklist item of §15 exactly once."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAP = ROOT / "tests" / "CONFORMANCE.md"
NODE_ID = re.compile(r"`(tests/[\w/]+\.py)::([\w:]+)(?:\[[^\]`]*\])?`")
SEMANTICS_ITEMS = range(1, 173)


def sections() -> dict[str, str]:
    """The map's ``## <spec>`` sections by heading."""
    parts = re.split(r"^## (.+)$", MAP.read_text(), flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def node_ids() -> list[tuple[str, str]]:
    return sorted(set(NODE_ID.findall(MAP.read_text())))


@cache
def definitions(path: str) -> frozenset[str]:
    """``name`` and ``Class::name`` of every test function and class in a file."""
    tree = ast.parse((ROOT / path).read_text(), filename=path)
    names: set[str] = set()
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        if isinstance(node, functions):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            names.update(f"{node.name}::{n.name}" for n in node.body if isinstance(n, functions))
    return frozenset(names)


def test_the_map_names_tests() -> None:
    assert len(node_ids()) > 100


@pytest.mark.parametrize(("path", "name"), node_ids(), ids=lambda value: str(value))
def test_every_node_id_in_the_map_exists(path: str, name: str) -> None:
    assert (ROOT / path).is_file(), f"{path} does not exist"
    assert name.startswith(("test_", "Test")), f"{path}::{name} is not a test"
    assert name in definitions(path), f"{path}::{name} is not defined"


def test_the_semantics_table_lists_every_item_once_with_a_test() -> None:
    table = sections()["semantics.md"]
    rows = re.findall(r"^\| (\d+) \| (.*?) \|", table, flags=re.M)
    items = [int(item) for item, _ in rows]
    assert sorted(items) == list(SEMANTICS_ITEMS)
    untested = [item for item, tests in rows if not NODE_ID.search(tests)]
    # An item without a test must say why in its note (e.g. not applicable to 0.12.0).
    for item in untested:
        (line,) = [r for r in table.splitlines() if r.startswith(f"| {item} |")]
        assert line.rstrip(" |").split("|")[-1].strip(), f"item {item}: no test and no reason"
