"""Every SDK example in ``docs/workflows.md`` runs, with the results the guide describes.

The guide's Python blocks are joined into one ``flows.py`` for a real worker (official SDK
adapter) on a real server; each workflow is submitted through the CLI.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.eventually import eventually
from tests.support.server import ServerProcess
from tests.support.worker_stack import WorkerStack, value

pytestmark = pytest.mark.integration

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "workflows.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)

# workflow -> (arguments, expected value)
EXPECTED: dict[str, tuple[list[Any], Any]] = {
    "total": ([1, 2], 6),
    "fan_out": ([[1, 2, 3]], [1, 4, 9]),
    "waits": ([4], 4),
    "cached_lookups": (["a b"], [[3, 0], 1.0, "sunny in Oslo"]),
    "memoised": (["x"], True),
    "debounced": (["c"], ["reindexed c", "reindexed c"]),
    "retried": ([], 2),
    "routed": ([3], "trained for 3 epochs"),
    "patient": (["mon"], "report for mon"),
    "cancelling": ([5], 5),
    "poller": ([3], 3),
    "thumbnails": ([[10, 20]], [5, 10]),
    "parent_report": ([["a", "b"]], ["report a", "report b"]),
    "streaming": ([6], [2.5, 3]),
    "produced_here": ([5], 10),
    "checkpointed": ([4], 4),
    "website": (["Hi"], 2 + len("<h1>Hi</h1>")),
}


def guide_module() -> str:
    return "\n\n".join(BLOCK.findall(GUIDE.read_text()))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerStack]:
    directory = tmp_path_factory.mktemp("guide")
    (directory / "flows.py").write_text(guide_module())
    server = ServerProcess(directory / "data")
    server.start()
    running = WorkerStack(
        server=server,
        directory=directory,
        concurrency=32,
        worker_args=("--provides", "gpu:true", "--provides", "region:eu"),
    )
    try:
        running.start_worker()
        yield running
    finally:
        running.stop()
        server.stop()
    assert not server.tracebacks(), "\n\n".join(server.tracebacks())


def test_every_example_workflow_is_checked() -> None:
    workflows = set(re.findall(r"@cf\.workflow\([^)]*\)\ndef (\w+)", guide_module()))
    assert workflows == {*EXPECTED, "race", "deploy", "child_report"}


def test_the_examples_give_the_results_the_guide_describes(stack: WorkerStack) -> None:
    runs = {name: stack.submit(name, *arguments) for name, (arguments, _) in EXPECTED.items()}
    results = {name: value(stack.result(run_id, timeout=60)) for name, run_id in runs.items()}
    assert results == {name: expected for name, (_, expected) in EXPECTED.items()}


def test_race_returns_one_winner(stack: WorkerStack) -> None:
    assert stack.run("race", 1) in ("fast 1", "thorough 1")


def test_deploy_waits_for_an_answer_given_through_the_cli(stack: WorkerStack) -> None:
    approved, dismissed = stack.submit("deploy", "1.2"), stack.submit("deploy", "1.3")

    def input_of(run_id: str) -> str:
        done = stack.cli("inputs", "list", "--run", run_id, "-o", "json")
        assert done.returncode == 0, done.stderr
        return next(iter(json.loads(done.stdout)), "")

    for run_id, command in ((approved, ["respond"]), (dismissed, ["dismiss"])):
        input_id = eventually(lambda run_id=run_id: input_of(run_id), timeout=30)
        extra = ["true"] if command == ["respond"] else []
        done = stack.cli("inputs", *command, input_id, *extra)
        assert done.returncode == 0, done.stderr
    assert value(stack.result(approved)) == "deployed"
    assert value(stack.result(dismissed)) == "dismissed"
