"""``coflux server``: run the pycoflux server in the foreground (or the Docker image).

Upstream's command wraps ``docker run``; ours serves in-process by default and keeps the
Docker behaviour (cli.md §4.2) for when an image is named. Either way the settings resolve
the same: flag > ``COFLUX_SERVER_*`` env > ``[server]`` in coflux.toml > the server's own
environment (``PORT``, ``COFLUX_DATA_DIR``, ...) > defaults.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from pycoflux import errors
from pycoflux.cli import grammar, output
from pycoflux.cli.context import Context
from pycoflux.cli.grammar import flag
from pycoflux.protocol import version

LAUNCHER_TYPES = ("docker", "process", "kubernetes", "ecs")
DEFAULT_IMAGE = "ghcr.io/bitroot/coflux"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServerOptions:
    """The wrapper's resolved options (cli.md §4.2), before they become a ServerConfig."""

    port: int
    data_dir: Path
    project: str | None
    public_host: str | None
    no_auth: bool
    super_token_hash: str | None
    secret: str | None
    teams: list[str] | None
    launchers: list[str] | None
    studio_url: str | None
    allow_origins: list[str] | None
    image: str | None


def resolve(
    obj: Context,
    base: Any,
    *,
    port: int | None,
    data_dir: str | None,
    project: str | None,
    public_host: str | None,
    no_auth: bool,
    super_token: str | None,
    super_token_hash: str | None,
    secret: str | None,
    team: tuple[str, ...],
    launcher: tuple[str, ...],
    studio_url: str | None,
    allow_origin: tuple[str, ...],
    image: str | None,
) -> ServerOptions:
    """Resolve every option; ``base`` is the ServerConfig read from the server's own env."""
    if port is None:
        try:
            port = obj.integer("server.port")
        except errors.ConfigError:
            raise errors.ConfigError(
                f"invalid server port: {obj.raw('server.port')!r} is not an integer"
            ) from None
    if not port:
        port = int(base.port) or 7777
    if not 0 < port < 65536:
        raise errors.ConfigError(f"invalid server port: {port} (must be between 1 and 65535)")

    directory = Path(obj.string("server.data_dir", data_dir) or base.data_dir).expanduser()
    directory = Path(os.path.abspath(directory))

    token_hash = (
        hash_token(super_token)
        if super_token
        else super_token_hash
        or (hash_token(t) if (t := obj.string("server.super_token")) else None)
        or obj.string("server.super_token_hash")
        or base.super_token_hash
    )

    auth = obj.boolean("server.auth")
    launchers = list(launcher) or obj.strings("server.launcher_types") or None
    for name in launchers or ():
        if name not in LAUNCHER_TYPES:
            raise errors.ConfigError(
                f'invalid launcher type "{name}" (expected one of: {", ".join(LAUNCHER_TYPES)})'
            )
    return ServerOptions(
        port=port,
        data_dir=directory,
        project=obj.string("server.project", project) or base.project,
        public_host=obj.string("server.public_host", public_host) or base.public_host,
        no_auth=no_auth or auth is False,
        super_token_hash=token_hash.lower() if token_hash else None,
        secret=obj.string("server.secret", secret) or base.secret,
        teams=list(team) or obj.strings("server.studio_teams") or None,
        launchers=launchers,
        studio_url=obj.string("server.studio_url", studio_url),
        allow_origins=list(allow_origin) or obj.strings("server.allow_origins") or None,
        image=obj.string("server.image", image),
    )


