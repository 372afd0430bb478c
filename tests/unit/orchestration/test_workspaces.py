"""Workspaces in the core: pause, resume, update, archive, inheritance and re-runs across
them (``semantics.md`` §2.2, §7.11; checklist E 70-78)."""

from __future__ import annotations

from pycoflux.orchestration import commands, effects, model
from pycoflux.storage import views
from tests.unit.orchestration.conftest import Driver

C = model.Completion


def state(driver: Driver, ws: str) -> str:
    return str(views.workspaces(driver.db)[ws]["state"])


def test_e70_a_paused_workspace_dispatches_nothing_until_resumed(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    driver.reply(commands.PauseWorkspace(workspace_id=ws))
    driver.reply(commands.PauseWorkspace(workspace_id=ws))  # idempotent
    assert state(driver, ws) == "paused"
    first = driver.submit(ws)
    driver.advance(60_000)
    assert worker.executes() == []
    driver.reply(commands.ResumeWorkspace(workspace_id=ws))
    driver.reply(commands.ResumeWorkspace(workspace_id=ws))
    assert state(driver, ws) == "active"
    assert worker.executes() == [first]


def test_e70_pausing_keeps_assigned_executions_running(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    first = driver.submit(ws)
    driver.reply(commands.PauseWorkspace(workspace_id=ws))
    worker.finish(first, "done anyway")
    assert driver.completion(first) == (C.SUCCEEDED, None)


def test_e70_a_paused_workspace_does_not_resolve_from_the_cache_or_defer(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    options = model.StepOptions(
        cache={"params": True, "maxAge": None, "namespace": None, "version": None}
    )
    first = driver.submit(ws, options=options)
    worker.finish(first, 1)
    driver.reply(commands.PauseWorkspace(workspace_id=ws))
    second = driver.submit(ws, options=options)
    assert driver.completion(second) is None
    driver.reply(commands.ResumeWorkspace(workspace_id=ws))
    assert driver.completion(second) == (C.CACHED, first)


def test_e73_a_base_run_step_rerun_in_a_derived_workspace_becomes_its_latest_result(
    driver: Driver,
) -> None:
    base = driver.workspace("base")
    derived = driver.workspace("derived", base_id=base)
    base_worker = driver.session(base)
    derived_worker = driver.session(derived)
    root = driver.submit(base)
    base_worker.finish(root, "base")
    run_id, step = root.split(":")[0], root.rsplit(":", 1)[0]
    rerun = driver.reply(commands.RerunStep(workspace_id=derived, step_id=step))
    assert rerun == {"executionId": f"{step}:2", "attempt": 2}
    assert derived_worker.executes() == [f"{step}:2"]
    derived_worker.finish(f"{step}:2", "derived")
    run = views.run(driver.db, derived, run_id)
    assert run is not None
    executions = run["steps"][step]["executions"]
    assert executions["2"]["workspaceId"] == derived
    assert executions["2"]["result"]["value"]["data"] == "derived"
    # The base workspace does not see the derived workspace's attempt.
    base_view = views.run(driver.db, base, run_id)
    assert base_view is not None
    assert set(base_view["steps"][step]["executions"]) == {"1"}


def test_e74_rerun_in_a_workspace_outside_the_lineage_is_not_found(driver: Driver) -> None:
    base = driver.workspace("base")
    other = driver.workspace("other")
    derived = driver.workspace("derived", base_id=base)
    root = driver.submit(derived)
    step = root.rsplit(":", 1)[0]
    for ws in (other, base):  # a base is not a descendant of the derived workspace
        rejected = driver.rejected(commands.RerunStep(workspace_id=ws, step_id=step))
        assert (rejected.error, rejected.status) == ("not_found", 404)
    assert not driver.exists(f"{step}:2")


def test_rerunning_a_step_of_an_unknown_run_is_not_found(driver: Driver) -> None:
    ws = driver.workspace()
    rejected = driver.rejected(commands.RerunStep(workspace_id=ws, step_id="Rnope:1"))
    assert (rejected.error, rejected.status) == ("not_found", 404)
    malformed = driver.rejected(commands.RerunStep(workspace_id=ws, step_id="Rnope"))
    assert malformed.details == {"stepId": "invalid"}


def test_e75_rerunning_cancels_the_step_in_progress_in_that_workspace(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    root = driver.submit(ws)
    worker.heartbeat(root)
    step = root.rsplit(":", 1)[0]
    driver.reply(commands.RerunStep(workspace_id=ws, step_id=step))
    assert driver.completion(root) == (C.CANCELLED, None)
    assert root in worker.aborts()
    assert worker.executes() == [root, f"{step}:2"]


def test_e76_archiving_a_workspace_with_live_children_fails(driver: Driver) -> None:
    base = driver.workspace("base")
    driver.workspace("child", base_id=base)
    rejected = driver.rejected(commands.ArchiveWorkspace(workspace_id=base))
    assert rejected.details == {"workspaceId": "has_dependencies"}
    assert state(driver, base) == "active"


def test_e76_archiving_closes_sessions_cancels_pending_work_and_hides_the_workspace(
    driver: Driver,
) -> None:
    ws = driver.workspace("doomed")
    worker = driver.session(ws)
    running = driver.submit(ws)
    worker.heartbeat(running)
    queued = driver.submit(ws, "undeclared")
    produced = driver.handle(commands.ArchiveWorkspace(workspace_id=ws))
    assert effects.Reply(result=None) in produced
    assert (worker.id, "workspace_not_found") in driver.closed
    assert not driver.core.session_token_valid(worker.token)
    # Its sessions go first, so what they held is abandoned; what was queued is cancelled.
    assert driver.completion(running) == (C.ABANDONED, None)
    assert driver.completion(queued) == (C.CANCELLED, None)
    assert state(driver, ws) == "archived"
    assert views.queue(driver.db, ws) is None
    for command in (
        commands.PauseWorkspace(workspace_id=ws),
        commands.ArchiveWorkspace(workspace_id=ws),
        commands.UpdateWorkspace(workspace_id=ws, name="again"),
        commands.SubmitWorkflow(
            workspace_id=ws, module="app", target="main", arguments=[], options=model.StepOptions()
        ),
    ):
        assert driver.rejected(command).status == 404
    # The archived name can be reused.
    driver.workspace("doomed")


def test_e76_archiving_abandons_then_cancels_retried_work(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    retried = driver.submit(
        ws, options=model.StepOptions(retries=model.Retries(limit=3, backoff_min=0))
    )
    worker.heartbeat(retried)
    driver.reply(commands.ArchiveWorkspace(workspace_id=ws))
    kind, successor = driver.completion(retried) or (None, None)
    assert kind is C.ABANDONED
    assert successor is not None
    assert driver.completion(successor) == (C.CANCELLED, None)


def test_e78_names_are_checked_and_base_cycles_rejected(driver: Driver) -> None:
    root = driver.workspace("root")
    child = driver.workspace("root/child", base_id=root)
    grandchild = driver.workspace("root/child/grand", base_id=child)
    assert driver.rejected(commands.CreateWorkspace(name="a b")).details == {"name": "invalid"}
    assert driver.rejected(commands.CreateWorkspace(name="a//b")).details == {"name": "invalid"}
    for base in (root, grandchild):
        rejected = driver.rejected(
            commands.UpdateWorkspace(workspace_id=root, base_id=base, set_base=True)
        )
        assert rejected.details == {"baseId": "invalid"}
    rename = commands.UpdateWorkspace(workspace_id=child, name="ROOT")
    assert driver.rejected(rename).details == {"name": "exists"}
    assert driver.rejected(commands.UpdateWorkspace(workspace_id=child, name="x y")).details == {
        "name": "invalid"
    }


def test_update_renames_rebases_and_clears_the_base(driver: Driver) -> None:
    one = driver.workspace("one")
    two = driver.workspace("two")
    driver.reply(
        commands.UpdateWorkspace(workspace_id=two, name="deux", base_id=one, set_base=True)
    )
    assert views.workspaces(driver.db)[two] == {"name": "deux", "baseId": one, "state": "active"}
    driver.reply(commands.UpdateWorkspace(workspace_id=two, name="Deux"))  # case only
    driver.reply(commands.UpdateWorkspace(workspace_id=two, base_id=None, set_base=True))
    assert views.workspaces(driver.db)[two] == {"name": "Deux", "baseId": None, "state": "active"}
    driver.reply(commands.UpdateWorkspace(workspace_id=two))  # nothing to change


def manifest(target: str, delay: int = 0) -> dict[str, dict[str, object]]:
    return {target: {"parameters": [], "waitFor": [], "delay": delay}}


def test_manifests_are_inherited_module_by_module(driver: Driver) -> None:
    base = driver.workspace("base")
    derived = driver.workspace("derived", base_id=base)
    driver.reply(
        commands.RegisterManifests(
            workspace_id=base, manifests={"etl": manifest("load"), "ml": manifest("train")}
        )
    )
    driver.reply(
        commands.RegisterManifests(workspace_id=derived, manifests={"ml": manifest("fit", 5)})
    )
    seen = views.manifests(driver.db, derived)
    assert seen is not None
    assert set(seen) == {"etl", "ml"}
    assert set(seen["ml"]) == {"fit"}  # the derived workspace's module wins as a whole
    workflow = views.workflow(driver.db, derived, "etl", "load")
    assert workflow is not None
    assert workflow["configuration"]["delay"] == 0
    modules = views.modules(driver.db, derived)
    assert modules is not None
    assert set(modules) == {"etl", "ml"}
    base_view = views.manifests(driver.db, base)
    assert base_view is not None
    assert set(base_view["ml"]) == {"train"}  # nothing flows upwards
    driver.reply(commands.ArchiveModule(workspace_id=derived, module="etl"))
    hidden = views.manifests(driver.db, derived)
    assert hidden is not None
    assert set(hidden) == {"ml"}  # archiving hides the inherited module too
