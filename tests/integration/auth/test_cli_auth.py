"""The CLI's side of authentication against the real server and the local identity provider:
``coflux login``/``logout``, the team project-token exchange, and ``coflux tokens``."""

from __future__ import annotations

import json
import os
import secrets
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pycoflux.cli.commands import login as login_command
from pycoflux.cli.main import cli
from tests.integration.auth.conftest import SUPER
from tests.support.idp import IdentityProvider
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, idp: IdentityProvider) -> Path:
    for key in list(os.environ):
        if key.startswith("COFLUX_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("COFLUX_STUDIO_URL", idp.url)
    monkeypatch.chdir(tmp_path)
    idp.polls = 0
    idp.pending_polls = 2
    idp.device_outcome = "grant"
    idp.studio_session = f"studio-session-{secrets.token_hex(8)}"
    return tmp_path / ".config" / "coflux"


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Polling intervals asked for; nothing actually sleeps."""
    asked: list[float] = []
    monkeypatch.setattr(login_command, "sleep", asked.append)
    return asked


def coflux(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_login_polls_and_saves_private_credentials(
    home: Path, waits: list[float], idp: IdentityProvider
) -> None:
    (home).mkdir(parents=True)
    (home / "token_cache.json").write_text("{}")
    result = coflux("login", "--no-browser")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "Starting authentication with Coflux Studio...",
        "",
        f"  {idp.url}/activate?code=ABCD",
        "",
        "Waiting for authentication...",
        "Authentication successful! Logged in as joe@example.com",
    ]
    assert idp.device_names[-1] == socket.gethostname()
    assert idp.polls == 3 and waits == [5.0, 5.0, 5.0]  # interval 1 is raised to 5 s
    credentials = home / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert json.loads(credentials.read_text()) == {
        "studio_token": idp.studio_session,
        "user_email": "joe@example.com",
        "user_id": idp.user_id,
    }
    assert not (home / "token_cache.json").exists()

    assert coflux("logout").output == "Logged out successfully.\n"
    assert not credentials.exists()
    assert coflux("logout").exit_code == 0


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        ("expired", "authentication failed: device code has expired"),
        ("denied", "authentication failed: access_denied: user said no"),
    ],
)
def test_login_failures(
    home: Path, waits: list[float], idp: IdentityProvider, outcome: str, message: str
) -> None:
    idp.device_outcome = outcome
    result = CliRunner().invoke(cli, ["login", "--no-browser"])
    assert result.exit_code == 1
    assert message in result.output
    assert not (home / "credentials.json").exists()


def test_team_commands_exchange_the_studio_login_for_a_project_token(
    home: Path, waits: list[float], idp: IdentityProvider, secured: ServerProcess
) -> None:
    host = f"127.0.0.1:{secured.port}"
    common = ["--host", host, "--project", "test"]
    not_logged_in = CliRunner().invoke(cli, [*common, "--team", "t1", "workspaces", "list"])
    assert not_logged_in.exit_code == 1
    assert "not logged in to Studio (run 'coflux login'" in not_logged_in.output

    assert coflux("login", "--no-browser").exit_code == 0
    before = len(idp.exchanges)
    first = coflux(*common, "--team", "t1", "-o", "json", "workspaces", "list")
    assert first.exit_code == 0, first.output
    assert idp.exchanges[before:] == [{"team": "t1", "host": host}]
    cache = json.loads((home / "token_cache.json").read_text())
    assert set(cache) == {f"t1:{host}"}
    assert stat.S_IMODE((home / "token_cache.json").stat().st_mode) == 0o600
    assert coflux(*common, "--team", "t1", "workspaces", "list").exit_code == 0
    assert len(idp.exchanges) == before + 1  # cached until 60 s before it expires

    # An explicit token bypasses Studio entirely.
    (home / "token_cache.json").unlink()
    assert coflux(*common, "--team", "t1", "--token", SUPER, "workspaces", "list").exit_code == 0
    assert len(idp.exchanges) == before + 1

    idp.studio_session = "rotated-elsewhere"
    expired = CliRunner().invoke(cli, [*common, "--team", "t1", "workspaces", "list"])
    assert expired.exit_code == 1
    assert "Studio session is invalid or expired (run 'coflux login'" in expired.output


def test_tokens_commands(home: Path, secured: ServerProcess) -> None:
    common = ["--host", f"127.0.0.1:{secured.port}", "--project", "test", "--token", SUPER]
    created = coflux(*common, "tokens", "create", "--name", "ci", "--workspaces", "a/*, b")
    assert created.exit_code == 0, created.output
    lines = created.output.splitlines()
    assert lines[0] == "Token created successfully."
    token = lines[2].removeprefix("Token: ")
    assert token.startswith("cflx_") and lines[3] == "Workspaces: a/*, b"

    listed = coflux(*common, "-o", "json", "tokens", "list")
    entries: dict[str, Any] = json.loads(listed.output)
    [entry] = [e for e in entries.values() if e["name"] == "ci"]
    assert entry["workspaces"] == ["a/*", "b"]
    table = coflux(*common, "tokens", "list").output
    assert entry["externalId"] in table and "a/*, b" in table

    revoked = coflux(*common, "tokens", "revoke", entry["externalId"])
    assert revoked.output == f"Token '{entry['externalId']}' has been revoked.\n"
    again = CliRunner().invoke(cli, [*common, "tokens", "revoke", entry["externalId"]])
    assert again.exit_code == 1
    assert f"token '{entry['externalId']}' not found" in again.output
    refused = CliRunner().invoke(
        cli, ["--host", f"127.0.0.1:{secured.port}", "--token", token, "workspaces", "list"]
    )
    assert refused.exit_code == 1
    assert "unauthorized" in refused.output
