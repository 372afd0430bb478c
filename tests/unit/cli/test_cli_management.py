"""Management commands: pools, tokens, inputs, logs, assets, blobs, queue, sessions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import FakeServer, Run

# --- pools ------------------------------------------------------------------------------


def test_pools_create_builds_the_pool_in_command_line_order(fake: FakeServer, on: Run) -> None:
    fake.on("POST", "/api/create_pool", 204)
    result = on(
        "pools",
        "create",
        "p",
        "--type",
        "process",
        "--modules",
        "a,b",
        "--provides",
        "gpu:A100,gpu:H100",
        "--set",
        "directory=/w",
        "--set",
        'adapter=["python3","ad.py"]',
        "--set",
        "concurrency=2",
        "--set",
        "env.X=1",
    )
    assert (result.exit_code, result.stdout) == (0, "Created pool 'p'.\n")
    body = fake.calls("/api/create_pool")[0].json
    assert body == {
        "workspaceId": "W1",
        "poolName": "p",
        "pool": {
            "modules": ["a", "b"],
            "provides": {"gpu": ["A100", "H100"]},
            "launcher": {
                "directory": "/w",
                "adapter": ["python3", "ad.py"],
                "concurrency": 2,
                "env": {"X": 1},
                "type": "process",
            },
        },
    }


def test_pools_later_ops_win(fake: FakeServer, on: Run) -> None:
    fake.on("POST", "/api/update_pool", 204)
    on("pools", "update", "p", "--set", 'modules=["x"]', "--modules", "y", "--unset", "env.A")
    assert fake.calls("/api/update_pool")[0].json["pool"] == {
        "modules": ["y"],
        "launcher": {"env": {"A": None}},
    }
    on("pools", "update", "p", "--modules", "y", "--set", 'modules=["x"]', "--no-accepts")
    assert fake.calls("/api/update_pool")[1].json["pool"] == {"modules": ["x"], "accepts": None}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "p"], 'required flag(s) "type" not set'),
        (["create", "p", "--type", "docker", "--set", "bogus=1"], 'unknown field "bogus"'),
        (
            ["create", "p", "--type", "docker", "--set", "image"],
            'invalid --set value "image": must be key=value',
        ),
        (["update", "p"], "no changes specified; use --set, --unset, or convenience flags"),
    ],
)
def test_pools_errors(fake: FakeServer, on: Run, args: list[str], message: str) -> None:
    result = on("pools", *args)
    assert (result.exit_code, result.stderr) == (1, message + "\n")


def test_pools_server_errors_surface_codes(fake: FakeServer, on: Run) -> None:
    fake.on("POST", "/api/create_pool", 409, {"error": "already_exists"})
    assert "already_exists" in on("pools", "create", "p", "--type", "docker").stderr
    fake.on("POST", "/api/update_pool", 404, {"error": "not_found"})
    assert "not_found" in on("pools", "update", "missing", "--set", "concurrency=2").stderr


def test_pools_delete_enable_disable(fake: FakeServer, on: Run) -> None:
    for name in ("update_pool", "enable_pool", "disable_pool"):
        fake.on("POST", f"/api/{name}", 204)
    assert on("pools", "delete", "p").stdout == "Deleted pool 'p'.\n"
    assert fake.calls("/api/update_pool")[0].json == {
        "workspaceId": "W1",
        "poolName": "p",
        "pool": None,
    }
    assert on("pools", "enable", "p").stdout == "Enabled pool 'p'.\n"
    assert on("pools", "disable", "p").stdout == "Disabled pool 'p'.\n"
    assert fake.calls("/api/disable_pool")[0].json == {"workspaceId": "W1", "poolName": "p"}


def test_pools_reads(fake: FakeServer, on: Run) -> None:
    pool = {
        "modules": ["m"],
        "provides": {},
        "accepts": {},
        "launcher": {
            "type": "process",
            "directory": "/w",
            "adapter": ["a"],
            "concurrency": 4,
            "env": {"K": "V"},
        },
        "state": "active",
    }
    fake.on("GET", "/topics/workspaces/W1/pools", body={"p": pool})
    fake.on("GET", "/topics/workspaces/W1/pools/p", body={"pool": pool, "workers": {}})
    assert set(json.loads(on("-o", "json", "pools", "list").stdout)) == {"p"}
    assert json.loads(on("-o", "json", "pools", "get", "p").stdout) == pool
    assert json.loads(on("-o", "json", "pools", "launches", "p").stdout) == {}
    assert on("pools", "launches", "p").stdout == "No launches.\n"
    text = on("pools", "get", "p").stdout
    assert "Launcher: process" in text and "Directory: /w" in text and "  K=V" in text
    assert on("pools", "list").stdout.splitlines()[1].startswith("p     process   m")


# --- tokens --------------------------------------------------------------------------------


def test_tokens_create_and_revoke(fake: FakeServer, on: Run) -> None:
    fake.on("POST", "/api/create_token", body={"token": "cflx_x", "tokenId": 1, "externalId": "e1"})
    result = on("tokens", "create", "--name", "ci", "--workspaces", "a/*, b")
    assert fake.calls("/api/create_token")[0].json == {"name": "ci", "workspaces": ["a/*", "b"]}
    assert "Token: cflx_x" in result.stdout
    fake.on(
        "GET", "/topics/tokens", body={"e1": {"externalId": "e1", "name": "ci", "createdAt": 1}}
    )
    fake.on("POST", "/api/revoke_token", 204)
    assert on("tokens", "revoke", "e1").stdout == "Token 'e1' has been revoked.\n"
    assert on("tokens", "revoke", "zz").stderr == "token 'zz' not found\n"
    assert "ci" in on("tokens", "list").stdout


# --- inputs --------------------------------------------------------------------------------


def test_inputs(fake: FakeServer, on: Run) -> None:
    fake.on("POST", "/api/respond_input", body={})
    assert on("inputs", "respond", "R/i1", '"x"').stdout == "Input 'R/i1' responded.\n"
    assert fake.calls("/api/respond_input")[0].json == {"inputId": "R/i1", "value": "x"}
    bad = on("inputs", "respond", "R/i1", "{nope")
    assert bad.exit_code == 1 and bad.stderr.startswith("invalid JSON value: ")
    fake.on("POST", "/api/respond_input", 409, {"error": "already_responded"})
    assert on("inputs", "respond", "R/i1", "1").stderr == "already_responded: \n"
    got = {"key": "k", "template": "t", "schema": None, "response": None}
    fake.on("POST", "/api/get_input", body=got)
    assert json.loads(on("-o", "json", "inputs", "inspect", "R/i1").stdout) == got
    fake.on("POST", "/api/dismiss_input", body={})
    assert on("-o", "json", "inputs", "dismiss", "R/i1").stdout == '{\n  "dismissed": true\n}\n'


# --- logs ----------------------------------------------------------------------------------

RUN = {
    "steps": {
        "R1:1": {
            "stepNumber": 1,
            "module": "m",
            "target": "main",
            "parentId": None,
            "executions": {"1": {"executionId": "R1:1:1"}},
        },
        "R1:2": {
            "stepNumber": 2,
            "module": "m",
            "target": "sub",
            "parentId": "R1:1:1",
            "executions": {"1": {"executionId": "R1:2:1"}},
        },
    }
}
ENTRY = {
    "executionId": "R1:2:1",
    "workspaceId": "W1",
    "timestamp": 1700000000123,
    "level": 2,
    "template": "hello {name}",
    "values": {
        "name": {"type": "raw", "data": "bob", "references": []},
        "extra": {"type": "raw", "data": 1, "references": []},
    },
    "runId": "R1",
}


def test_logs(fake: FakeServer, on: Run) -> None:
    fake.on("GET", "/topics/workspaces/W1/runs/R1", body=RUN)
    fake.on("GET", "/logs", body={"logs": [ENTRY], "cursor": "c1"})
    result = on("-o", "json", "logs", "R1", "R1:2:1", "--from", "5")
    printed = json.loads(result.stdout)
    assert list(printed) == ["logs", "cursor"]
    assert list(printed["logs"][0]) == [
        "executionId",
        "workspaceId",
        "timestamp",
        "level",
        "template",
        "values",
    ]
    query = fake.calls("/logs")[0].query
    assert query == {"run": ["R1"], "workspaces": ["W1"], "execution": ["R1:2:1"], "from": ["5"]}
    assert "x-api-version" not in fake.calls("/logs")[0].headers
    text = on("logs", "R1").stdout.splitlines()
    assert text == ["-- 2023-11-14 UTC --", "m/sub 2:1", '22:13:20.123 INFO   hello "bob"  extra=1']


def test_logs_selection_errors(fake: FakeServer, on: Run) -> None:
    fake.on("GET", "/topics/workspaces/W1/runs/R1", body=RUN)
    assert on("logs", "R1", "R1:9:1").stderr == 'step "R1:9" not found in run\n'
    assert on("logs", "R1", "R1:2:5").stderr == 'attempt 5 not found for step "R1:2"\n'
    assert on("logs", "R1", "nocolon").stderr == (
        'invalid step:attempt format "nocolon" (expected step-id:attempt)\n'
    )


# --- assets and blobs -----------------------------------------------------------------------


def blob(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def test_blobs_get_writes_exact_bytes(fake: FakeServer, on: Run, tmp_path: Path) -> None:
    data = b"\x00\x01binary"
    fake.on("GET", f"/blobs/{blob(data)}", body=data)
    target = tmp_path / "out.bin"
    result = on("blobs", "get", blob(data), "-o", str(target))
    assert (result.exit_code, result.stdout) == (0, "")
    assert target.read_bytes() == data
    missing = on("blobs", "get", "f" * 64, "-o", str(target))
    assert (missing.exit_code, missing.stderr) == (1, f"blob not found: {'f' * 64}\n")


def test_assets(fake: FakeServer, on: Run, tmp_path: Path) -> None:
    a, b = b"alpha", b"beta!"
    asset = {
        "name": "data",
        "entries": {
            "x/a.csv": {"blobKey": blob(a), "size": 5, "metadata": {"type": "text/csv"}},
            "b.txt": {"blobKey": blob(b), "size": 5, "metadata": {}},
        },
    }
    fake.on("GET", "/topics/asset/A1", body=asset)
    fake.on("GET", f"/blobs/{blob(a)}", body=a)
    fake.on("GET", f"/blobs/{blob(b)}", body=b)
    assert json.loads(on("-o", "json", "assets", "inspect", "A1").stdout) == asset
    assert on("assets", "inspect", "A9").stderr == "asset 'A9' not found\n"
    dest = tmp_path / "dest"
    result = on("assets", "download", "A1", "--to", str(dest))
    assert result.exit_code == 0, result.stderr
    assert (dest / "x" / "a.csv").read_bytes() == a and (dest / "b.txt").read_bytes() == b
    again = on("assets", "download", "A1", "--to", str(dest))
    assert again.exit_code == 1 and again.stderr.startswith("file already exists at path: ")
    assert on("assets", "download", "A1", "--to", str(dest), "--force").exit_code == 0
    assert (
        on("assets", "download", "A1", "--match", "**/*.csv", "--to", str(tmp_path / "m")).exit_code
        == 0
    )
    assert not (tmp_path / "m" / "b.txt").exists()


def test_asset_paths_cannot_escape(fake: FakeServer, on: Run, tmp_path: Path) -> None:
    fake.on(
        "GET",
        "/topics/asset/A2",
        body={"name": None, "entries": {"../evil": {"blobKey": "ab" * 32, "size": 1}}},
    )
    result = on("assets", "download", "A2", "--to", str(tmp_path / "d"))
    assert result.exit_code == 1 and "invalid path" in result.stderr


# --- queue and sessions ---------------------------------------------------------------------


def test_queue_and_sessions(fake: FakeServer, on: Run) -> None:
    queue = {
        "R1:1:1": {
            "module": "m",
            "target": "t",
            "dependencies": [],
            "requires": {},
            "assignedAt": None,
            "executeAfter": None,
        }
    }
    sessions: dict[str, Any] = {}
    fake.on("GET", "/topics/workspaces/W1/queue", body=queue)
    fake.on("GET", "/topics/workspaces/W1/sessions", body=sessions)
    assert json.loads(on("-o", "json", "queue").stdout) == queue
    lines = on("queue", "--no-watch").stdout.splitlines()
    assert lines[1].split() == ["R1:1:1", "m/t", "no", "session"]
    assert on("sessions", "list").stdout == "No active sessions.\n"


# --- pools export / import -----------------------------------------------------------------

POOLS = {
    "gpu": {
        "modules": ["ml.*"],
        "provides": {"gpu": ["a100"]},
        "launcher": {
            "type": "docker",
            "image": "acme/worker:1",
            "dockerHost": "tcp://d",
            "env": {"A": "1", "B C": "x"},
            "concurrency": 2,
        },
    },
    "cpu": {"modules": ["etl"]},
}


def test_export_import_round_trip(fake: FakeServer, on: Run, tmp_path: Path) -> None:
    fake.handle("POST", "/api/get_pools", lambda _r: (200, POOLS, {"ETag": '"e1"'}))
    exported = on("pools", "export")
    assert exported.exit_code == 0, exported.stderr
    assert "[gpu.launcher]" in exported.stdout and "docker_host = " in exported.stdout
    path = tmp_path / "pools.toml"
    path.write_text(exported.stdout)
    assert on("pools", "import", str(path), "--yes").stdout == "No changes.\n"
    path.write_text(exported.stdout.replace("concurrency = 2", "concurrency = 3"))
    fake.on("POST", "/api/update_pools", 204)
    result = on("pools", "import", str(path), "--yes")
    assert result.stdout.splitlines() == [
        "~ gpu (update)",
        "    ~ launcher.concurrency: 2 -> 3",
        "Applied: 1 updated.",
    ]
    [applied] = fake.calls("/api/update_pools")
    assert applied.headers["if-match"] == '"e1"'
    assert applied.json["pools"]["gpu"]["launcher"]["dockerHost"] == "tcp://d"


def test_import_refusals(fake: FakeServer, on: Run, tmp_path: Path) -> None:
    assert on("pools", "import", input="").stderr == (
        "--yes or --dry-run is required when reading from stdin\n"
    )
    fake.handle("POST", "/api/get_pools", lambda _r: (200, {}, {"ETag": '"e1"'}))
    fake.on("POST", "/api/update_pools", 412, {"error": "conflict"})
    result = on("pools", "import", "--yes", input='[new]\nmodules = ["m"]\n')
    assert result.stdout.startswith("+ new (create)\n")
    assert result.stderr == (
        "pool configuration has changed since plan was generated, re-run to see updated plan\n"
    )
    dry = on("pools", "import", "--dry-run", input='[new]\nmodules = ["m"]\n')
    assert dry.exit_code == 0 and len(fake.calls("/api/update_pools")) == 1