def prepare_data_dir(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise errors.ConfigError(
            f"invalid data directory {str(directory)!r} (--data-dir, COFLUX_DATA_DIR): {reason}"
        ) from None
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise errors.ConfigError(
            f"invalid data directory {str(directory)!r} (--data-dir, COFLUX_DATA_DIR): not writable"
        )


def server_environment(options: ServerOptions, *, auth_from_config: bool) -> list[tuple[str, str]]:
    """The ``COFLUX_*`` variables the options stand for, in cli.md §4.2's order, if set."""
    env: list[tuple[str, str | None]] = [
        ("COFLUX_PROJECT", options.project),
        ("COFLUX_PUBLIC_HOST", options.public_host),
        ("COFLUX_REQUIRE_AUTH", "false" if options.no_auth and not auth_from_config else None),
        ("COFLUX_SUPER_TOKEN_HASH", options.super_token_hash),
        ("COFLUX_SECRET", options.secret),
        ("COFLUX_STUDIO_TEAMS", ",".join(options.teams) if options.teams else None),
        ("COFLUX_LAUNCHER_TYPES", ",".join(options.launchers) if options.launchers else None),
        ("COFLUX_STUDIO_URL", options.studio_url),
        (
            "COFLUX_ALLOW_ORIGINS",
            ",".join(options.allow_origins) if options.allow_origins else None,
        ),
        ("COFLUX_REQUIRE_AUTH", "false" if options.no_auth and auth_from_config else None),
    ]
    return [(name, value) for name, value in env if value]


def image_reference(image: str) -> str:
    """``image`` tagged with the API version when it names neither a tag nor a digest.

    Upstream's default image is tagged with the CLI's API version (``:0.12``) so that patch
    releases are picked up; Docker is opt-in here, so the same rule applies to the named
    image: ``--image ghcr.io/bitroot/coflux`` runs ``ghcr.io/bitroot/coflux:0.12``.
    """
    if image.startswith("sha256:") or "@" in image or ":" in image.rpartition("/")[2]:
        return image
    return f"{image}:{'latest' if version.API_VERSION == 'dev' else version.API_VERSION}"


def docker_argv(options: ServerOptions, *, auth_from_config: bool) -> list[str]:
    """The ``docker run`` command line of cli.md §4.2 step 5."""
    image = image_reference(options.image or DEFAULT_IMAGE)
    pull = "missing" if image.startswith("sha256:") else "always"
    argv = [
        "docker",
        "run",
        "--rm",
        "--pull",
        pull,
        "--publish",
        f"{options.port}:7777",
        "--volume",
        f"{options.data_dir}:/data",
        "--env",
        "ERL_FLAGS=+Bd",
    ]
    for name, value in server_environment(options, auth_from_config=auth_from_config):
        argv += ["--env", f"{name}={value}"]
    return [*argv, image]


def run_docker(argv: list[str]) -> int:
    try:
        proc = subprocess.Popen(argv, start_new_session=True)
    except OSError as e:
        raise errors.CofluxError(f"failed to start docker: {e}") from None
    while True:
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            # docker runs in its own process group, so Ctrl-C reaches it only through us.
            proc.send_signal(signal.SIGTERM)
            continue
        # Killed by a signal: report it the way a shell does (128 + signal number).
        return code if code >= 0 else 128 - code


def server_config(options: ServerOptions, environ: Mapping[str, str]) -> Any:
    """The in-process server's config: the options as ``COFLUX_*`` variables over ``environ``.

    Going through the variables keeps one parser (``server.config.from_env``) for both the
    wrapper and a server started from its environment, so a bad value fails the same way.
    """
    from pycoflux.server import config as server_config_module

    env = dict(environ)
    env.update(server_environment(options, auth_from_config=False))
    env["PORT"] = str(options.port)
    env["COFLUX_DATA_DIR"] = str(options.data_dir)
    if "COFLUX_CLI_PATH" not in env:
        # Pool-launched workers run `<cli_path> worker ...`; point them at this very CLI
        # when it was started by path rather than found on PATH.
        me = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
        if os.path.basename(me) == "coflux" and os.access(me, os.X_OK):
            env["COFLUX_CLI_PATH"] = me
    return server_config_module.from_env(env)


def starting(options: ServerOptions) -> None:
    click.echo(f"Starting Coflux server on port {options.port}...")
    click.echo(f"Data directory: {options.data_dir}")
    sys.stdout.flush()


@click.command(
    "server",
    cls=grammar.Command,
    exclusive=[("super-token", "super-token-hash")],
    help="Start a Coflux server in the foreground",
)
@flag("--port", "-p", kind="int", help="Port to listen on (default 7777)")
@flag("--data-dir", "-d", help="Data directory (default ./data)")
@flag(
    "--image",
    help="Run this Docker image instead of the built-in server (untagged: the API version tag)",
)
@flag("--project", help="Project id (default 'default' unless --public-host starts with %)")
@flag("--public-host", help="Public host; a leading % enables subdomain projects")
@flag("--no-auth", kind="bool", help="Disable authentication")
@flag("--super-token", help="Super token (hashed before use)")
@flag("--super-token-hash", help="SHA-256 hex of the super token")
@flag("--secret", help="Secret for signing service tokens")
@flag("--team", kind="slice", help="Studio team allowed to access the server (repeatable)")
@flag("--launcher", kind="slice", help="Enabled launcher types: docker, process, kubernetes")
@flag("--studio-url", hidden=True)
@flag("--allow-origin", kind="slice", hidden=True)
@click.pass_obj
def server(obj: Context, /, **flags: Any) -> output.Rendered:
    from pycoflux.server import config as server_config_module

    # The Docker image gets only what the wrapper passes (auth-and-config.md §3.1), so this
    # shell's own server variables (PORT, COFLUX_SECRET, ...) are a base for the in-process
    # server alone.
    environ = {} if obj.string("server.image", flags["image"]) else obj.environ
    base = server_config_module.from_env(environ)
    options = resolve(obj, base, **flags)
    if not options.project and not (options.public_host or "").startswith("%"):
        options = dataclasses.replace(options, project="default")
        click.echo('No project specified, using "default"')
    prepare_data_dir(options.data_dir)
    if options.image:
        # Values go to the image as given: it is the image's to accept or refuse them.
        starting(options)
        auth_from_config = not flags["no_auth"] and options.no_auth
        code = run_docker(docker_argv(options, auth_from_config=auth_from_config))
        return output.Text(exit_code=code)
    config = server_config(options, environ)
    starting(options)
    app = importlib.import_module("pycoflux.server.app")
    try:
        app.serve(config)
    except KeyboardInterrupt:
        pass
    return None


def register(root: click.Group) -> None:
    root.add_command(server)
