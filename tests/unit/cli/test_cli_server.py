"""``coflux server`` option resolution and hand-over (cli.md §4.2, auth-and-config.md §3)."""

from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from pycoflux.cli.commands import server as server_command

from .conftest import Run


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Replace ``pycoflux.server.app`` with a module whose serve() records its config."""
    calls: list[Any] = []
    module = types.ModuleType("pycoflux.server.app")
    module.serve = calls.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycoflux.server.app", module)
    return calls


def test_defaults(coflux: Run, served: list[Any], tmp_path: Path) -> None:
    result = coflux("server")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        'No project specified, using "default"\n'
        "Starting Coflux server on port 7777...\n"
        f"Data directory: {tmp_path / 'data'}\n"
    )
    [config] = served
    assert config.port == 7777
    assert config.data_dir == tmp_path / "data"
    assert config.project == "default"
    assert config.require_auth is True
    assert (tmp_path / "data").is_dir()


def test_flags(coflux: Run, served: list[Any], tmp_path: Path) -> None:
    result = coflux(
        "server",
        "-p",
        "8001",
        "-d",
        "store",
        "--project",
        "p1",
        "--no-auth",
        "--super-token",
        "t",
        "--secret",
        "s",
        "--team",
        "a,b",
        "--team",
        "c",
        "--launcher",
        "process",
        "--allow-origin",
        "http://x",
        "--studio-url",
        "http://studio/",
    )
    assert result.exit_code == 0, result.stderr
    assert "No project specified" not in result.stdout
    [config] = served
    assert config.port == 8001
    assert config.data_dir == tmp_path / "store"
    assert config.project == "p1"
    assert config.require_auth is False
    assert config.super_token_hash == hashlib.sha256(b"t").hexdigest()
    assert config.secret == "s"
    assert config.studio_teams == ("a", "b", "c")
    assert config.launcher_types == ("process",)
    assert config.allow_origins == ("http://x",)
    assert config.studio_url == "http://studio/"  # verbatim: it is the JWT issuer


def test_env_and_file_layers(coflux: Run, served: list[Any], tmp_path: Path) -> None:
    (tmp_path / "coflux.toml").write_text(
        f"[server]\nport = 9000\nproject = 'from-file'\nauth = false\nsuper_token_hash = '{'AB' * 32}'\n"
    )
    env = {"COFLUX_SERVER_PORT": "9100", "PORT": "9200"}
    result = coflux("server", env=env)
    assert result.exit_code == 0, result.stderr
    [config] = served
    assert (config.port, config.project, config.require_auth) == (9100, "from-file", False)
    assert config.super_token_hash == "ab" * 32


def test_servers_own_environment_is_the_base(
    coflux: Run, served: list[Any], tmp_path: Path
) -> None:
    env = {"PORT": "9300", "COFLUX_PROJECT": "envproj", "COFLUX_DATA_DIR": str(tmp_path / "d")}
    coflux("server", env=env)
    [config] = served
    assert (config.port, config.project, config.data_dir) == (9300, "envproj", tmp_path / "d")


def test_percent_public_host_means_multi_project(coflux: Run, served: list[Any]) -> None:
    result = coflux("server", "--public-host", "%.localhost:7777")
    assert "No project specified" not in result.stdout
    assert served[0].project is None
    assert served[0].public_host == "%.localhost:7777"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--port", "abc"], {}, 'invalid argument "abc" for "-p, --port" flag'),
        ([], {"COFLUX_SERVER_PORT": "abc"}, "invalid server port: 'abc' is not an integer"),
        (["--port", "70000"], {}, "invalid server port: 70000"),
        (["--launcher", "bogus"], {}, 'invalid launcher type "bogus"'),
        (
            ["--super-token", "a", "--super-token-hash", "b"],
            {},
            "if any flags in the group [super-token super-token-hash] are set",
        ),
    ],
)
def test_invalid_values(
    coflux: Run, served: list[Any], args: list[str], env: dict[str, str], message: str
) -> None:
    result = coflux("server", *args, env=env)
    assert result.exit_code == 1
    assert message in result.stderr
    assert served == []


def test_unwritable_data_dir(coflux: Run, served: list[Any], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = coflux("server", "-d", str(tmp_path / "file" / "sub"))
    assert result.exit_code == 1
    assert result.stderr.startswith("invalid data directory ")
    assert served == []


def test_docker_command_line(tmp_path: Path) -> None:
    options = server_command.ServerOptions(
        port=8000,
        data_dir=tmp_path / "data",
        project="default",
        public_host=None,
        no_auth=True,
        super_token_hash=hashlib.sha256(b"t").hexdigest(),
        secret=None,
        teams=["t1", "t2"],
        launchers=["docker", "process"],
        studio_url=None,
        allow_origins=None,
        image="ghcr.io/bitroot/coflux:0.12",
    )
    assert server_command.docker_argv(options, auth_from_config=False) == [
        "docker",
        "run",
        "--rm",
        "--pull",
        "always",
        "--publish",
        "8000:7777",
        "--volume",
        f"{tmp_path / 'data'}:/data",
        "--env",
        "ERL_FLAGS=+Bd",
        "--env",
        "COFLUX_PROJECT=default",
        "--env",
        "COFLUX_REQUIRE_AUTH=false",
        "--env",
        f"COFLUX_SUPER_TOKEN_HASH={hashlib.sha256(b't').hexdigest()}",
        "--env",
        "COFLUX_STUDIO_TEAMS=t1,t2",
        "--env",
        "COFLUX_LAUNCHER_TYPES=docker,process",
        "ghcr.io/bitroot/coflux:0.12",
    ]


def test_image_runs_docker(coflux: Run, monkeypatch: pytest.MonkeyPatch, served: list[Any]) -> None:
    launched: list[list[str]] = []

    def fake_run(argv: list[str]) -> int:
        launched.append(argv)
        return 3

    monkeypatch.setattr(server_command, "run_docker", fake_run)
    result = coflux("server", "--image", "sha256:abc")
    assert result.exit_code == 3
    assert launched[0][3:5] == ["--pull", "missing"]
    assert launched[0][-1] == "sha256:abc"
    assert served == []
