"""``coflux workspaces`` (cli.md §4.7)."""

from __future__ import annotations

from .conftest import FakeServer, Run


def test_list_table(fake: FakeServer, on: Run) -> None:
    fake.workspaces["W2"] = {"name": "dev/joe", "baseId": "W1", "state": "active"}
    fake.workspaces["W3"] = {"name": "old", "baseId": None, "state": "archived"}
    assert on("workspaces", "list").stdout == (
        "Name     Base     \ndefault  (None)   \ndev/joe  default  \n"
    )


def test_list_empty(fake: FakeServer, on: Run) -> None:
    fake.workspaces.clear()
    assert on("workspaces", "list").stdout == "No workspaces found.\n"


def test_create_twice_fails_with_the_server_error(fake: FakeServer, on: Run) -> None:
    first = on("workspaces", "create", "x")
    assert (first.exit_code, first.stdout) == (0, "Created workspace 'x'.\n")
    second = on("workspaces", "create", "x")
    assert second.exit_code == 1
    assert second.stderr == 'bad_request:  (details: {"name":"exists"})\n'


def test_create_with_base(fake: FakeServer, on: Run) -> None:
    on("workspaces", "create", "y", "--base", "default")
    assert fake.calls("/api/create_workspace")[-1].json == {"name": "y", "baseId": "W1"}
    missing = on("workspaces", "create", "z", "--base", "missing")
    assert (missing.exit_code, missing.stderr) == (1, "base workspace not found: missing\n")


def test_update(fake: FakeServer, on: Run) -> None:
    fake.on("POST", "/api/update_workspace", 204)
    assert on("workspaces", "update", "--name", "main").stdout == "Updated workspace 'main'.\n"
    assert fake.calls("/api/update_workspace")[-1].json == {"workspaceId": "W1", "name": "main"}
    on("workspaces", "update", "--no-base")
    assert fake.calls("/api/update_workspace")[-1].json == {"workspaceId": "W1", "baseId": None}
    on("workspaces", "update", "--no-base", "--base", "default")
    assert fake.calls("/api/update_workspace")[-1].json == {"workspaceId": "W1", "baseId": "W1"}


def test_pause_resume_archive_act_on_the_selected_workspace(fake: FakeServer, on: Run) -> None:
    fake.workspaces["W2"] = {"name": "dev", "baseId": None, "state": "active"}
    for action, past in (("pause", "Paused"), ("resume", "Resumed"), ("archive", "Archived")):
        fake.on("POST", f"/api/{action}_workspace", 204)
        result = on("-w", "dev", "workspaces", action, "ignored-extra")
        assert result.stdout == f"{past} workspace 'dev'.\n"
        assert fake.calls(f"/api/{action}_workspace")[0].json == {"workspaceId": "W2"}


def test_empty_workspace_is_rejected(on: Run) -> None:
    result = on("workspaces", "pause", env={"COFLUX_WORKSPACE": ""})
    assert result.stderr == (
        "workspace is required (use --workspace, COFLUX_WORKSPACE, or set in config)\n"
    )
