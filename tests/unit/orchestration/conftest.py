"""A driver for the orchestration core on the real SQLite store in memory.

Time is an integer the test moves; armed timers fire (as ``TimerFired`` commands) when
``advance`` passes them, in the order they are due. Frames sent to sessions are kept
per session, the way ``ProjectHost`` would deliver or queue them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from pycoflux.orchestration import commands, core, effects, lifecycle, model
from pycoflux.storage import orchestration, sqlite

START = 1_700_000_000_000


class Driver:
    def __init__(self, seed: int = 0) -> None:
        self.db = sqlite.connect(":memory:")
        self.store = orchestration.SqliteOrchestrationStore(self.db)
        self.core = core.Orchestrator(self.store, rng=random.Random(seed))
        self.now = START
        self.timers: dict[tuple[Any, ...], int] = {}
        self.frames: dict[str, list[list[Any]]] = {}
        self.closed: list[tuple[str, str]] = []
        self.handle(commands.Start())

    def close(self) -> None:
        self.db.close()

    def restart(self, downtime: int = 0) -> None:
        """A new core on the same store, as after a server crash: timers and frames are lost."""
        self.now += downtime
        self.store = orchestration.SqliteOrchestrationStore(self.db)
        self.core = core.Orchestrator(self.store, rng=random.Random(1))
        self.timers.clear()
        self.frames.clear()
        self.handle(commands.Start())

    # --- Applying commands ------------------------------------------------------------

    def handle(self, command: commands.Command) -> list[effects.Effect]:
        produced = self.core.handle(command, self.now)
        for effect in produced:
            match effect:
                case effects.Send(session_id=session_id, frame=frame):
                    self.frames.setdefault(session_id, []).append(frame)
                case effects.CloseSession(session_id=session_id, reason=reason):
                    self.closed.append((session_id, reason))
                case effects.ArmTimer(key=key, at=at):
                    self.timers[key] = at
                case effects.DisarmTimer(key=key):
                    self.timers.pop(key, None)
        return produced

    def reply(self, command: commands.Command) -> Any:
        """The command's Reply result; fails on a rejection."""
        for effect in self.handle(command):
            if isinstance(effect, effects.Rejected):
                raise AssertionError(f"rejected: {effect}")
            if isinstance(effect, effects.Reply):
                return effect.result
        raise AssertionError("no reply")

    def rejected(self, command: commands.Command) -> effects.Rejected:
        for effect in self.handle(command):
            if isinstance(effect, effects.Rejected):
                return effect
        raise AssertionError("not rejected")

    def advance(self, ms: int) -> None:
        """Move time forward, firing every timer that falls due on the way, in order."""
        target = self.now + ms
        while True:
            due = [(at, key) for key, at in self.timers.items() if at <= target]
            if not due:
                break
            at, key = min(due, key=lambda item: (item[0], repr(item[1])))
            del self.timers[key]
            self.now = max(self.now, at)
            self.handle(commands.TimerFired(key=key))
        self.now = target

    # --- Set-up helpers -----------------------------------------------------------------

    def workspace(self, name: str = "default", base_id: str | None = None) -> str:
        workspace_id: str = self.reply(commands.CreateWorkspace(name=name, base_id=base_id))["id"]
        return workspace_id

    def session(
        self,
        workspace_id: str,
        *,
        workflows: tuple[str, ...] = ("main",),
        tasks: tuple[str, ...] = ("work",),
        module: str = "app",
        concurrency: int = 0,
    ) -> Session:
        token: str = self.reply(commands.CreateSession(workspace_id=workspace_id))["sessionId"]
        session = Session(self, token, workspace_id)
        session.connect()
        self.handle(
            commands.DeclareTargets(
                session_id=session.id,
                targets={module: {"workflow": list(workflows), "task": list(tasks)}},
                concurrency=concurrency,
            )
        )
        return session

    def submit(
        self,
        workspace_id: str,
        target: str = "main",
        *,
        module: str = "app",
        options: model.StepOptions | None = None,
        arguments: list[Any] | None = None,
    ) -> str:
        """Start a run; returns its root execution id. ``arguments`` are plain JSON data."""
        result = self.reply(
            commands.SubmitWorkflow(
                workspace_id=workspace_id,
                module=module,
                target=target,
                arguments=[["raw", a, []] for a in arguments or []],
                options=options or model.StepOptions(),
            )
        )
        execution_id: str = result["executionId"]
        return execution_id

    # --- Reading state --------------------------------------------------------------------

    def execution(self, external_id: str) -> model.Execution:
        execution = self.store.execution_by_external_id(external_id)
        assert execution is not None, external_id
        return execution

    def exists(self, external_id: str) -> bool:
        return self.store.execution_by_external_id(external_id) is not None

    def completion(self, external_id: str) -> tuple[model.Completion, str | None] | None:
        completion = self.store.completion(self.execution(external_id).id)
        if completion is None:
            return None
        kind, successor = completion
        return kind, None if successor is None else self.store.execution(successor).external_id

    def resolve(self, external_id: str) -> lifecycle.Resolution:
        return lifecycle.resolve(self.store, self.execution(external_id).id)

    def pending(self, external_id: str) -> str | None:
        """The execution that ``external_id`` currently waits on, if it is pending."""
        pending = self.resolve(external_id).pending
        return None if pending is None else self.store.execution(pending).external_id


