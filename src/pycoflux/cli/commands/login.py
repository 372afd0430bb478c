"""``coflux login`` / ``coflux logout``: Studio device authorisation (cli.md §4.16)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import click

from pycoflux.cli import grammar, output, studio
from pycoflux.cli.context import Context
from pycoflux.cli.grammar import flag

# Replaceable in tests: polling waits at least five seconds between requests.
sleep = time.sleep


def open_browser(url: str) -> bool:
    if sys.platform == "darwin":
        argv = ["open", url]
    elif sys.platform == "win32":
        argv = ["cmd", "/c", "start", "", url]
    else:
        argv = ["xdg-open", url]
    try:
        subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
    except OSError:
        return False
    return True


@click.command("login", cls=grammar.Command, help="Log in to Coflux Studio")
@flag("--no-browser", kind="bool", help="Don't open the browser automatically")
@click.pass_obj
def login(obj: Context, no_browser: bool) -> output.Rendered:
    base = studio.studio_url(obj.environ)
    click.echo("Starting authentication with Coflux Studio...")
    flow = studio.start_device_flow(base, socket.gethostname())
    click.echo("")
    click.echo("  " + str(flow.get("verification_uri") or ""))
    click.echo("")
    if not no_browser and not open_browser(str(flow.get("verification_uri") or "")):
        click.echo("(Unable to open browser automatically)")
    click.echo("Waiting for authentication...")
    granted = studio.poll_device_flow(base, flow, sleep=lambda seconds: sleep(seconds))
    studio.save_credentials(granted)
    email = granted.get("user_email")
    return output.Text.of(
        "Authentication successful!" + (f" Logged in as {email}" if email else "")
    )


@click.command("logout", cls=grammar.Command, help="Log out of Coflux Studio")
def logout() -> output.Rendered:
    studio.forget_credentials()
    return output.Text.of("Logged out successfully.")


def register(root: click.Group) -> None:
    root.add_command(login)
    root.add_command(logout)
