"""The settings table: parsing, start-up description, the generated docs and the CLI flags."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import click
import pytest

from pycoflux import errors
from pycoflux.cli.commands import server as server_command
from pycoflux.server import app, config

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
S3CRET_HASH = hashlib.sha256(b"s3cret").hexdigest()


def test_defaults_with_no_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    resolved = config.from_env({})
    assert resolved.port == 7777
    assert resolved.data_dir == tmp_path / "data"
    assert resolved.require_auth is True
    assert resolved.studio_teams is None and not resolved.studio_enabled
    assert resolved.allow_origins == ("https://studio.coflux.com",)
    assert resolved.studio_url == "https://studio.coflux.com"
    assert resolved.launcher_types == ()
    assert resolved.cli_path == "coflux"


def test_values_are_parsed(tmp_path: Path) -> None:
    resolved = config.from_env(
        {
            "PORT": "8123",
            "COFLUX_DATA_DIR": str(tmp_path / "x"),
            "COFLUX_PUBLIC_HOST": "%.localhost:7777",
            "COFLUX_STUDIO_TEAMS": " t1, ,t2 ",
            "COFLUX_ALLOW_ORIGINS": "https://a.example, https://*.b.example",
            "COFLUX_LAUNCHER_TYPES": "docker,process",
            "COFLUX_SUPER_TOKEN_HASH": S3CRET_HASH.upper(),
        }
    )
    assert resolved.port == 8123
    assert resolved.data_dir == tmp_path / "x"
    assert resolved.base_domain == "localhost"
    assert resolved.studio_teams == ("t1", "t2")
    assert resolved.allow_origins == ("https://a.example", "https://*.b.example")
    assert resolved.launcher_types == ("docker", "process")
    assert resolved.super_token_hash == S3CRET_HASH


@pytest.mark.parametrize(
    ("value", "required"),
    [("false", False), ("FALSE", False), ("False", False), ("0", True), ("no", True), ("", True)],
)
def test_require_auth_is_off_only_for_false(value: str, required: bool) -> None:
    assert config.from_env({"COFLUX_REQUIRE_AUTH": value}).require_auth is required


def test_empty_values_behave_as_unset_where_the_spec_says_so() -> None:
    resolved = config.from_env(
        {"COFLUX_PUBLIC_HOST": "", "COFLUX_SECRET": "", "COFLUX_SUPER_TOKEN_HASH": ""}
    )
    assert resolved.public_host is None and resolved.base_domain is None
    assert resolved.secret is None and resolved.super_token_hash is None
    # ...but an empty team list or origin list is "set": Studio on with no team, no origin.
    assert config.from_env({"COFLUX_STUDIO_TEAMS": ""}).studio_teams == ()
    assert config.from_env({"COFLUX_ALLOW_ORIGINS": ""}).allow_origins == ()


def test_deprecated_aliases(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pycoflux.server"):
        legacy = config.from_env({"COFLUX_NAMESPACES": "t1", "COFLUX_SUPER_TOKEN": "s3cret"})
    assert legacy.studio_teams == ("t1",)
    assert legacy.legacy_super_token == "s3cret"
    assert "COFLUX_NAMESPACES is deprecated" in caplog.text
    assert "COFLUX_SUPER_TOKEN is deprecated" in caplog.text
    assert "s3cret" not in caplog.text
    current = config.from_env(
        {
            "COFLUX_NAMESPACES": "t1",
            "COFLUX_STUDIO_TEAMS": "t2",
            "COFLUX_SUPER_TOKEN": "other",
            "COFLUX_SUPER_TOKEN_HASH": S3CRET_HASH,
        }
    )
    assert current.studio_teams == ("t2",)
    assert current.legacy_super_token is None
    assert current.super_token_hash == S3CRET_HASH


def test_unknown_launcher_types_are_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="pycoflux.server"):
        resolved = config.from_env({"COFLUX_LAUNCHER_TYPES": "foo,process"})
    assert resolved.launcher_types == ("process",)
    assert "'foo'" in caplog.text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "abc"}, "PORT: must be an integer, got 'abc'"),
        ({"PORT": "70000"}, "PORT: must be between 1 and 65535"),
        ({"COFLUX_PROJECT": "../etc"}, "COFLUX_PROJECT: '../etc' is not a valid project id"),
        ({"COFLUX_SUPER_TOKEN_HASH": "abc"}, "COFLUX_SUPER_TOKEN_HASH: must be the 64-character"),
        ({"COFLUX_STUDIO_URL": "studio"}, "COFLUX_STUDIO_URL: must be an http(s) URL"),
        ({"COFLUX_MAX_BODY_SIZE": "-1"}, "COFLUX_MAX_BODY_SIZE: must not be negative"),
        ({"COFLUX_AUTH_FAILURE_LIMIT": "0"}, "COFLUX_AUTH_FAILURE_LIMIT: must be at least 1"),
        ({"COFLUX_OIDC_ALGORITHMS": "HS256"}, "COFLUX_OIDC_ALGORITHMS: unsupported algorithm"),
        ({"COFLUX_OIDC_ISSUER": "https://idp"}, "COFLUX_OIDC_AUDIENCE: must be set"),
        ({"COFLUX_OIDC_AUDIENCE": "x"}, "COFLUX_OIDC_ISSUER: must be set"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(errors.ConfigError) as raised:
        config.from_env(env)
    assert str(raised.value).startswith(message)


def test_unwritable_data_dir_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    resolved = config.from_env({"COFLUX_DATA_DIR": str(tmp_path / "file" / "sub")})
    with pytest.raises(errors.ConfigError, match=r"^COFLUX_DATA_DIR: cannot use "):
        app.check_data_dir(resolved)


def test_describe_shows_every_setting_and_hides_secrets(tmp_path: Path) -> None:
    resolved = config.from_env(
        {
            "COFLUX_DATA_DIR": str(tmp_path),
            "COFLUX_SECRET": "very-secret-value",
            "COFLUX_SUPER_TOKEN_HASH": S3CRET_HASH,
        }
    )
    lines = config.describe(resolved)
    assert len(lines) == len(config.SETTINGS)
    text = "\n".join(lines)
    assert "very-secret-value" not in text and S3CRET_HASH not in text
    shown = {line.split()[0]: " ".join(line.split()[1:]) for line in lines}
    assert shown["COFLUX_SECRET"] == "set"
    assert shown["COFLUX_SUPER_TOKEN_HASH"] == "set"
    assert shown["COFLUX_SUPER_TOKEN"] == "not set"
    assert shown["COFLUX_DATA_DIR"] == str(tmp_path)
    assert "very-secret-value" not in repr(resolved)


def test_every_setting_has_a_field_and_the_doc_is_current() -> None:
    assert {s.field for s in config.SETTINGS} == config.field_names()
    assert DOC.read_text() == config.reference(), (
        "docs/configuration.md is stale: regenerate it with"
        " `.venv/bin/python -c 'from pycoflux.server import config;"
        ' open("docs/configuration.md", "w").write(config.reference())\'`'
    )
    for setting in config.SETTINGS:
        assert f"`{setting.env}`" in DOC.read_text()


def test_every_server_flag_maps_onto_a_setting() -> None:
    flags = {
        f"--{p.name.replace('_', '-')}"
        for p in server_command.server.params
        if isinstance(p, click.Option)
    }
    wrapper_only = {"--image", "--super-token"}
    assert flags - wrapper_only == {s.flag for s in config.SETTINGS if s.flag}


def test_the_wrapper_maps_flags_onto_the_variables(tmp_path: Path) -> None:
    options = server_command.ServerOptions(
        port=8001,
        data_dir=tmp_path / "d",
        project="p1",
        public_host="p1.example.com",
        no_auth=True,
        super_token_hash=S3CRET_HASH,
        secret="s",
        teams=["a", "b"],
        launchers=["docker", "process"],
        studio_url="http://studio.test",
        allow_origins=["http://o1", "http://o2"],
        image=None,
    )
    env = dict(server_command.server_environment(options, auth_from_config=False))
    assert env == {
        "COFLUX_PROJECT": "p1",
        "COFLUX_PUBLIC_HOST": "p1.example.com",
        "COFLUX_REQUIRE_AUTH": "false",
        "COFLUX_SUPER_TOKEN_HASH": S3CRET_HASH,
        "COFLUX_SECRET": "s",
        "COFLUX_STUDIO_TEAMS": "a,b",
        "COFLUX_LAUNCHER_TYPES": "docker,process",
        "COFLUX_STUDIO_URL": "http://studio.test",
        "COFLUX_ALLOW_ORIGINS": "http://o1,http://o2",
    }
    resolved = server_command.server_config(options, {"COFLUX_CLI_PATH": "/x/coflux"})
    assert resolved == config.from_env(
        {
            **env,
            "PORT": "8001",
            "COFLUX_DATA_DIR": str(tmp_path / "d"),
            "COFLUX_CLI_PATH": "/x/coflux",
        }
    )
