"""``coflux submit`` against a fake server (cli.md §4.4)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pycoflux.cli import progress

from .conftest import FakeServer, Run

SUBMITTED = {"runId": "R1", "stepId": "R1:1", "executionId": "R1:1:1"}
WORKFLOW_PATH = "/topics/workspaces/W1/workflows/pkg.mod/main"


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "POLL_INTERVAL", 0.01)


@pytest.fixture(autouse=True)
def registered(fake: FakeServer) -> None:
    """The workflow is registered unless a test says otherwise."""
    # No manifest, only runs: the signature is unknown, so any arguments go through.
    fake.on("GET", WORKFLOW_PATH, body={"parameters": None, "configuration": None, "runs": {}})


def run_topic(result: Any, *, assigned: bool = True) -> dict[str, Any]:
    return {
        "createdAt": 1,
        "steps": {
            "R1:1": {
                "stepNumber": 1,
                "module": "pkg.mod",
                "target": "main",
                "parentId": None,
                "executions": {
                    "1": {
                        "executionId": "R1:1:1",
                        "assignedAt": 5 if assigned else None,
                        "result": result,
                        "children": [],
                    }
                },
            }
        },
    }


def submit_body(fake: FakeServer) -> dict[str, Any]:
    [request] = fake.calls("/api/submit_workflow")
    body: dict[str, Any] = request.json
    return body


def test_no_wait_json_posts_arguments_verbatim(fake: FakeServer, on: Run) -> None:
    fake.on("POST", "/api/submit_workflow", body=SUBMITTED)
    result = on("submit", "--no-wait", "-o", "json", "pkg.mod/main", '"a"', "1")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == json.dumps(SUBMITTED, indent=2) + "\n"
    assert list(json.loads(result.stdout)) == ["runId", "stepId", "executionId"]
    body = submit_body(fake)
    assert body["workspaceId"] == "W1"
    assert body["module"] == "pkg.mod"
    assert body["target"] == "main"
    assert body["arguments"] == [["json", '"a"'], ["json", "1"]]


def test_no_wait_text(fake: FakeServer, on: Run) -> None:
    fake.on("POST", "/api/submit_workflow", body=SUBMITTED)
    result = on("submit", "pkg.mod/main", "--no-wait")
    assert result.stdout == "Workflow submitted (run: R1).\n"


def test_headers(fake: FakeServer, on: Run) -> None:
    fake.on("POST", "/api/submit_workflow", body=SUBMITTED)
    on("--token", "tok", "--project", "p1", "submit", "--no-wait", "pkg.mod/main")
    for request in fake.requests:
        assert request.headers["authorization"] == "Bearer tok"
        assert request.headers["x-project"] == "p1"
        assert request.headers["x-api-version"] == "0.12"
    assert fake.requests[-1].headers["content-type"] == "application/json"


def test_copies_the_workflow_configuration(fake: FakeServer, on: Run) -> None:
    fake.on(
        "GET",
        WORKFLOW_PATH,
        body={
            "parameters": [{"name": "x", "default": None, "annotation": None}],
            "instruction": None,
            "configuration": {
                "waitFor": [0],
                "cache": None,
                "defer": None,
                "delay": 0,
                "retries": {"limit": 2, "backoffMin": 0, "backoffMax": 0},
                "recurrent": False,
                "timeout": 5000,
                "requires": {"gpu": ["a100"]},
                "memo": None,
                "streams": {"buffer": 4, "timeoutMs": None},
            },
            "runs": {},
        },
    )
    fake.on("POST", "/api/submit_workflow", body=SUBMITTED)
    on("submit", "--no-wait", "pkg.mod/main", "1")
    body = submit_body(fake)
    assert body["waitFor"] == [0]
    assert body["cache"] is None and body["defer"] is None and body["memo"] is None
    assert body["retries"] == {"limit": 2, "backoffMin": 0, "backoffMax": 0}
    assert body["requires"] == {"gpu": ["a100"]}
    assert body["timeout"] == 5000
    assert body["streams"] == {"buffer": 4, "timeoutMs": None}
    assert "delay" not in body and "recurrent" not in body


def test_pads_missing_arguments_with_registered_defaults(fake: FakeServer, on: Run) -> None:
    fake.on(
        "GET",
        WORKFLOW_PATH,
        body={
            "parameters": [
                {"name": "a", "default": None},
                {"name": "b", "default": "2"},
                {"name": "c", "default": "null"},
            ],
            "configuration": None,
        },
    )
    fake.on("POST", "/api/submit_workflow", body=SUBMITTED)
    on("submit", "--no-wait", "pkg.mod/main", "1")
    assert submit_body(fake)["arguments"] == [["json", "1"], ["json", "2"], ["json", "null"]]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--retries", "0"], {"retries": None}),
        (["--retries", "3"], {"retries": {"limit": 3, "backoffMin": 0, "backoffMax": 0}}),
        (["--delay", "1.5"], {"delay": 1500}),
        (
            ["--requires", "gpu:A100,gpu:H100", "--requires", "region:eu"],
            {"requires": {"gpu": ["A100", "H100"], "region": ["eu"]}},
        ),
        (["--no-requires"], {"requires": {}}),
        (["--memo"], {"memo": True}),
        (["--no-memo"], {"memo": False}),
        (["--idempotency-key", "k1"], {"idempotencyKey": "k1"}),
    ],
)
def test_flag_overrides(
    fake: FakeServer, on: Run, flags: list[str], expected: dict[str, Any]
) -> None:
    fake.on("POST", "/api/submit_workflow", body=SUBMITTED)
    result = on("submit", "--no-wait", *flags, "pkg.mod/main")
    assert result.exit_code == 0, result.stderr
    body = submit_body(fake)
    for key, value in expected.items():
        assert body[key] == value


def test_ensures_the_workspace(fake: FakeServer, on: Run) -> None:
    fake.on("POST", "/api/submit_workflow", body=SUBMITTED)
    fake.on("GET", "/topics/workspaces/W2/workflows/pkg.mod/main", body={"runs": {}})
    result = on("-w", "fresh", "submit", "--no-wait", "pkg.mod/main")
    assert result.exit_code == 0
    [create] = fake.calls("/api/create_workspace")
    assert create.json == {"name": "fresh"}
    assert submit_body(fake)["workspaceId"] == "W2"


def test_invalid_target(on: Run, fake: FakeServer) -> None:
    result = on("submit", "nomodule")
    assert result.exit_code == 1
    assert result.stderr == "invalid target format: expected 'module/target', got 'nomodule'\n"


def test_server_error_is_prefixed(fake: FakeServer, on: Run) -> None:
    fake.on("POST", "/api/submit_workflow", 403, {"error": "forbidden"})
    result = on("submit", "--no-wait", "pkg.mod/main")
    assert result.exit_code == 1
    assert result.stderr == "failed to submit workflow: forbidden: \n"


def test_an_unregistered_workflow_is_an_error_that_says_how_to_register(
    fake: FakeServer, on: Run
) -> None:
    fake.on("GET", WORKFLOW_PATH, status=404, body={"error": "not_found"})
    fake.on("POST", "/api/submit_workflow", body=SUBMITTED)
    result = on("submit", "--no-wait", "pkg.mod/main")
    assert result.exit_code == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("failed to get workflow: not_found: ")
    assert "no workflow 'pkg.mod/main' is registered in workspace 'default'" in line
    assert "--register" in line
    assert fake.calls("/api/submit_workflow") == []


def test_json_wait_prints_the_run_after_the_root_completes(fake: FakeServer, on: Run) -> None:
    fake.on("POST", "/api/submit_workflow", body=SUBMITTED)
    final = run_topic({"type": "value", "value": {"type": "raw", "data": 1, "references": []}})
    fake.sequence(
        "GET",
        "/topics/workspaces/W1/runs/R1",
        [run_topic(None, assigned=False), run_topic(None), final],
    )
    result = on("submit", "-o", "json", "pkg.mod/main")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == final
    assert result.stdout == json.dumps(final, indent=2, sort_keys=True) + "\n"
    assert len(fake.calls("/topics/workspaces/W1/runs/R1")) == 3


@pytest.mark.parametrize(
    ("result_value", "code"),
    [
        ({"type": "value"}, 0),
        ({"type": "cached", "execution": {}, "result": None}, 0),
        ({"type": "spawned", "execution": {}, "result": None}, 0),
        ({"type": "error", "error": {"type": "E", "message": "m", "frames": []}}, 1),
        ({"type": "cancelled"}, 1),
    ],
)
def test_text_wait_prints_the_run_id_and_exits_by_outcome(
    fake: FakeServer, on: Run, result_value: dict[str, Any], code: int
) -> None:
    fake.on("POST", "/api/submit_workflow", body=SUBMITTED)
    fake.sequence(
        "GET", "/topics/workspaces/W1/runs/R1", [run_topic(None), run_topic(result_value)]
    )
    result = on("submit", "pkg.mod/main")
    assert result.stdout == "R1\n"
    assert result.exit_code == code


def test_waiting_skips_results_that_announce_a_retry(fake: FakeServer, on: Run) -> None:
    fake.on("POST", "/api/submit_workflow", body=SUBMITTED)
    retried = run_topic({"type": "error", "error": {}, "retry": 2})
    final = run_topic({"type": "value"})
    fake.sequence("GET", "/topics/workspaces/W1/runs/R1", [retried, final])
    result = on("submit", "pkg.mod/main")
    assert result.exit_code == 0
    assert len(fake.calls("/topics/workspaces/W1/runs/R1")) == 2


def test_live_tree_lines() -> None:
    run = run_topic(None)
    run["steps"]["R1:1"]["executions"]["1"]["children"] = [
        {"stepId": "R1:2", "attempt": 1, "groupId": None}
    ]
    run["steps"]["R1:2"] = {
        "stepNumber": 2,
        "module": "pkg.mod",
        "target": "child",
        "parentId": "R1:1:1",
        "executions": {"1": {"executionId": "R1:2:1", "result": {"type": "cancelled"}}},
    }
    lines = progress.tree_lines(run, "R1")
    assert "pkg.mod/main [R1]" in lines[0] and "Running..." in lines[0]
    assert lines[1].startswith("└─ ") and "pkg.mod/child" in lines[1]
    assert "(cancelled)" in lines[1]
    assert progress.all_outcome(run) is None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("1", "2", "3"), "pkg.mod/main takes 2 argument(s) (a, b), 3 given"),
        ((), "pkg.mod/main is missing argument(s) without a default: a"),
    ],
)
def test_argument_count_is_checked_against_the_registered_signature(
    fake: FakeServer, on: Run, arguments: tuple[str, ...], message: str
) -> None:
    parameters = [
        {"name": "a", "default": None, "annotation": None},
        {"name": "b", "default": "2", "annotation": None},
    ]
    fake.on("GET", WORKFLOW_PATH, body={"parameters": parameters, "configuration": None})
    fake.on("POST", "/api/submit_workflow", body=SUBMITTED)
    result = on("submit", "--no-wait", "pkg.mod/main", *arguments)
    assert result.exit_code == 1
    assert result.stderr == message + "\n"
    assert fake.calls("/api/submit_workflow") == []


def test_a_default_fills_a_missing_trailing_argument(fake: FakeServer, on: Run) -> None:
    parameters = [
        {"name": "a", "default": None, "annotation": None},
        {"name": "b", "default": "2", "annotation": None},
    ]
    fake.on("GET", WORKFLOW_PATH, body={"parameters": parameters, "configuration": None})
    fake.on("POST", "/api/submit_workflow", body=SUBMITTED)
    result = on("submit", "--no-wait", "pkg.mod/main", "1")
    assert result.exit_code == 0, result.stderr
    assert submit_body(fake)["arguments"] == [["json", "1"], ["json", "2"]]


class SlowTopics:
    """A client whose run snapshots take ``seconds`` each on a fake clock."""

    def __init__(self, clock: list[float], seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds

    def topic(self, path: str) -> Any:
        self.clock[0] += self.seconds
        return {"path": path}


@pytest.mark.parametrize(("took", "waits"), [(0.001, 0.15), (0.1, 0.4), (2.0, 8.0)])
def test_polling_waits_longer_after_slow_snapshots(
    monkeypatch: pytest.MonkeyPatch, took: float, waits: float
) -> None:
    monkeypatch.setattr(progress, "POLL_INTERVAL", 0.15)
    clock = [0.0]
    sleeps: list[float] = []
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(progress.time, "sleep", sleeps.append)
    snapshots = progress.poll(SlowTopics(clock, took), "W1", "R1")  # type: ignore[arg-type]
    assert next(snapshots) == {"path": "workspaces/W1/runs/R1"}
    next(snapshots)
    assert sleeps == [pytest.approx(waits)]
