"""``coflux manifests`` with a scripted adapter (cli.md §4.8)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import FakeServer, Run

TARGETS: list[dict[str, Any]] = [
    {
        "module": "shop.flows",
        "name": "nightly",
        "type": "workflow",
        "parameters": [{"name": "region", "annotation": "<class 'str'>", "default": '"eu"'}],
        "retries": {"limit": 2, "backoff_min_ms": 1000},
        "cache": {"params": True, "max_age_ms": 60000},
        "timeout": 600000,
        "recurrent": True,
        "wait_for": [0],
        "instruction": "Rebuild the nightly report.",
        "streams": {"buffer": None},
    },
    {"module": "shop.flows", "name": "fetch", "type": "task", "parameters": []},
    {"module": "shop.other", "name": "plain", "type": "workflow", "parameters": [{"name": "x"}]},
]


@pytest.fixture
def adapter(tmp_path: Path) -> str:
    """An adapter argv (CSV) whose `discover` prints TARGETS after some import-time noise."""
    script = tmp_path / "adapter.py"
    script.write_text(
        "import json, sys\n"
        "assert sys.argv[1] == 'discover', sys.argv\n"
        "if 'broken' in sys.argv: sys.exit('No module named coflux')\n"
        "print('import-time noise')\n"
        f"print(json.dumps({{'targets': {TARGETS!r}, 'args': sys.argv[2:]}}))\n"
    )
    return f"{sys.executable},{script}"


def test_discover_json_lists_workflows_only(on: Run, adapter: str) -> None:
    result = on("manifests", "--adapter", adapter, "discover", "shop", "-o", "json")
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert [t["name"] for t in printed["targets"]] == ["nightly", "plain"]
    nightly = printed["targets"][0]
    assert list(nightly) == [
        "module",
        "name",
        "type",
        "parameters",
        "cache",
        "retries",
        "wait_for",
        "recurrent",
        "timeout",
        "instruction",
        "streams",
    ]
    assert nightly["streams"] == {"buffer": None}
    assert printed["targets"][1]["parameters"] == [{"name": "x"}]


def test_discover_text_and_empty(on: Run, adapter: str, tmp_path: Path) -> None:
    result = on("manifests", "discover", "shop", "--adapter", adapter)
    assert result.stdout == "shop.flows/nightly\nshop.other/plain\n"
    empty = tmp_path / "empty.py"
    empty.write_text("print('{\"targets\": []}')\n")
    none = on("manifests", "--adapter", f"{sys.executable},{empty}", "discover", "m", "-o", "json")
    assert none.stdout == '{\n  "targets": null\n}\n'


def test_discover_needs_an_adapter_and_modules(on: Run, adapter: str) -> None:
    result = on("manifests", "discover", "m")
    assert result.stderr == (
        "no adapter configured; use --adapter or add 'worker.adapter' to coflux.toml\n"
    )
    result = on("manifests", "--adapter", adapter, "discover")
    assert result.stderr == (
        "no modules specified; pass them as arguments or set 'worker.modules' in coflux.toml\n"
    )


def test_discover_failure_names_the_missing_sdk(on: Run, adapter: str) -> None:
    result = on("manifests", "--adapter", adapter, "discover", "broken")
    assert result.exit_code == 1
    assert result.stderr == (
        "discovery failed: discovery failed: the 'coflux' package does not appear to be "
        "installed in this environment\n"
    )


def test_adapter_and_modules_from_config(on: Run, adapter: str, tmp_path: Path) -> None:
    argv = adapter.split(",")
    (tmp_path / "coflux.toml").write_text(
        f"[worker]\nadapter = {json.dumps(argv)}\nmodules = ['shop']\n"
    )
    assert on("manifests", "discover").stdout == "shop.flows/nightly\nshop.other/plain\n"


def test_strict_config(on: Run, adapter: str, tmp_path: Path) -> None:
    (tmp_path / "coflux.toml").write_text("modules = ['shop']\n")
    result = on("manifests", "--adapter", adapter, "discover", "shop")
    assert result.exit_code == 1
    assert result.stderr.startswith("failed to unmarshal config: ")
    assert "invalid keys: modules" in result.stderr


def test_register_posts_camel_case_definitions(fake: FakeServer, on: Run, adapter: str) -> None:
    fake.on("POST", "/api/register_manifests", 204)
    result = on("manifests", "--adapter", adapter, "register", "shop")
    assert (result.exit_code, result.stdout) == (0, "Manifest(s) registered.\n")
    body = fake.calls("/api/register_manifests")[0].json
    assert body["workspaceId"] == "W1"
    assert set(body["manifests"]) == {"shop.flows", "shop.other"}
    assert body["manifests"]["shop.flows"]["nightly"] == {
        "parameters": [{"name": "region", "annotation": "<class 'str'>", "default": '"eu"'}],
        "waitFor": [0],
        "cache": {"params": True, "maxAge": 60000, "namespace": None, "version": None},
        "defer": None,
        "delay": 0,
        "retries": {"limit": 2, "backoffMin": 1000, "backoffMax": 0},
        "recurrent": True,
        "requires": None,
        "instruction": "Rebuild the nightly report.",
        "memo": None,
        "timeout": 600000,
        "streams": {"buffer": None},
    }


def test_register_failure(fake: FakeServer, on: Run, adapter: str) -> None:
    fake.on(
        "POST",
        "/api/register_manifests",
        400,
        {"error": "bad_request", "details": {"manifests": "invalid"}},
    )
    result = on("manifests", "--adapter", adapter, "register", "shop")
    assert result.stderr == (
        'failed to register manifests: bad_request:  (details: {"manifests":"invalid"})\n'
    )


def test_archive_and_inspect(fake: FakeServer, on: Run) -> None:
    fake.on("POST", "/api/archive_module", 204)
    assert on("manifests", "archive", "shop.flows").stdout == "Archived module 'shop.flows'.\n"
    assert fake.calls("/api/archive_module")[0].json == {
        "workspaceId": "W1",
        "moduleName": "shop.flows",
    }
    manifests = {
        "b.mod": {"z": {"parameters": []}, "a": {"parameters": [{"name": "x"}, {"name": "y"}]}}
    }
    fake.on("GET", "/topics/workspaces/W1/manifests", body=manifests)
    assert json.loads(on("-o", "json", "manifests", "inspect").stdout) == manifests
    assert on("manifests", "inspect").stdout == "b.mod\n  a  (x, y)\n  z\n"
    fake.on("GET", "/topics/workspaces/W1/manifests", body={})
    assert on("manifests", "inspect").stdout == "No modules registered.\n"
