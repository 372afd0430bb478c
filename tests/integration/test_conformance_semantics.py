"""``semantics.md`` §15 checklist items through the real stack: a server subprocess, a
real ``coflux worker`` running the official SDK, and the CLI.

One server and worker serve the module; each test starts its own runs. Test names carry
the checklist item they check; ``tests/CONFORMANCE.md`` maps every item to its tests.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.eventually import eventually
from tests.support.worker_stack import WorkerStack, value, worker_stack

pytestmark = pytest.mark.integration

FLOWS = textwrap.dedent(
    """
    import time
    from pathlib import Path

    import coflux as cf

    HERE = Path(__file__).parent


    def bump(name: str) -> int:
        path = HERE / f"{name}.count"
        count = int(path.read_text()) + 1 if path.exists() else 1
        path.write_text(str(count))
        return count


    class CustomError(Exception):
        pass


    @cf.workflow()
    def no_arguments() -> str:
        return "hello"


    @cf.workflow()
    def echo(a, b, c) -> list:
        return [a, b, c]


    @cf.workflow()
    def identity(value):
        return value


    @cf.workflow()
    def raises_custom() -> None:
        raise CustomError("custom message")


    @cf.workflow()
    def nothing() -> None:
        return None


    @cf.task()
    def fail(message: str) -> None:
        raise ValueError(message)


    @cf.workflow()
    def catches_child_error() -> list:
        try:
            fail("child failed")
        except cf.ExecutionError as error:
            return [error.error_type, error.error_message]
        return []


    @cf.task()
    def measure(text: str) -> int:
        return len(text)


    @cf.workflow()
    def blob_argument(size: int) -> int:
        return measure("y" * size)


    @cf.workflow()
    def inner(x: int) -> int:
        return x + 1


    @cf.workflow()
    def outer(x: int) -> int:
        return inner(x) * 2


    @cf.workflow(delay=0.5)
    def delayed() -> str:
        return "late"


    @cf.workflow()
    def counted(name: str) -> int:
        return bump(name)


    @cf.task()
    def sleepy(seconds: float) -> str:
        time.sleep(seconds)
        return "woke"


    @cf.task()
    def double(x: int) -> int:
        return x * 2


    @cf.workflow()
    def cancels_child() -> str:
        handle = sleepy.submit(60)
        handle.cancel()
        try:
            handle.result()
        except cf.ExecutionCancelled:
            return "carried on"
        return "not cancelled"


    @cf.workflow()
    def polls() -> list:
        slow = sleepy.submit(60)
        immediate = slow.poll(0)
        waited = slow.poll(0.3)
        quick = double.submit(21)
        ready = quick.poll(120)
        slow.cancel()
        return [immediate, waited, ready]


    @cf.workflow()
    def suspends_twice(name: str) -> int:
        count = bump(name)
        if count < 3:
            cf.suspend()
        return count


    @cf.task(retries=1)
    def always_fails(name: str) -> None:
        bump(name)
        raise RuntimeError("still broken")


    @cf.workflow()
    def exhausts_retries(name: str) -> None:
        always_fails(name)


    @cf.task(recurrent=True)
    def ticks(name: str):
        count = bump(name)
        return count if count >= 3 else None


    @cf.workflow()
    def recurs(name: str) -> int:
        return ticks(name)


    @cf.workflow()
    def grouped() -> list:
        with cf.group("batch"):
            handles = [double.submit(i) for i in range(2)]
        outside = double.submit(10)
        return [h.result() for h in handles] + [outside.result()]


    @cf.workflow(timeout=1.5)
    def times_out() -> None:
        time.sleep(60)
    """
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerStack]:
    with worker_stack(tmp_path_factory.mktemp("conformance"), FLOWS, concurrency=8) as stack:
        yield stack


def inspect(stack: WorkerStack, run_id: str) -> dict[str, Any]:
    done = stack.cli("runs", "inspect", "--no-wait", "-o", "json", run_id)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def steps_of(run: dict[str, Any], target: str) -> list[dict[str, Any]]:
    return [step for step in run["steps"].values() if step["target"] == target]


# --- A. Runs, steps, executions, results -----------------------------------------------------


def test_item_1_a_no_argument_workflow_makes_run_step_and_execution(stack: WorkerStack) -> None:
    """Item 1: run ``R…``, step ``<run>:1``, execution ``<run>:1:1``; empty arguments; the
    reported value is the run result."""
    run_id = stack.submit("no_arguments")
    assert value(stack.result(run_id)) == "hello"
    run = inspect(stack, run_id)
    assert list(run["steps"]) == [f"{run_id}:1"]
    (root,) = run["steps"].values()
    assert root["arguments"] == []
    assert list(root["executions"]) == ["1"]
    assert root["executions"]["1"]["executionId"] == f"{run_id}:1:1"


def test_item_2_3_json_arguments_arrive_in_order_and_nested_values_round_trip(
    stack: WorkerStack,
) -> None:
    """Items 2 and 3: arguments reach the worker decoded and in order; nested JSON
    survives submit, execute and result."""
    echoed = stack.result(stack.submit("echo", 1, "two", [3.5, None]))
    assert echoed["type"] == "value", echoed
    assert echoed["value"]["data"] == [1, "two", [3.5, None]], echoed
    nested = {"a": [1, {"b": [True, None]}], "t": "ü"}  # under the 100-byte blob threshold
    result = stack.result(stack.submit("identity", nested))
    assert result["type"] == "value", result
    assert result["value"]["type"] == "raw", result
    # Objects travel in the SDK's dict form (``server-api.md`` §8.4).
    inner = {"type": "dict", "items": ["b", [True, None]]}
    assert result["value"]["data"] == {"type": "dict", "items": ["a", [1, inner], "t", "ü"]}


def test_item_4_a_custom_error_keeps_its_fully_qualified_type(stack: WorkerStack) -> None:
    """Item 4: type and message verbatim, the type fully qualified."""
    result = stack.result(stack.submit("raises_custom"))
    assert result["type"] == "error", result
    assert result["error"]["type"] == "flows.CustomError"
    assert result["error"]["message"] == "custom message"


def test_item_5_no_value_is_a_null_result(stack: WorkerStack) -> None:
    """Item 5: a result without a value is ``null``."""
    result = stack.result(stack.submit("nothing"))
    assert result["type"] == "value", result
    assert result["value"]["data"] is None


def test_item_6_tracebacks_are_frames_of_file_line_name_and_code(stack: WorkerStack) -> None:
    """Item 6: error frames carry file, line, name and code."""
    result = stack.result(stack.submit("raises_custom"))
    frame = result["error"]["frames"][-1]
    assert frame["file"].endswith("flows.py")
    assert isinstance(frame["line"], int) and frame["line"] > 0
    assert frame["name"] == "raises_custom"
    assert "CustomError" in frame["code"]


def test_item_7_8_a_child_s_parent_is_its_submitter_and_its_error_reaches_the_resolver(
    stack: WorkerStack,
) -> None:
    """Items 7 and 8: the child step's parent is the submitting execution; resolving a
    failed child gives its type and message."""
    run_id = stack.submit("catches_child_error")
    assert value(stack.result(run_id)) == ["builtins.ValueError", "child failed"]
    (child,) = steps_of(inspect(stack, run_id), "fail")
    assert child["parentId"] == f"{run_id}:1:1"


def test_item_12_re_running_a_completed_root_step_makes_attempt_2_and_the_new_result(
    stack: WorkerStack,
) -> None:
    """Item 12: a re-run of the root step is attempt 2 of the same run, dispatched, and
    becomes the run result."""
    run_id = stack.submit("counted", "rerun")
    assert value(stack.result(run_id)) == 1
    done = stack.cli("runs", "rerun", "--no-wait", "-o", "json", f"{run_id}:1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"executionId": f"{run_id}:1:2", "attempt": 2}

    def second() -> Any:
        result = stack.result(run_id)
        return result if result["type"] == "value" and result["value"]["data"] == 2 else None

    eventually(second, timeout=30, interval=0.1)
    (root,) = inspect(stack, run_id)["steps"].values()
    assert sorted(root["executions"]) == ["1", "2"]


def test_item_13_a_workflow_called_from_a_workflow_is_its_own_run(stack: WorkerStack) -> None:
    """Item 13: the spawned workflow gets a run of its own; the parent resolves its value."""
    run_id = stack.submit("outer", 4)
    assert value(stack.result(run_id)) == 10
    (step,) = steps_of(inspect(stack, run_id), "inner")
    result = step["executions"]["1"]["result"]
    assert result["type"] == "spawned", result
    spawned_run = result["execution"]["executionId"].split(":")[0]
    assert spawned_run != run_id
    assert value(stack.result(spawned_run)) == 5


def test_item_14_a_blob_argument_arrives_intact(stack: WorkerStack) -> None:
    """Item 14: a large argument travels as a blob and the task sees all of it."""
    run_id = stack.submit("blob_argument", 300_000)
    assert value(stack.result(run_id)) == 300_000
    (step,) = steps_of(inspect(stack, run_id), "measure")
    (argument,) = step["arguments"]
    assert argument["type"] == "blob"
    assert argument["size"] >= 300_000


# --- B. Scheduling ---------------------------------------------------------------------------------


def test_item_19_the_manifest_delay_holds_the_run(stack: WorkerStack) -> None:
    """Item 19: the manifest's 500 ms delay sets ``executeAfter``; assignment is not
    earlier (server timestamps, no wall-clock measurement)."""
    run_id = stack.submit("delayed")
    assert value(stack.result(run_id)) == "late"
    (root,) = inspect(stack, run_id)["steps"].values()
    execution = root["executions"]["1"]
    assert execution["executeAfter"] == execution["createdAt"] + 500
    assert execution["assignedAt"] >= execution["executeAfter"]


def test_item_26_28_an_execution_suspends_twice_then_finishes(stack: WorkerStack) -> None:
    """Items 26 and 28: each suspension is a new attempt, dispatched again."""
    run_id = stack.submit("suspends_twice", "suspends")
    assert value(stack.result(run_id)) == 3
    (root,) = inspect(stack, run_id)["steps"].values()
    executions = root["executions"]
    assert sorted(executions) == ["1", "2", "3"]
    assert executions["1"]["result"]["type"] == "suspended"
    assert executions["2"]["result"]["type"] == "suspended"


def test_item_29_a_workflow_cancels_its_child_and_carries_on(stack: WorkerStack) -> None:
    """Item 29: resolving the cancelled child reports cancellation; the workflow goes on."""
    run_id = stack.submit("cancels_child")
    assert value(stack.result(run_id)) == "carried on"
    (child,) = steps_of(inspect(stack, run_id), "sleepy")
    assert child["executions"]["1"]["result"]["type"] == "cancelled"


def test_item_39_41_42_polls_return_null_or_the_value(stack: WorkerStack) -> None:
    """Items 39, 41 and 42: a poll of a running child is null (at once or after its
    timeout); a long poll returns the value once it is there."""
    assert stack.run("polls") == [None, None, 42]


# --- D. Retries, timeouts, recurrence --------------------------------------------------------------


def test_item_57_exhausted_retries_make_two_attempts_and_an_error(stack: WorkerStack) -> None:
    """Item 57: limit 1, always failing: exactly two attempts, the run fails."""
    run_id = stack.submit("exhausts_retries", "exhausted")
    result = stack.result(run_id)
    assert result["type"] == "error", result
    (step,) = steps_of(inspect(stack, run_id), "always_fails")
    assert sorted(step["executions"]) == ["1", "2"]
    assert (stack.directory / "exhausted.count").read_text() == "2"


def test_item_63_a_workflow_over_its_timeout_ends_as_timeout(stack: WorkerStack) -> None:
    """Item 63: a 1.5 s timeout on a workflow that never reports."""
    result = stack.result(stack.submit("times_out"), timeout=60)
    assert result["type"] == "timeout", result


def test_item_66_67_a_recurrent_task_repeats_until_it_returns_a_value(
    stack: WorkerStack,
) -> None:
    """Items 66 and 67: each null is a new execution; the first value stops it."""
    run_id = stack.submit("recurs", "recurrent")
    assert value(stack.result(run_id)) == 3
    (step,) = steps_of(inspect(stack, run_id), "ticks")
    executions = step["executions"]
    assert sorted(executions) == ["1", "2", "3"]
    assert [executions[n]["result"]["type"] for n in ("1", "2")] == ["recurred", "recurred"]


# --- J. Logs and groups --------------------------------------------------------------------------------


def test_item_128_groups_are_visible_with_their_child_steps(stack: WorkerStack) -> None:
    """Item 128: the group an execution registered, and which children belong to it."""
    run_id = stack.submit("grouped")
    assert value(stack.result(run_id)) == [0, 2, 20]
    root = inspect(stack, run_id)["steps"][f"{run_id}:1"]["executions"]["1"]
    ((group_id, name),) = root["groups"].items()
    assert name == "batch"
    children = root["children"]
    assert len(children) == 3
    assert [child["groupId"] for child in children[:2]] == [int(group_id)] * 2
    assert children[2]["groupId"] is None
