"""Settings resolution: flag > COFLUX_* env > coflux.toml > default (cli.md §2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycoflux import errors
from pycoflux.cli.context import Context, GlobalFlags, check_config, is_localhost

from .conftest import FakeServer, Run


def ctx(env: dict[str, str] | None = None, **flags: str) -> Context:
    return Context(GlobalFlags(**flags), env or {})


@pytest.mark.parametrize("key", ["host", "workspace", "token", "output", "project"])
def test_precedence(tmp_path: Path, key: str) -> None:
    (tmp_path / "coflux.toml").write_text(f'{key} = "from-file"\n')
    env_name = f"COFLUX_{key.upper()}"
    assert getattr(ctx(), key) == "from-file"
    assert getattr(ctx({env_name: "from-env"}), key) == "from-env"
    assert getattr(ctx({env_name: "from-env"}, **{key: "from-flag"}), key) == "from-flag"


def test_defaults() -> None:
    c = ctx()
    assert (c.host, c.workspace, c.token, c.output, c.project) == (
        "localhost:7777",
        "default",
        None,
        None,
        None,
    )
    assert c.log_level == "info"


def test_config_path_resolution(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('host = "a"\n')
    (tmp_path / "b.toml").write_text('host = "b"\n')
    assert ctx({"COFLUX_CONFIG": "a.toml"}).host == "a"
    assert ctx({"COFLUX_CONFIG": "a.toml"}, config="b.toml").host == "b"
    assert ctx(config="missing.toml").host == "localhost:7777"


def test_broken_file_warns_and_continues(tmp_path: Path, on: Run, fake: FakeServer) -> None:
    (tmp_path / "coflux.toml").write_text("host = \n")
    result = on("workspaces", "list")
    assert result.exit_code == 0
    assert result.stderr.startswith("Warning: error reading config file: ")
    assert result.stdout == "Name     Base    \ndefault  (None)  \n"


@pytest.mark.parametrize(
    ("host", "secure"),
    [
        ("localhost:7777", False),
        ("localhost", False),
        ("p1.localhost:8000", False),
        ("127.0.0.1:1", False),
        ("[::1]:7777", False),
        ("example.com", True),
        ("coflux.example.com:443", True),
    ],
)
def test_secure_derivation(host: str, secure: bool) -> None:
    assert is_localhost(host) is not secure
    assert ctx(host=host).secure is secure


def test_secure_override() -> None:
    assert ctx({"COFLUX_SECURE": "false"}, host="example.com").secure is False
    assert ctx({"COFLUX_SECURE": "true"}, host="localhost").secure is True


def test_env_lists_split_on_commas_and_file_lists_are_arrays(tmp_path: Path) -> None:
    (tmp_path / "coflux.toml").write_text("[worker]\nprovides = ['a:1', 'b:2']\n")
    assert ctx().strings("worker.provides") == ["a:1", "b:2"]
    assert ctx({"COFLUX_WORKER_ADAPTER": "python3,/a.py,--manifest,/m.json"}).strings(
        "worker.adapter"
    ) == ["python3", "/a.py", "--manifest", "/m.json"]


def test_strict_check() -> None:
    check_config(
        {"host": "h", "worker": {"modules": ["m"]}, "blobs": {"stores": [{"type": "http"}]}}
    )
    with pytest.raises(errors.ConfigError, match="'' has invalid keys: modules"):
        check_config({"modules": ["m"]})
    with pytest.raises(errors.ConfigError, match="'worker' has invalid keys: bogus"):
        check_config({"worker": {"bogus": 1}})
    with pytest.raises(errors.ConfigError, match=r"'worker\.concurrency' expected type 'int'"):
        check_config({"worker": {"concurrency": "many"}})


def test_non_strict_commands_ignore_unknown_keys(tmp_path: Path, on: Run, fake: FakeServer) -> None:
    (tmp_path / "coflux.toml").write_text("modules = ['m']\n")
    assert on("workspaces", "list").exit_code == 0


def test_output_from_env_makes_json(fake: FakeServer, on: Run) -> None:
    result = on("workspaces", "list", env={"COFLUX_OUTPUT": "json"})
    assert result.stdout.startswith("{\n")


def test_unknown_coflux_variables_are_ignored(fake: FakeServer, on: Run) -> None:
    env = {"COFLUX_DATA_DIR": "/x", "COFLUX_REQUIRE_AUTH": "false", "COFLUX_WHATEVER": "1"}
    assert on("workspaces", "list", env=env).exit_code == 0


def test_host_from_env(fake: FakeServer, coflux: Run) -> None:
    result = coflux("workspaces", "list", env={"COFLUX_HOST": fake.host})
    assert result.exit_code == 0
    assert fake.requests[0].path == "/topics/workspaces"