class Session:
    """A connected worker session, seen from the core."""

    def __init__(self, driver: Driver, token: str, workspace_id: str) -> None:
        self.driver = driver
        self.token = token
        self.id = token.split(".")[0]
        self.workspace_id = workspace_id
        self._request_ids = iter(range(1, 1_000_000))

    @property
    def frames(self) -> list[list[Any]]:
        return self.driver.frames.setdefault(self.id, [])

    def connect(self) -> list[Any]:
        frame: list[Any] = self.driver.reply(
            commands.ConnectSession(token=self.token, workspace_id=self.workspace_id)
        )
        return frame

    def disconnect(self) -> None:
        self.driver.handle(commands.DisconnectSession(session_id=self.id))

    def executes(self) -> list[str]:
        return [
            f[1]["params"][0] for f in self.frames if f[0] == 1 and f[1]["command"] == "execute"
        ]

    def aborts(self) -> list[str]:
        return [f[1]["params"][0] for f in self.frames if f[0] == 1 and f[1]["command"] == "abort"]

    def replies(self, request_id: int) -> list[list[Any]]:
        return [f for f in self.frames if f[0] in (2, 3) and f[1] == request_id]

    def heartbeat(self, *execution_ids: str) -> None:
        self.driver.handle(
            commands.RecordHeartbeats(session_id=self.id, statuses=dict.fromkeys(execution_ids, 1))
        )

    def result(self, execution_id: str, data: Any) -> None:
        self.driver.handle(
            commands.RecordResult(
                session_id=self.id, execution_id=execution_id, value=["raw", data, []]
            )
        )

    def error(self, execution_id: str, *, retryable: bool | None = None) -> None:
        self.driver.handle(
            commands.RecordError(
                session_id=self.id,
                execution_id=execution_id,
                error=model.ErrorInfo(type="ValueError", message="boom"),
                retryable=retryable,
            )
        )

    def terminated(self, *execution_ids: str) -> None:
        self.driver.handle(
            commands.RecordTermination(session_id=self.id, execution_ids=list(execution_ids))
        )

    def finish(self, execution_id: str, data: Any) -> None:
        self.result(execution_id, data)
        self.terminated(execution_id)

    def child(
        self,
        parent_id: str,
        target: str = "work",
        *,
        type: model.TargetType = model.TargetType.TASK,
        options: model.StepOptions | None = None,
        arguments: list[Any] | None = None,
        values: list[model.Value] | None = None,
    ) -> str:
        request_id = next(self._request_ids)
        self.driver.handle(
            commands.SubmitChild(
                session_id=self.id,
                request_id=request_id,
                parent_id=parent_id,
                module="app",
                target=target,
                type=type,
                arguments=values or [["raw", a, []] for a in arguments or []],
                group_id=None,
                options=options or model.StepOptions(),
            )
        )
        (reply,) = self.replies(request_id)
        child: str = reply[2][0]
        return child

    def request(self, make: Any) -> list[Any]:
        """Send a request built by ``make(request_id)``; returns its reply frame."""
        request_id = next(self._request_ids)
        self.driver.handle(make(request_id))
        replies = self.replies(request_id)
        assert len(replies) == 1, replies
        return replies[0]

    def commands(self, name: str) -> list[list[Any]]:
        """Params of every ``name`` command sent to this session so far."""
        return [f[1]["params"] for f in self.frames if f[0] == 1 and f[1]["command"] == name]

    def select_handles(
        self,
        caller: str,
        handles: list[dict[str, Any]],
        *,
        timeout_ms: int | None = None,
        suspend: bool = False,
        cancel_remaining: bool = False,
    ) -> int:
        request_id = next(self._request_ids)
        self.driver.handle(
            commands.Select(
                session_id=self.id,
                request_id=request_id,
                execution_id=caller,
                handles=handles,
                timeout_ms=timeout_ms,
                suspend=suspend,
                cancel_remaining=cancel_remaining,
            )
        )
        return request_id

    def select(
        self,
        caller: str,
        handles: list[str],
        *,
        timeout_ms: int | None = None,
        suspend: bool = False,
        cancel_remaining: bool = False,
    ) -> int:
        request_id = next(self._request_ids)
        self.driver.handle(
            commands.Select(
                session_id=self.id,
                request_id=request_id,
                execution_id=caller,
                handles=[{"type": "execution", "id": h} for h in handles],
                timeout_ms=timeout_ms,
                suspend=suspend,
                cancel_remaining=cancel_remaining,
            )
        )
        return request_id


@pytest.fixture
def driver() -> Iterator[Driver]:
    d = Driver()
    yield d
    d.close()
