"""Caching, memoisation and deferral in the core (``semantics.md`` §7.1-7.4; checklist B 25, C 46-55).

Test names carry the checklist item they check.
"""

from __future__ import annotations

from typing import Any

from pycoflux.orchestration import caching, commands, model
from pycoflux.storage import views
from tests.unit.orchestration.conftest import Driver, Session

C = model.Completion


def cache(
    params: Any = True,
    max_age: int | None = None,
    namespace: str | None = None,
    version: str | None = None,
) -> model.StepOptions:
    return model.StepOptions(
        cache={"params": params, "maxAge": max_age, "namespace": namespace, "version": version}
    )


def run_with_child(
    driver: Driver, worker: Session, ws: str, arguments: list[Any], **kwargs: Any
) -> str:
    """A run whose root submits one cached ``work`` child; returns the child's id."""
    root = driver.submit(ws)
    return worker.child(root, arguments=arguments, options=kwargs.pop("options", cache()), **kwargs)


def test_c46_same_task_and_arguments_resolve_from_the_cache(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = run_with_child(driver, worker, ws, [1, 2])
    worker.finish(first, "computed")
    second = run_with_child(driver, worker, ws, [1, 2])
    assert driver.completion(second) == (C.CACHED, first)
    assert second not in worker.executes()
    assert driver.resolve(second).value == ["raw", "computed", []]


def test_c47_different_arguments_miss(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = run_with_child(driver, worker, ws, [1])
    worker.finish(first, "one")
    second = run_with_child(driver, worker, ws, [2])
    assert driver.completion(second) is None
    assert second in worker.executes()


def test_c48_memo_within_a_run_reuses_the_first_submission(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    memo = model.StepOptions(memo=True)
    first = worker.child(root, arguments=["x"], options=memo)
    again = worker.child(root, arguments=["x"], options=memo)
    other = worker.child(root, arguments=["y"], options=memo)
    assert again == first  # no new step: the parent is linked to the existing execution
    assert other != first
    run = views.run(driver.db, ws, root.split(":")[0])
    assert run is not None
    assert len(run["steps"]) == 3  # root, x, y
    children = run["steps"][root.rsplit(":", 1)[0]]["executions"]["1"]["children"]
    # The link to the memoised execution is recorded once (duplicates are ignored).
    assert [c["stepId"] for c in children] == [first.rsplit(":", 1)[0], other.rsplit(":", 1)[0]]


def test_c48_memo_is_per_run(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    memo = model.StepOptions(memo=True)
    first = worker.child(driver.submit(ws), arguments=["x"], options=memo)
    worker.finish(first, 1)
    assert worker.child(driver.submit(ws), arguments=["x"], options=memo) != first


def test_c49_a_derived_workspace_hits_its_base_cache(driver: Driver) -> None:
    base = driver.workspace("base")
    derived = driver.workspace("derived", base_id=base)
    base_worker = driver.session(base)
    derived_worker = driver.session(derived)
    first = run_with_child(driver, base_worker, base, ["a"])
    base_worker.finish(first, "from base")
    second = run_with_child(driver, derived_worker, derived, ["a"])
    assert driver.completion(second) == (C.CACHED, first)
    assert driver.resolve(second).value == ["raw", "from base", []]


def test_c50_sibling_and_parent_workspaces_do_not_share_a_child_cache(driver: Driver) -> None:
    base = driver.workspace("base")
    left = driver.workspace("left", base_id=base)
    right = driver.workspace("right", base_id=base)
    workers = {ws: driver.session(ws) for ws in (base, left, right)}
    first = run_with_child(driver, workers[left], left, ["a"])
    workers[left].finish(first, "left")
    for ws in (right, base):
        other = run_with_child(driver, workers[ws], ws, ["a"])
        assert driver.completion(other) is None
        assert other in workers[ws].executes()


def test_c51_run_level_memo_memoises_child_tasks(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws, options=model.StepOptions(memo=True))
    first = worker.child(root, arguments=[1])
    assert worker.child(root, arguments=[1]) == first
    # An explicit false on the wire opts a submission out.
    assert worker.child(root, arguments=[1], options=model.StepOptions(memo=False)) != first


def test_c52_max_age_excludes_older_results(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = run_with_child(driver, worker, ws, [1], options=cache(max_age=10_000))
    worker.finish(first, "fresh")
    driver.advance(10_000)
    hit = run_with_child(driver, worker, ws, [1], options=cache(max_age=10_000))
    assert driver.completion(hit) == (C.CACHED, first)
    driver.advance(1)
    miss = run_with_child(driver, worker, ws, [1], options=cache(max_age=10_000))
    assert driver.completion(miss) is None
    assert miss in worker.executes()


def test_c53_failed_executions_are_never_cache_or_memo_hits(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    failed = run_with_child(driver, worker, ws, [1])
    worker.error(failed)
    worker.terminated(failed)
    retry = run_with_child(driver, worker, ws, [1])
    assert driver.completion(retry) is None
    root = driver.submit(ws)
    memo = model.StepOptions(memo=True)
    broken = worker.child(root, arguments=[2], options=memo)
    worker.error(broken)
    worker.terminated(broken)
    assert worker.child(root, arguments=[2], options=memo) != broken


def test_c53_a_pending_execution_is_a_hit_and_links_queued_duplicates(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws, tasks=())  # nobody runs `work`: duplicates stay queued
    first = run_with_child(driver, worker, ws, [1])
    second = run_with_child(driver, worker, ws, [1])
    # One of the two is linked to the other before either runs; one runs for both.
    linked = [e for e in (first, second) if driver.completion(e) is not None]
    assert len(linked) == 1
    kind, target = driver.completion(linked[0]) or (None, None)
    assert kind is C.CACHED
    late = driver.session(ws)
    assert late.executes() == [target]
    assert target is not None
    late.finish(target, "shared")
    assert driver.resolve(first).value == driver.resolve(second).value == ["raw", "shared", []]


def test_c53_a_queued_duplicate_fails_with_the_execution_it_is_linked_to(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    running = run_with_child(driver, worker, ws, [1])
    linked = run_with_child(driver, worker, ws, [1])
    assert driver.completion(linked) == (C.CACHED, running)
    worker.error(running)
    worker.terminated(running)
    assert driver.resolve(linked).status == "error"


def test_c54_rerunning_a_cached_step_executes_and_later_lookups_use_the_new_result(
    driver: Driver,
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = run_with_child(driver, worker, ws, [1])
    worker.finish(first, "old")
    second = run_with_child(driver, worker, ws, [1])
    assert driver.completion(second) == (C.CACHED, first)
    rerun = driver.reply(commands.RerunStep(workspace_id=ws, step_id=second.rsplit(":", 1)[0]))
    again = rerun["executionId"]
    assert again in worker.executes()  # a re-run forces execution
    worker.finish(again, "new")
    third = run_with_child(driver, worker, ws, [1])
    assert driver.completion(third) == (C.CACHED, again)
    assert driver.resolve(third).value == ["raw", "new", []]


def test_c55_a_shared_namespace_hits_across_targets_and_a_new_version_misses(
    driver: Driver,
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws, tasks=("work", "other"))
    shared = cache(namespace="shared", version="1")
    first = run_with_child(driver, worker, ws, [1], options=shared)
    worker.finish(first, "v1")
    root = driver.submit(ws)
    other_target = worker.child(root, "other", arguments=[1], options=shared)
    assert driver.completion(other_target) == (C.CACHED, first)
    bumped = worker.child(
        root, "other", arguments=[1], options=cache(namespace="shared", version="2")
    )
    assert driver.completion(bumped) is None


def test_c46_cache_params_select_the_arguments_that_count(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = run_with_child(driver, worker, ws, [1, "ignored"], options=cache(params=[0]))
    worker.finish(first, "by the first argument")
    second = run_with_child(driver, worker, ws, [1, "different"], options=cache(params=[0]))
    assert driver.completion(second) == (C.CACHED, first)


def test_c46_root_steps_are_cached_too(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws, options=cache(), arguments=[3])
    worker.finish(first, 9)
    second = driver.submit(ws, options=cache(), arguments=[3])
    assert driver.completion(second) == (C.CACHED, first)
    run = views.run(driver.db, ws, second.split(":")[0])
    assert run is not None
    execution = run["steps"][f"{second.split(':')[0]}:1"]["executions"]["1"]
    assert execution["result"]["type"] == "cached"
    assert execution["result"]["result"]["value"]["data"] == 9
    assert execution["completion"] == {
        "kind": "cached",
        "successor": {"type": "execution", "id": first},
    }


def test_cache_and_memo_keys_are_shown_in_the_run_topic(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    child = worker.child(
        root,
        arguments=[1],
        options=model.StepOptions(
            cache={"params": True, "maxAge": None, "namespace": None, "version": None}, memo=True
        ),
    )
    run = views.run(driver.db, ws, root.split(":")[0])
    assert run is not None
    step = run["steps"][child.rsplit(":", 1)[0]]
    arguments = [["raw", 1, []]]
    assert step["cacheKey"] == caching.cache_key({"params": True}, "app", "work", arguments)[:10]
    assert step["memoKey"] == caching.memo_key(True, "app", "work", arguments)[:10]
    assert run["steps"][root.rsplit(":", 1)[0]]["cacheKey"] is None


# --- Deferral ------------------------------------------------------------------------------


def test_b25_only_the_newest_of_queued_duplicates_runs_and_both_resolve_to_it(
    driver: Driver,
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    defer = model.StepOptions(defer={"params": True}, delay=1000)
    root = driver.submit(ws)
    older = worker.child(root, arguments=["a"], options=defer)
    driver.advance(500)
    newer = worker.child(root, arguments=["a"], options=defer)
    unrelated = worker.child(root, arguments=["b"], options=defer)
    assert driver.completion(older) == (C.DEFERRED, newer)
    assert driver.completion(newer) is None
    assert driver.completion(unrelated) is None
    driver.advance(500)
    assert older not in worker.executes()
    assert newer not in worker.executes()  # debounced: still delayed
    driver.advance(500)
    assert newer in worker.executes()
    worker.finish(newer, "once")
    assert driver.resolve(older).value == ["raw", "once", []]


def test_b25_an_assigned_execution_is_never_deferred(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    defer = model.StepOptions(defer={"params": True})
    running = worker.child(root, arguments=["a"], options=defer)
    assert running in worker.executes()
    later = worker.child(root, arguments=["a"], options=defer)
    assert driver.completion(running) is None
    assert later in worker.executes()


def test_argument_keys_are_positional_and_cover_references() -> None:
    raw = [["raw", {"type": "dict", "items": ["b", 1, "a", 2]}, []]]
    assert caching.argument_key(True, raw, "m:t") == caching.argument_key([0], raw, "m:t")
    assert caching.argument_key(True, raw, "m:t") != caching.argument_key(True, raw, "m:t", "2")
    assert caching.argument_key(True, raw, "m:t") != caching.argument_key(True, raw, "m:u")
    referencing = [["raw", {"type": "ref", "index": 0}, [["execution", "R1:2:1"]]]]
    other = [["raw", {"type": "ref", "index": 0}, [["execution", "R1:3:1"]]]]
    assert caching.argument_key(True, referencing, "m:t") != caching.argument_key(
        True, other, "m:t"
    )
    blob = [["blob", "ab" * 32, 10, []]]
    assert caching.argument_key(True, blob, "m:t") != caching.argument_key(True, raw, "m:t")
    # A missing position contributes an empty part rather than an error.
    assert caching.argument_key([3], raw, "m:t") == caching.argument_key([5], raw, "m:t")
