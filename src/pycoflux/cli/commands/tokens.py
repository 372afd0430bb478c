"""``coflux tokens list|create|revoke`` (cli.md §4.10)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import click

from pycoflux import errors
from pycoflux.cli import grammar, output
from pycoflux.cli.context import Context
from pycoflux.cli.grammar import flag


@click.group("tokens", cls=grammar.Group, help="Manage service tokens")
def tokens() -> None:
    pass


def _when(seconds: Any) -> str:
    # Token timestamps are seconds (server-api.md §0.1), unlike everything else.
    if not isinstance(seconds, int | float):
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")


def token_status(token: dict[str, Any], now: float) -> str:
    if token.get("revokedAt"):
        return "revoked"
    expires = token.get("expiresAt")
    if isinstance(expires, int | float) and expires < now:
        return "expired"
    return "active"


@tokens.command("list", cls=grammar.Command, help="List service tokens")
@click.pass_obj
def list_(obj: Context) -> output.Rendered:
    found = obj.client.topic("tokens") or {}
    if obj.json_output:
        return output.Json(found)
    now = time.time()
    rows = []
    for token_id in sorted(found, key=lambda k: (found[k] or {}).get("createdAt") or 0):
        token = found[token_id] or {}
        patterns = token.get("workspaces")
        rows.append(
            [
                str(token.get("externalId") or token_id),
                str(token.get("name") or "(unnamed)"),
                _when(token.get("createdAt")),
                token_status(token, now),
                ", ".join(patterns) if patterns else "(all)",
            ]
        )
    return output.Table(
        ["ID", "Name", "Created", "Status", "Workspaces"], rows, empty="No tokens found."
    )


@tokens.command("create", cls=grammar.Command, help="Create a service token")
@flag("--name", help="Token name")
@flag("--workspaces", help="Comma-separated workspace patterns (default: all)")
@click.pass_obj
def create(obj: Context, name: str | None, workspaces: str | None) -> output.Rendered:
    body: dict[str, Any] = {}
    if name:
        body["name"] = name
    patterns = [p.strip() for p in (workspaces or "").split(",") if p.strip()]
    if patterns:
        body["workspaces"] = patterns
    response = obj.client.call("create_token", body) or {}
    if obj.json_output:
        return output.Json(response)
    return output.Text.of(
        "Token created successfully.",
        "",
        f"Token: {response.get('token')}",
        f"Workspaces: {workspaces}" if patterns else "Workspaces: (all)",
        "",
        "Copy this now, it won't be shown again.",
    )


@tokens.command(
    "revoke", cls=grammar.Command, arg_rule=grammar.exact(1), help="Revoke a service token"
)
@click.argument("token_id")
@click.pass_obj
def revoke(obj: Context, token_id: str) -> output.Rendered:
    found = obj.client.topic("tokens") or {}
    token = found.get(token_id) or next(
        (t for t in found.values() if isinstance(t, dict) and t.get("externalId") == token_id),
        None,
    )
    if not isinstance(token, dict):
        raise errors.ClientError(f"token '{token_id}' not found")
    if token.get("revokedAt"):
        raise errors.ClientError(f"token '{token_id}' is already revoked")
    obj.client.call("revoke_token", {"externalId": token_id})
    return output.Text.of(f"Token '{token_id}' has been revoked.")


def register(root: click.Group) -> None:
    root.add_command(tokens)
