"""``coflux server --image``: the Docker wrapper (auth-and-config.md §3, checklist items 19-32).

The real console script runs with a fake ``docker`` first on PATH. The fake is a test double
of the external tool only: it records its argv and exits with a chosen code, or waits for a
signal and records which one arrived.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pycoflux.protocol import version
from tests.support.eventually import eventually

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "coflux"
IMAGE = "ghcr.io/bitroot/coflux:0.12"

FAKE_DOCKER = """#!{python}
import json, os, signal, sys

record = os.environ["FAKE_DOCKER_RECORD"]
with open(record, "w") as f:
    json.dump({{"argv": sys.argv[1:], "session": os.getsid(0) == os.getpid()}}, f)
if os.environ.get("FAKE_DOCKER_MODE") == "wait":
    def stop(signum, frame):
        with open(record + ".signals", "a") as f:
            f.write(signal.Signals(signum).name + "\\n")
        if signum == signal.SIGTERM:
            sys.exit(int(os.environ["FAKE_DOCKER_EXIT"]))
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    open(record + ".ready", "w").close()
    while True:
        signal.pause()
sys.exit(int(os.environ.get("FAKE_DOCKER_EXIT", "0")))
"""


@dataclass
class Invocation:
    code: int
    stdout: str
    stderr: str
    argv: list[str]  # docker's arguments; [] when docker was not started

    def env(self) -> dict[str, str]:
        """The container environment: every ``--env NAME=VALUE`` pair."""
        pairs = [self.argv[i + 1] for i, a in enumerate(self.argv) if a == "--env"]
        return dict(p.split("=", 1) for p in pairs)

    def option(self, name: str) -> str:
        return self.argv[self.argv.index(name) + 1]


Run = Callable[..., Invocation]


@pytest.fixture
def fake_docker(tmp_path: Path) -> dict[str, str]:
    """A directory with the fake ``docker`` and the environment that puts it first on PATH."""
    if not SCRIPT.exists():
        pytest.skip("console script not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable))
    docker.chmod(0o755)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path),
        "FAKE_DOCKER_RECORD": str(tmp_path / "docker.json"),
    }


@pytest.fixture
def coflux(tmp_path: Path, fake_docker: dict[str, str]) -> Run:
    """Run ``coflux server --image <IMAGE> ...`` in ``tmp_path/cwd``."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    record = Path(fake_docker["FAKE_DOCKER_RECORD"])

    def run(*args: str, env: dict[str, str] | None = None, image: str | None = IMAGE) -> Invocation:
        record.unlink(missing_ok=True)
        argv = [str(SCRIPT), "server", *(["--image", image] if image else []), *args]
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env={**fake_docker, **(env or {})},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        started = json.loads(record.read_text())["argv"] if record.exists() else []
        return Invocation(proc.returncode, proc.stdout, proc.stderr, started)

    return run


def test_item_19_defaults(coflux: Run, tmp_path: Path) -> None:
    result = coflux()
    assert (result.code, result.argv, result.stdout.splitlines()[:3]) == (
        0,
        [
            "run",
            "--rm",
            "--pull",
            "always",
            "--publish",
            "7777:7777",
            "--volume",
            f"{tmp_path / 'cwd' / 'data'}:/data",
            "--env",
            "ERL_FLAGS=+Bd",
            "--env",
            "COFLUX_PROJECT=default",
            IMAGE,
        ],
        [
            'No project specified, using "default"',
            "Starting Coflux server on port 7777...",
            f"Data directory: {tmp_path / 'cwd' / 'data'}",
        ],
    )


def test_item_20_project(coflux: Run) -> None:
    result = coflux("--project", "myproject")
    assert (result.env()["COFLUX_PROJECT"], "No project specified" in result.stdout) == (
        "myproject",
        False,
    )


def test_item_21_percent_public_host_is_multi_project(coflux: Run) -> None:
    result = coflux("--public-host", "%.localhost:7777")
    assert (result.env(), "No project specified" in result.stdout) == (
        {"ERL_FLAGS": "+Bd", "COFLUX_PUBLIC_HOST": "%.localhost:7777"},
        False,
    )


def test_item_22_port(coflux: Run) -> None:
    result = coflux("--port", "8000", env={"PORT": "8123"})
    assert (result.option("--publish"), "PORT" in result.env()) == ("8000:7777", False)


def test_item_23_data_dir(coflux: Run, tmp_path: Path) -> None:
    result = coflux("--data-dir", "d")
    assert (result.option("--volume"), (tmp_path / "cwd" / "d").is_dir()) == (
        f"{tmp_path / 'cwd' / 'd'}:/data",
        True,
    )


def test_item_24_no_auth(coflux: Run, tmp_path: Path) -> None:
    by_flag = coflux("--no-auth").env()
    (tmp_path / "cwd" / "coflux.toml").write_text("[server]\nauth = false\n")
    by_file = coflux().env()
    assert (by_flag["COFLUX_REQUIRE_AUTH"], by_file["COFLUX_REQUIRE_AUTH"]) == ("false", "false")


