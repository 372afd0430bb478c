"""HTTP error mapping and transport failures (cli.md §3.2)."""

from __future__ import annotations

import pytest

from .conftest import FakeServer, Run


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (404, {"error": "not_found"}, "not_found: "),
        (409, {"error": "already_exists"}, "already_exists: "),
        (
            400,
            {"error": "bad_request", "details": {"name": "exists"}},
            'bad_request:  (details: {"name":"exists"})',
        ),
        (
            422,
            {"error": "validation_failed", "details": "/: type"},
            'validation_failed:  (details: "/: type")',
        ),
        (400, {"error": "bad_request", "message": "nope"}, "bad_request: nope"),
        (500, "boom", "HTTP 500: boom"),
        (
            409,
            {"error": "version_mismatch", "details": {"server": "0.13.0", "expected": "0.12"}},
            "version mismatch: this CLI expects API version 0.12, but the server is version "
            "0.13.0 — upgrade the server or use a compatible CLI version",
        ),
    ],
)
def test_error_mapping(fake: FakeServer, on: Run, status: int, body: object, message: str) -> None:
    fake.on("POST", "/api/create_workspace", status, body)
    result = on("workspaces", "create", "x")
    assert result.exit_code == 1
    assert result.stderr == message + "\n"


def test_server_down(coflux: Run) -> None:
    result = coflux("--host", "127.0.0.1:9", "runs", "result", "R1")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "failed to get workspaces: request failed: GET http://127.0.0.1:9/topics/workspaces"
    )


def test_https_for_remote_hosts(coflux: Run) -> None:
    result = coflux("--host", "nonexistent.invalid", "workspaces", "list")
    assert "request failed: GET https://nonexistent.invalid/topics/workspaces" in result.stderr
