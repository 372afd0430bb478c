"""Random command sequences against the orchestration core and its real SQLite store.

A Hypothesis state machine submits runs and children (some cached, memoised, deferred,
delayed or retried), connects, disconnects and restarts workers, reports results, errors,
crashes and suspensions, selects, cancels, re-runs, pauses workspaces and lets time pass.
After every step it checks what must always hold:

* at most one live attempt per step per workspace;
* no execution is dispatched to a session that is gone or disconnected, or in a paused
  workspace;
* no value a worker reported is lost: it stays the execution's result and what the
  execution resolves to;
* a cache hit is always reused: nothing is dispatched while a reusable execution with
  its cache key exists in its workspace's ancestry, and a cached execution's successor
  really is such an execution.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pycoflux.orchestration import caching, commands, effects, lifecycle, model
from tests.unit.orchestration.conftest import Driver, Session

C = model.Completion
TASKS = ("work", "other")
CACHE = {"params": True, "maxAge": None, "namespace": None, "version": None}

options_strategy = st.builds(
    model.StepOptions,
    cache=st.sampled_from([None, None, None, CACHE, {**CACHE, "maxAge": 5_000}]),
    defer=st.sampled_from([None, None, None, {"params": True}]),
    memo=st.sampled_from([None, True]),
    delay=st.sampled_from([0, 0, 1_000]),
    retries=st.sampled_from(
        [None, model.Retries(limit=1), model.Retries(limit=None, backoff_min=100, backoff_max=500)]
    ),
)


class Orchestration(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.driver = Driver(seed=1)
        self.base = self.driver.workspace("base")
        self.child = self.driver.workspace("child", base_id=self.base)
        self.workspaces = [self.base, self.child]
        self.paused: set[str] = set()
        self.sessions: list[Session] = []
        self.reported: dict[str, Any] = {}  # execution id -> value accepted from a worker
        self.dispatched: list[tuple[str, str]] = []  # (session, execution) in the last step

    def teardown(self) -> None:
        self.driver.close()

    # --- Helpers ------------------------------------------------------------------------

    def handle(self, command: commands.Command) -> list[effects.Effect]:
        produced = self.driver.handle(command)
        self._dispatches(produced)
        return produced

    def _dispatches(self, produced: list[effects.Effect]) -> None:
        self.dispatched = [
            (e.session_id, e.frame[1]["params"][0])
            for e in produced
            if isinstance(e, effects.Send)
            and e.frame[0] == 1
            and e.frame[1]["command"] == "execute"
        ]

    def live_sessions(self) -> list[Session]:
        return [s for s in self.sessions if self.driver.core.session_token_valid(s.token)]

    def held(self, session: Session) -> list[str]:
        live = self.driver.core._sessions.get(session.id)
        if live is None:
            return []
        # In row-id order: external ids are random, so ordering by them would make the
        # rules' choices differ between Hypothesis replays of the same example.
        return [self.driver.store.execution(e).external_id for e in sorted(live.held)]

    def all_held(self) -> list[tuple[Session, str]]:
        return [(s, e) for s in self.live_sessions() for e in self.held(s)]

    def executions(self) -> list[str]:
        rows = self.driver.db.execute(
            "SELECT r.external_id || ':' || s.number || ':' || e.attempt FROM executions e"
            " JOIN steps s ON s.id = e.step_id JOIN runs r ON r.id = s.run_id ORDER BY e.id"
        ).fetchall()
        return [row[0] for row in rows]

    @staticmethod
    def pick(items: list[Any], index: int) -> Any:
        return items[index % len(items)]

    # --- Rules ----------------------------------------------------------------------------

    @initialize()
    def workers_everywhere(self) -> None:
        for workspace in (0, 1):
            self.start_worker(workspace, set(TASKS))

    @rule(workspace=st.integers(0, 1), tasks=st.sets(st.sampled_from(TASKS)))
    def start_worker(self, workspace: int, tasks: set[str]) -> None:
        ws = self.workspaces[workspace]
        token = self.driver.reply(commands.CreateSession(workspace_id=ws))["sessionId"]
        session = Session(self.driver, token, ws)
        self.handle(commands.ConnectSession(token=token, workspace_id=ws))
        self.handle(
            commands.DeclareTargets(
                session_id=session.id,
                targets={"app": {"workflow": ["main"], "task": sorted(tasks)}},
                concurrency=3,
            )
        )
        self.sessions.append(session)

    @rule(workspace=st.integers(0, 1), options=options_strategy, argument=st.integers(0, 2))
    def submit_run(self, workspace: int, options: model.StepOptions, argument: int) -> None:
        ws = self.workspaces[workspace]
        produced = self.handle(
            commands.SubmitWorkflow(
                workspace_id=ws,
                module="app",
                target="main",
                arguments=[["raw", argument, []]],
                options=options,
            )
        )
        assert any(isinstance(e, effects.Reply) for e in produced)

    @precondition(lambda self: self.all_held())
    @rule(
        index=st.integers(0, 1000),
        task=st.sampled_from(TASKS),
        options=options_strategy,
        argument=st.integers(0, 2),
    )
    def submit_child(
        self, index: int, task: str, options: model.StepOptions, argument: int
    ) -> None:
        session, parent = self.pick(self.all_held(), index)
        self.handle(
            commands.SubmitChild(
                session_id=session.id,
                request_id=index,
                parent_id=parent,
                module="app",
                target=task,
                type=model.TargetType.TASK,
                arguments=[["raw", argument, []]],
                group_id=None,
                options=options,
            )
        )

    @precondition(lambda self: self.all_held())
    @rule(index=st.integers(0, 1000), data=st.integers(0, 5))
    def report_value(self, index: int, data: int) -> None:
        session, execution_id = self.pick(self.all_held(), index)
        execution = self.driver.execution(execution_id)
        fresh = (
            self.driver.store.result(execution.id) is None
            and self.driver.store.completion(execution.id) is None
        )
        self.handle(
            commands.RecordResult(
                session_id=session.id, execution_id=execution_id, value=["raw", data, []]
            )
        )
        if fresh:
            self.reported[execution_id] = ["raw", data, []]

    @precondition(lambda self: self.all_held())
    @rule(index=st.integers(0, 1000), retryable=st.sampled_from([None, True, False]))
    def report_error(self, index: int, retryable: bool | None) -> None:
        session, execution_id = self.pick(self.all_held(), index)
        self.handle(
            commands.RecordError(
                session_id=session.id,
                execution_id=execution_id,
                error=model.ErrorInfo(type="E", message="m"),
                retryable=retryable,
            )
        )

    @precondition(lambda self: self.all_held())
    @rule(index=st.integers(0, 1000))
    def terminate(self, index: int) -> None:
        session, execution_id = self.pick(self.all_held(), index)
        self.handle(commands.RecordTermination(session_id=session.id, execution_ids=[execution_id]))

    @precondition(lambda self: self.all_held())
    @rule(index=st.integers(0, 1000), later=st.sampled_from([None, 500]))
    def suspend(self, index: int, later: int | None) -> None:
        session, execution_id = self.pick(self.all_held(), index)
        self.handle(
            commands.Suspend(
                session_id=session.id,
                execution_id=execution_id,
                execute_after=None if later is None else self.driver.now + later,
            )
        )

    @precondition(lambda self: self.all_held())
    @rule(
        index=st.integers(0, 1000),
        other=st.integers(0, 1000),
        timeout=st.sampled_from([None, 0, 300]),
        suspend=st.booleans(),
    )
    def select(self, index: int, other: int, timeout: int | None, suspend: bool) -> None:
        session, caller = self.pick(self.all_held(), index)
        target = self.pick(self.executions(), other)
        self.handle(
            commands.Select(
                session_id=session.id,
                request_id=1_000_000 + index,
                execution_id=caller,
                handles=[{"type": "execution", "id": target}],
                timeout_ms=timeout,
                suspend=suspend,
            )
        )

    @precondition(lambda self: self.all_held())
    @rule(index=st.integers(0, 1000))
    def heartbeat(self, index: int) -> None:
        sessions = self.live_sessions()
        session = self.pick(sessions, index)
        held = self.held(session)
        reported = held[: index % (len(held) + 1)]
        self.handle(
            commands.RecordHeartbeats(session_id=session.id, statuses=dict.fromkeys(reported, 1))
        )

    @precondition(lambda self: self.live_sessions())
    @rule(index=st.integers(0, 1000))
    def disconnect(self, index: int) -> None:
        session = self.pick(self.live_sessions(), index)
        self.handle(commands.DisconnectSession(session_id=session.id))

    @precondition(lambda self: self.live_sessions())
    @rule(index=st.integers(0, 1000))
    def reconnect(self, index: int) -> None:
        session = self.pick(self.live_sessions(), index)
        self.handle(commands.ConnectSession(token=session.token, workspace_id=session.workspace_id))
        self.handle(
            commands.DeclareTargets(
                session_id=session.id,
                targets={"app": {"workflow": ["main"], "task": list(TASKS)}},
                concurrency=3,
            )
        )

    @precondition(lambda self: self.executions())
    @rule(index=st.integers(0, 1000), workspace=st.integers(0, 1))
    def cancel(self, index: int, workspace: int) -> None:
        self.handle(
            commands.CancelExecution(
                workspace_id=self.workspaces[workspace],
                execution_id=self.pick(self.executions(), index),
            )
        )

    @precondition(lambda self: self.executions())
    @rule(index=st.integers(0, 1000), workspace=st.integers(0, 1))
    def rerun(self, index: int, workspace: int) -> None:
        step = self.pick(self.executions(), index).rsplit(":", 1)[0]
        self.handle(commands.RerunStep(workspace_id=self.workspaces[workspace], step_id=step))

    @rule(workspace=st.integers(0, 1))
    def toggle_pause(self, workspace: int) -> None:
        ws = self.workspaces[workspace]
        if ws in self.paused:
            self.paused.discard(ws)
            self.handle(commands.ResumeWorkspace(workspace_id=ws))
        else:
            self.paused.add(ws)
            self.handle(commands.PauseWorkspace(workspace_id=ws))

    @rule(ms=st.sampled_from([100, 1_000, 10_000, 40_000]))
    def advance(self, ms: int) -> None:
        dispatched: list[tuple[str, str]] = []
        target = self.driver.now + ms
        while True:
            due = [(at, key) for key, at in self.driver.timers.items() if at <= target]
            if not due:
                break
            at, key = min(due, key=lambda item: (item[0], repr(item[1])))
            del self.driver.timers[key]
            self.driver.now = max(self.driver.now, at)
            self.handle(commands.TimerFired(key=key))
            self.check_dispatches()
            dispatched += self.dispatched
        self.driver.now = target
        self.dispatched = dispatched

    @rule()
    def restart(self) -> None:
        self.driver.restart(downtime=1_000)
        self.dispatched = []

    # --- Invariants ---------------------------------------------------------------------------

    @invariant()
    def one_live_attempt_per_step_and_workspace(self) -> None:
        rows = self.driver.db.execute(
            "SELECT e.step_id, e.workspace_id, count(*) FROM executions e"
            " LEFT JOIN completions c ON c.execution_id = e.id WHERE c.execution_id IS NULL"
            " GROUP BY e.step_id, e.workspace_id HAVING count(*) > 1"
        ).fetchall()
        assert rows == []

    @invariant()
    def check_dispatches(self) -> None:
        """Nothing dispatched to a dead session, or from a paused workspace, or that the
        cache could have answered."""
        store = self.driver.store
        for session_id, execution_id in self.dispatched:
            session = self.driver.core._sessions.get(session_id)
            assert session is not None and session.connected, (session_id, execution_id)
            execution = self.driver.execution(execution_id)
            assert store.workspace_state(execution.workspace_id) is model.WorkspaceState.ACTIVE
            assert execution.workspace_id == session.workspace_id
            if execution.attempt == 1 and execution.cache_key is not None:
                cache = store.step_options(execution.step_id).cache or {}
                hit = caching.cache_hit(store, execution, cache, self.driver.now)
                assert hit is None, (execution_id, store.execution(hit).external_id)

    @invariant()
    def no_reported_value_is_lost(self) -> None:
        for execution_id, value in self.reported.items():
            execution = self.driver.execution(execution_id)
            result = self.driver.store.result(execution.id)
            assert result is not None and result.value == value, execution_id
            assert lifecycle.resolve(self.driver.store, execution.id).value == value

    @invariant()
    def cached_executions_point_at_reusable_ones(self) -> None:
        store = self.driver.store
        for execution_id, successor in self.driver.db.execute(
            "SELECT execution_id, successor_id FROM completions WHERE kind = ?",
            (int(C.CACHED),),
        ).fetchall():
            cached, source = store.execution(execution_id), store.execution(successor)
            assert source.cache_key == cached.cache_key
            assert source.step_id != cached.step_id
            assert source.workspace_id in store.workspace_chain(cached.workspace_id)
            # Chosen while live (then it may still fail, or be handed off in turn: a chain
            # the resolution follows), draining or succeeded; never an outcome that cannot
            # produce a value.
            completion = store.completion(source.id)
            if completion is not None and completion[0] is not C.SUCCEEDED:
                assert source.created_at <= self.driver.now
                assert completion[0] is not C.RECURRED


Orchestration.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestOrchestration = Orchestration.TestCase