def test_item_25_super_token_is_hashed(coflux: Run) -> None:
    result = coflux("--super-token", "abc")
    digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert (
        result.env()["COFLUX_SUPER_TOKEN_HASH"],
        [a for a in result.argv if "abc" in a],
        "abc" in result.stdout,
    ) == (digest, [], False)


def test_item_26_super_token_flags_are_exclusive(coflux: Run) -> None:
    result = coflux("--super-token", "x", "--super-token-hash", "y")
    assert (result.code, result.argv, "[super-token super-token-hash]" in result.stderr) == (
        1,
        [],
        True,
    )


def test_item_27_super_token_hash(coflux: Run) -> None:
    assert coflux("--super-token-hash", "h").env()["COFLUX_SUPER_TOKEN_HASH"] == "h"


def test_item_28_secret_teams_launchers(coflux: Run) -> None:
    env = coflux(
        "--secret",
        "s",
        "--team",
        "a",
        "--team",
        "b",
        "--launcher",
        "docker",
        "--launcher",
        "process",
    ).env()
    assert (env["COFLUX_SECRET"], env["COFLUX_STUDIO_TEAMS"], env["COFLUX_LAUNCHER_TYPES"]) == (
        "s",
        "a,b",
        "docker,process",
    )


def test_item_29_hidden_studio_url_and_allow_origins(coflux: Run) -> None:
    env = coflux("--studio-url", "u", "--allow-origin", "o1", "--allow-origin", "o2").env()
    assert (env["COFLUX_STUDIO_URL"], env["COFLUX_ALLOW_ORIGINS"]) == ("u", "o1,o2")


def test_item_30_port_from_env_and_file(coflux: Run, tmp_path: Path) -> None:
    by_env = coflux(env={"COFLUX_SERVER_PORT": "9000"}).option("--publish")
    (tmp_path / "cwd" / "coflux.toml").write_text("[server]\nport = 9000\n")
    by_file = coflux().option("--publish")
    by_flag = coflux("--port", "9100", env={"COFLUX_SERVER_PORT": "9200"}).option("--publish")
    assert (by_env, by_file, by_flag) == ("9000:7777", "9000:7777", "9100:7777")


def test_item_31_pull_policy_and_default_tag(coflux: Run) -> None:
    digest = "sha256:" + hashlib.sha256(b"image").hexdigest()
    by_digest = coflux(image=digest)
    untagged = coflux(image="ghcr.io/bitroot/coflux")
    from_env = coflux(image=None, env={"COFLUX_SERVER_IMAGE": "localhost:5000/coflux"})
    tag = "latest" if version.API_VERSION == "dev" else version.API_VERSION
    assert (
        (by_digest.option("--pull"), by_digest.argv[-1]),
        (untagged.option("--pull"), untagged.argv[-1]),
        from_env.argv[-1],
    ) == (
        ("missing", digest),
        ("always", f"ghcr.io/bitroot/coflux:{tag}"),
        f"localhost:5000/coflux:{tag}",
    )


def test_item_32_ctrl_c_terminates_docker_and_exits_with_its_code(
    tmp_path: Path, fake_docker: dict[str, str]
) -> None:
    record = Path(fake_docker["FAKE_DOCKER_RECORD"])
    env = {**fake_docker, "FAKE_DOCKER_MODE": "wait", "FAKE_DOCKER_EXIT": "37"}
    # A session of its own stands for the terminal's foreground process group: Ctrl-C
    # signals the whole group, and docker must not be in it.
    wrapper = subprocess.Popen(
        [str(SCRIPT), "server", "--image", IMAGE],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        eventually(Path(f"{record}.ready").exists, timeout=20)
        os.killpg(wrapper.pid, signal.SIGINT)
        code = wrapper.wait(timeout=20)
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
    signals = Path(f"{record}.signals").read_text().split()
    assert (signals, code, json.loads(record.read_text())["session"]) == (["SIGTERM"], 37, True)


def test_docker_exit_code_is_the_wrappers(coflux: Run) -> None:
    assert coflux(env={"FAKE_DOCKER_EXIT": "3"}).code == 3


def test_settings_of_this_shell_do_not_reach_the_container(coflux: Run) -> None:
    result = coflux(env={"COFLUX_SECRET": "shell-secret", "COFLUX_PROJECT": "shell"})
    assert result.env() == {"ERL_FLAGS": "+Bd", "COFLUX_PROJECT": "default"}


def test_docker_missing(tmp_path: Path) -> None:
    if not SCRIPT.exists():
        pytest.skip("console script not installed")
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [str(SCRIPT), "server", "--image", IMAGE],
        cwd=tmp_path,
        env={"PATH": str(empty), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (proc.returncode, proc.stderr.startswith("failed to start docker: ")) == (1, True)
