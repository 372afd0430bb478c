"""``coflux runs inspect|result|rerun|cancel`` (cli.md §4.5)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pycoflux.cli import progress

from .conftest import FakeServer, Run

RUN_PATH = "/topics/workspaces/W1/runs/R1"


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "POLL_INTERVAL", 0.01)


def raw(data: Any, references: list[Any] | None = None) -> dict[str, Any]:
    return {"type": "raw", "data": data, "references": references or []}


def make_run(root_results: dict[str, Any], child: dict[str, Any] | None = None) -> dict[str, Any]:
    steps: dict[str, Any] = {
        "R1:1": {
            "stepNumber": 1,
            "module": "m",
            "target": "main",
            "parentId": None,
            "executions": {
                attempt: {"executionId": f"R1:1:{attempt}", "assignedAt": 1, "result": result}
                for attempt, result in root_results.items()
            },
        }
    }
    if child is not None:
        steps["R1:2"] = {
            "stepNumber": 2,
            "module": "m",
            "target": "child",
            "parentId": "R1:1:1",
            "executions": {"1": {"executionId": "R1:2:1", "assignedAt": 1, "result": child}},
        }
    return {"createdAt": 1, "steps": steps}


def test_result_json_prints_the_result_verbatim(fake: FakeServer, on: Run) -> None:
    value = {"type": "value", "value": raw({"type": "dict", "items": ["a", 1]}), "createdBy": None}
    fake.on("GET", RUN_PATH, body=make_run({"1": value}))
    result = on("-o", "json", "runs", "result", "R1")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == value


def test_result_uses_the_latest_attempt_numerically(fake: FakeServer, on: Run) -> None:
    results = {str(n): {"type": "value", "value": raw(n)} for n in (1, 2, 10)}
    fake.on("GET", RUN_PATH, body=make_run(results))
    assert on("runs", "result", "R1").stdout == "10\n"
    assert on("runs", "result", "R1:1:2").stdout == "2\n"


def test_no_result_yet_exits_1(fake: FakeServer, on: Run) -> None:
    fake.on("GET", RUN_PATH, body=make_run({"1": None}))
    result = on("-o", "json", "runs", "result", "R1")
    assert result.exit_code == 1
    assert result.stderr == "no result yet\n"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("R1:7", "step 7 not found in run R1"),
        ("R1:2:9", "execution attempt 9 not found for step 2 in run R1"),
    ],
)
def test_selection_errors(fake: FakeServer, on: Run, target: str, message: str) -> None:
    fake.on("GET", RUN_PATH, body=make_run({"1": None}, child={"type": "cancelled"}))
    result = on("runs", "result", target)
    assert (result.exit_code, result.stderr) == (1, message + "\n")


def test_step_selection(fake: FakeServer, on: Run) -> None:
    fake.on("GET", RUN_PATH, body=make_run({"1": None}, child={"type": "cancelled"}))
    assert on("runs", "result", "R1:2").stdout == "Cancelled\n"


def test_unknown_run_and_workspace(fake: FakeServer, on: Run) -> None:
    result = on("runs", "result", "R9")
    assert result.stderr == "failed to get run: not_found: \n"
    result = on("-w", "nope", "runs", "result", "R1")
    assert result.stderr == "workspace not found: nope\n"


def test_result_text_renders_errors_as_tracebacks(fake: FakeServer, on: Run) -> None:
    error = {
        "type": "error",
        "error": {
            "type": "ValueError",
            "message": "bad",
            "frames": [{"file": "/a.py", "line": 3, "name": "f", "code": "raise ValueError"}],
        },
    }
    fake.on("GET", RUN_PATH, body=make_run({"1": error}))
    assert on("runs", "result", "R1").stdout == (
        "Traceback (most recent call last):\n"
        '  File "/a.py", line 3, in f\n'
        "    raise ValueError\n"
        "ValueError: bad\n"
    )


def test_result_text_fetches_blobs(fake: FakeServer, on: Run) -> None:
    key = "ab" * 32
    value = {"type": "value", "value": {"type": "blob", "key": key, "size": 2000, "references": []}}
    fake.on("GET", RUN_PATH, body=make_run({"1": value}))
    fake.on("GET", f"/blobs/{key}", body=b'{"type": "set", "items": [1, 2]}')
    assert on("runs", "result", "R1").stdout == "{1, 2}\n"


def test_result_text_summarises_missing_blobs(fake: FakeServer, on: Run) -> None:
    key = "cd" * 32
    value = {"type": "value", "value": {"type": "blob", "key": key, "size": 2048, "references": []}}
    fake.on("GET", RUN_PATH, body=make_run({"1": value}))
    assert on("runs", "result", "R1").stdout == "<blob (2.0KiB)>\n"


def test_inspect_no_wait_prints_json_regardless_of_output(fake: FakeServer, on: Run) -> None:
    run = make_run({"1": None})
    fake.on("GET", RUN_PATH, body=run)
    result = on("runs", "inspect", "--no-wait", "R1")
    assert json.loads(result.stdout) == run


def test_inspect_waits_for_the_root(fake: FakeServer, on: Run) -> None:
    fake.sequence(
        "GET",
        RUN_PATH,
        [make_run({"1": None}), make_run({"1": None}), make_run({"1": {"type": "timeout"}})],
    )
    result = on("-o", "json", "runs", "inspect", "R1")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["steps"]["R1:1"]["executions"]["1"]["result"] == {
        "type": "timeout"
    }


def test_rerun(fake: FakeServer, on: Run) -> None:
    fake.on("POST", "/api/rerun_step", body={"executionId": "R1:1:2", "attempt": 2})
    result = on("runs", "rerun", "--no-wait", "-o", "json", "R1:1")
    assert result.stdout == '{\n  "executionId": "R1:1:2",\n  "attempt": 2\n}\n'
    assert fake.calls("/api/rerun_step")[0].json == {"workspaceId": "W1", "stepId": "R1:1"}
    text = on("runs", "rerun", "--no-wait", "R1:1")
    assert text.stdout == "Step re-run (execution: R1:1:2, attempt: 2).\n"


def test_rerun_waits_in_text_mode(fake: FakeServer, on: Run) -> None:
    fake.on("POST", "/api/rerun_step", body={"executionId": "R1:1:2", "attempt": 2})
    fake.on("GET", RUN_PATH, body=make_run({"1": {"type": "value"}}))
    result = on("runs", "rerun", "R1:1")
    assert (result.exit_code, result.stdout) == (0, "R1:1:2:2\n")


def test_rerun_rejects_bad_step_ids(on: Run) -> None:
    result = on("runs", "rerun", "R1")
    assert result.exit_code == 1
    assert result.stderr == ("invalid step ID format: expected 'run-id:step-number', got 'R1'\n")


def test_cancel(fake: FakeServer, on: Run) -> None:
    fake.on("POST", "/api/cancel_execution", body={})
    assert on("runs", "cancel", "R1:1:1").stdout == "Execution cancelled.\n"
    assert on("runs", "cancel", "R1:1:1", "-o", "json").stdout == '{\n  "cancelled": true\n}\n'
    assert fake.calls("/api/cancel_execution")[0].json == {
        "workspaceId": "W1",
        "executionId": "R1:1:1",
    }
    fake.on("POST", "/api/cancel_execution", 404, {"error": "not_found"})
    result = on("runs", "cancel", "R1:1:1")
    assert (result.exit_code, result.stderr) == (1, "failed to cancel execution: not_found: \n")
