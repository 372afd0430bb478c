"""Streams in the core (``semantics.md`` §9.1; checklist M 151-172)."""

from __future__ import annotations

from typing import Any

from pycoflux.orchestration import commands, model
from pycoflux.storage import views
from tests.unit.orchestration.conftest import Driver, Session

C = model.Completion


def raw(data: Any) -> list[Any]:
    return ["raw", data, []]


def register(
    worker: Session,
    producer: str,
    position: int = 0,
    buffer: int | None = None,
    timeout: int | None = None,
) -> dict[str, Any]:
    reply = worker.request(
        lambda request_id: commands.RegisterStream(
            session_id=worker.id,
            request_id=request_id,
            execution_id=producer,
            position=position,
            buffer=buffer,
            timeout_ms=timeout,
        )
    )
    assert reply[0] == 2, reply
    result: dict[str, Any] = reply[2]
    return result


def append(driver: Driver, worker: Session, producer: str, *items: int, index: int = 0) -> None:
    for sequence in items:
        driver.handle(
            commands.AppendStream(
                session_id=worker.id,
                execution_id=producer,
                index=index,
                sequence=sequence,
                value=raw(f"item {sequence}"),
            )
        )


def close(
    driver: Driver,
    worker: Session,
    producer: str,
    index: int = 0,
    error: model.ErrorInfo | None = None,
) -> None:
    driver.handle(
        commands.CloseStream(
            session_id=worker.id, request_id=None, execution_id=producer, index=index, error=error
        )
    )


def subscribe(
    driver: Driver,
    worker: Session,
    consumer: str,
    stream_id: str,
    subscription_id: int = 1,
    *,
    from_sequence: int = 0,
    stride: model.Stride | None = None,
    prefetch: int = 16,
) -> None:
    driver.handle(
        commands.SubscribeStream(
            session_id=worker.id,
            subscription_id=subscription_id,
            execution_id=consumer,
            stream_id=stream_id,
            from_sequence=from_sequence,
            stride=stride,
            prefetch=prefetch,
        )
    )


def ack(
    driver: Driver, worker: Session, consumer: str, count: int, sequence: int, sub: int = 1
) -> None:
    driver.handle(
        commands.AckStream(
            session_id=worker.id,
            execution_id=consumer,
            subscription_id=sub,
            count=count,
            sequence=sequence,
        )
    )


def received(worker: Session, consumer: str, sub: int = 1) -> list[int]:
    """Sequences delivered to a subscription so far."""
    return [
        item[0]
        for params in worker.commands("stream_items")
        if params[0] == consumer and params[1] == sub
        for item in params[2]
    ]


def closures(worker: Session, consumer: str, sub: int = 1) -> list[list[Any]]:
    return [
        params[2:]
        for params in worker.commands("stream_closed")
        if params[0] == consumer and params[1] == sub
    ]


def demand(worker: Session, producer: str) -> int:
    return sum(p[2] for p in worker.commands("stream_demand") if p[0] == producer)


def pair(driver: Driver) -> tuple[str, Session, str, str]:
    """A workspace, a worker, a producer execution and a consumer execution."""
    ws = driver.workspace()
    worker = driver.session(ws, tasks=("work", "consume"))
    root = driver.submit(ws)
    producer = worker.child(root)
    consumer = worker.child(root, "consume")
    return ws, worker, producer, consumer


def test_m151_a_late_consumer_reads_the_backlog_and_a_clean_closure(driver: Driver) -> None:
    _, worker, producer, consumer = pair(driver)
    stream = register(worker, producer)
    assert stream == {"id": f"{producer.rsplit(':', 1)[0]}_0", "index": 0, "head": -1}
    assert register(worker, producer) == stream  # the same position again: the same stream
    append(driver, worker, producer, 0, 1, 2)
    close(driver, worker, producer)
    subscribe(driver, worker, consumer, stream["id"])
    assert received(worker, consumer) == [0, 1, 2]
    items = next(p for p in worker.commands("stream_items") if p[0] == consumer)[2]
    assert items[0] == [0, raw("item 0")]
    assert closures(worker, consumer) == [["complete", None]]


def test_m152_m160_a_subscriber_gets_live_items_then_the_closure(driver: Driver) -> None:
    _, worker, producer, consumer = pair(driver)
    stream = register(worker, producer)
    subscribe(driver, worker, consumer, stream["id"])
    assert received(worker, consumer) == []
    append(driver, worker, producer, 0)
    append(driver, worker, producer, 0, 1)  # duplicates are ignored
    assert received(worker, consumer) == [0, 1]
    assert closures(worker, consumer) == []
    close(driver, worker, producer)
    assert closures(worker, consumer) == [["complete", None]]
    append(driver, worker, producer, 2)  # closed: ignored
    assert received(worker, consumer) == [0, 1]


def test_m153_strides_select_sequences_and_a_stop_closes_early(driver: Driver) -> None:
    _, worker, producer, consumer = pair(driver)
    stream = register(worker, producer)
    append(driver, worker, producer, *range(10))
    subscribe(driver, worker, consumer, stream["id"], 1, stride=model.Stride(start=2, stop=5))
    subscribe(driver, worker, consumer, stream["id"], 2, stride=model.Stride(start=1, step=3))
    subscribe(
        driver, worker, consumer, stream["id"], 3, stride=model.Stride(start=1, stop=8, step=2)
    )
    assert received(worker, consumer, 1) == [2, 3, 4]
    assert closures(worker, consumer, 1) == [["complete", None]]  # closed early, stream open
    assert received(worker, consumer, 2) == [1, 4, 7]
    assert closures(worker, consumer, 2) == []
    assert received(worker, consumer, 3) == [1, 3, 5, 7]
    assert closures(worker, consumer, 3) == [["complete", None]]


def test_m154_a_producer_error_closes_with_the_error(driver: Driver) -> None:
    _, worker, producer, consumer = pair(driver)
    stream = register(worker, producer)
    subscribe(driver, worker, consumer, stream["id"])
    error = model.ErrorInfo(type="ValueError", message="bad item", frames=[["f.py", 3, "g", "x"]])
    close(driver, worker, producer, error=error)
    assert closures(worker, consumer) == [
        [
            "errored",
            {"type": "ValueError", "message": "bad item", "frames": [["f.py", 3, "g", "x"]]},
        ]
    ]


def test_m154_a_failing_producer_closes_its_streams_as_errored(driver: Driver) -> None:
    _, worker, producer, consumer = pair(driver)
    stream = register(worker, producer)
    subscribe(driver, worker, consumer, stream["id"])
    worker.error(producer)
    assert closures(worker, consumer) == []  # the decision waits for termination
    worker.terminated(producer)
    assert closures(worker, consumer) == [
        ["errored", {"type": "ValueError", "message": "boom", "frames": []}]
    ]


def test_m155_subscribing_to_an_unknown_stream_closes_at_once(driver: Driver) -> None:
    _, worker, _, consumer = pair(driver)
    subscribe(driver, worker, consumer, "Rnope:1_0")
    assert closures(worker, consumer) == [["stream_not_found", None]]


def test_m156_the_run_and_stream_topics_show_the_stream(driver: Driver) -> None:
    ws, worker, producer, consumer = pair(driver)
    stream = register(worker, producer, buffer=4, timeout=5000)
    append(driver, worker, producer, 0, 1)
    subscribe(driver, worker, consumer, stream["id"])
    driver.advance(10)
    close(driver, worker, producer)
    run = views.run(driver.db, ws, producer.split(":")[0])
    assert run is not None
    execution = run["steps"][producer.rsplit(":", 1)[0]]["executions"]["1"]
    assert execution["streams"]["0"] == {
        "id": stream["id"],
        "buffer": 4,
        "timeoutMs": 5000,
        "openedAt": driver.now - 10,
        "closedAt": driver.now,
        "reason": "complete",
        "error": None,
    }
    consumer_view = run["steps"][consumer.rsplit(":", 1)[0]]["executions"]["1"]
    assert consumer_view["dependencies"][stream["id"]] == {
        "type": "stream",
        "streamId": stream["id"],
        "execution": {"executionId": producer, "module": "app", "target": "work"},
        "index": 0,
        "module": "app",
        "target": "work",
        "pending": False,
    }
    topic = views.stream(driver.db, stream["id"])
    assert topic is not None
    assert topic["attempts"] == [1]
    assert topic["closure"]["reason"] == "complete"
    assert [item["sequence"] for item in topic["items"]] == [0, 1]
    assert topic["totalCount"] == 2 and topic["tailSize"] == 200
    assert views.stream(driver.db, "Rnope:1_0") is None


def test_m157_cancelling_the_producer_closes_with_cancelled(driver: Driver) -> None:
    ws, worker, producer, consumer = pair(driver)
    stream = register(worker, producer)
    subscribe(driver, worker, consumer, stream["id"])
    driver.reply(commands.CancelExecution(workspace_id=ws, execution_id=producer))
    assert closures(worker, consumer) == [["cancelled", None]]


def test_m158_subscribers_are_independent_and_ids_are_per_consumer(driver: Driver) -> None:
    ws, worker, producer, consumer = pair(driver)
    other = worker.child(driver.submit(ws), "consume")
    stream = register(worker, producer)
    subscribe(driver, worker, consumer, stream["id"], 7, prefetch=1)
    subscribe(driver, worker, other, stream["id"], 7)
    append(driver, worker, producer, 0, 1, 2)
    assert received(worker, consumer, 7) == [0]
    assert received(worker, other, 7) == [0, 1, 2]


def test_m159_unsubscribing_or_terminating_drops_the_subscription(driver: Driver) -> None:
    ws, worker, producer, consumer = pair(driver)
    finishing = worker.child(driver.submit(ws), "consume")
    stream = register(worker, producer)
    subscribe(driver, worker, consumer, stream["id"])
    subscribe(driver, worker, finishing, stream["id"])
    driver.handle(
        commands.UnsubscribeStream(session_id=worker.id, execution_id=consumer, subscription_id=1)
    )
    worker.finish(finishing, "done early")
    append(driver, worker, producer, 0)
    close(driver, worker, producer)
    assert received(worker, consumer) == [] and closures(worker, consumer) == []
    assert received(worker, finishing) == [] and closures(worker, finishing) == []


def test_m160_a_value_without_an_explicit_close_closes_cleanly(driver: Driver) -> None:
    _, worker, producer, consumer = pair(driver)
    stream = register(worker, producer)
    subscribe(driver, worker, consumer, stream["id"])
    append(driver, worker, producer, 0)
    worker.result(producer, "value")
    assert closures(worker, consumer) == []  # draining: the stream may still grow
    append(driver, worker, producer, 1)
    worker.terminated(producer)
    assert driver.completion(producer) == (C.SUCCEEDED, None)
    assert received(worker, consumer) == [0, 1]
    assert closures(worker, consumer) == [["complete", None]]


def test_m161_buffer_zero_waits_for_a_subscriber_and_only_acks_release(driver: Driver) -> None:
    _, worker, producer, consumer = pair(driver)
    stream = register(worker, producer, buffer=0)
    assert demand(worker, producer) == 0  # nothing without a subscriber
    subscribe(driver, worker, consumer, stream["id"])
    assert demand(worker, producer) == 1
    append(driver, worker, producer, 0)
    assert received(worker, consumer) == [0]
    assert demand(worker, producer) == 1  # delivery alone releases nothing
    ack(driver, worker, consumer, 1, 0)
    assert demand(worker, producer) == 2


def test_m161_a_buffer_prewarms_and_the_slowest_consumer_governs(driver: Driver) -> None:
    ws, worker, producer, consumer = pair(driver)
    slow = worker.child(driver.submit(ws), "consume")
    stream = register(worker, producer, buffer=2)
    assert demand(worker, producer) == 2  # pre-warmed
    subscribe(driver, worker, consumer, stream["id"])
    subscribe(driver, worker, slow, stream["id"])
    append(driver, worker, producer, 0, 1)
    ack(driver, worker, consumer, 2, 1)
    assert demand(worker, producer) == 3  # the slow one has acked nothing: 0 + 2 + 1
    driver.handle(
        commands.UnsubscribeStream(session_id=worker.id, execution_id=slow, subscription_id=1)
    )
    assert demand(worker, producer) == 5  # the slowest leaving releases: 2 + 2 + 1


def test_m161_unbounded_buffers_never_get_demand(driver: Driver) -> None:
    _, worker, producer, consumer = pair(driver)
    stream = register(worker, producer, buffer=None)
    subscribe(driver, worker, consumer, stream["id"])
    append(driver, worker, producer, 0)
    ack(driver, worker, consumer, 1, 0)
    assert worker.commands("stream_demand") == []


def test_m161_items_skipped_by_a_stride_advance_demand(driver: Driver) -> None:
    _, worker, producer, consumer = pair(driver)
    stream = register(worker, producer, buffer=0)
    subscribe(driver, worker, consumer, stream["id"], stride=model.Stride(start=0, step=2))
    append(driver, worker, producer, 0)
    ack(driver, worker, consumer, 1, 0)
    append(driver, worker, producer, 1)  # not this consumer's
    assert demand(worker, producer) == 3  # the cursor moved past 1 without an ack


def test_m162_prefetch_bounds_delivery_and_the_closure_waits(driver: Driver) -> None:
    _, worker, producer, consumer = pair(driver)
    stream = register(worker, producer)
    append(driver, worker, producer, 0, 1, 2)
    close(driver, worker, producer)
    subscribe(driver, worker, consumer, stream["id"], prefetch=2)
    assert received(worker, consumer) == [0, 1]
    assert closures(worker, consumer) == []
    ack(driver, worker, consumer, 2, 1)
    assert received(worker, consumer) == [0, 1, 2]
    assert closures(worker, consumer) == [["complete", None]]


def test_m164_a_suspended_producer_is_continued_by_its_successor(driver: Driver) -> None:
    _, worker, producer, consumer = pair(driver)
    stream = register(worker, producer)
    subscribe(driver, worker, consumer, stream["id"])
    append(driver, worker, producer, 0, 1)
    driver.handle(commands.Suspend(session_id=worker.id, execution_id=producer))
    assert closures(worker, consumer) == []  # paused, not closed
    successor = producer[:-1] + "2"
    assert register(worker, successor) == {"id": stream["id"], "index": 0, "head": 1}
    append(driver, worker, successor, 2)
    assert received(worker, consumer) == [0, 1, 2]
    topic = views.stream(driver.db, stream["id"])
    assert topic is not None and topic["attempts"] == [1, 2]


def test_m165_each_recurrence_closes_its_stream_and_opens_a_new_one(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws, tasks=("work", "consume"))
    root = driver.submit(ws)
    producer = worker.child(root, options=model.StepOptions(recurrent=True))
    consumer = worker.child(root, "consume")
    stream = register(worker, producer)
    subscribe(driver, worker, consumer, stream["id"])
    worker.finish(producer, None)
    assert closures(worker, consumer) == [["recurred", None]]
    assert register(worker, producer[:-1] + "2")["index"] == 1


def test_m166_rerunning_a_suspended_step_continues_its_paused_stream(driver: Driver) -> None:
    ws, worker, producer, _ = pair(driver)
    stream = register(worker, producer)
    append(driver, worker, producer, 0)
    driver.handle(
        commands.Suspend(
            session_id=worker.id, execution_id=producer, execute_after=driver.now + 60_000
        )
    )
    rerun = driver.reply(commands.RerunStep(workspace_id=ws, step_id=producer.rsplit(":", 1)[0]))
    assert driver.completion(producer[:-1] + "2") == (C.CANCELLED, None)
    assert register(worker, rerun["executionId"]) == {"id": stream["id"], "index": 0, "head": 0}


def test_m166_cancelling_the_pending_successor_closes_the_paused_stream(driver: Driver) -> None:
    ws, worker, producer, consumer = pair(driver)
    stream = register(worker, producer)
    subscribe(driver, worker, consumer, stream["id"])
    driver.handle(
        commands.Suspend(
            session_id=worker.id, execution_id=producer, execute_after=driver.now + 60_000
        )
    )
    driver.reply(commands.CancelExecution(workspace_id=ws, execution_id=producer[:-1] + "2"))
    assert closures(worker, consumer) == [["cancelled", None]]


def test_m166_rerunning_a_live_producer_closes_its_stream_and_starts_a_new_one(
    driver: Driver,
) -> None:
    ws, worker, producer, consumer = pair(driver)
    stream = register(worker, producer)
    subscribe(driver, worker, consumer, stream["id"])
    rerun = driver.reply(commands.RerunStep(workspace_id=ws, step_id=producer.rsplit(":", 1)[0]))
    assert closures(worker, consumer) == [["cancelled", None]]
    assert register(worker, rerun["executionId"])["index"] == 1


def test_m166_streams_are_never_continued_across_workspaces(driver: Driver) -> None:
    base = driver.workspace("base")
    derived = driver.workspace("derived", base_id=base)
    base_worker = driver.session(base)
    derived_worker = driver.session(derived)
    root = driver.submit(base)
    producer = base_worker.child(root)
    register(base_worker, producer)
    driver.handle(
        commands.Suspend(
            session_id=base_worker.id, execution_id=producer, execute_after=driver.now + 60_000
        )
    )
    rerun = driver.reply(
        commands.RerunStep(workspace_id=derived, step_id=producer.rsplit(":", 1)[0])
    )
    assert register(derived_worker, rerun["executionId"])["index"] == 1


def test_m167_an_idle_timeout_close_is_declined_while_the_stream_is_paused(
    driver: Driver,
) -> None:
    _, worker, producer, consumer = pair(driver)
    stream = register(worker, producer, buffer=0, timeout=1000)

    def timeout_close() -> Any:
        return worker.request(
            lambda request_id: commands.CloseStream(
                session_id=worker.id,
                request_id=request_id,
                execution_id=producer,
                index=0,
                error=None,
                timeout=True,
            )
        )[2]

    driver.handle(
        commands.Suspend(
            session_id=worker.id,
            execution_id=consumer,
            stream_wait=(stream["id"], 0),
        )
    )
    assert timeout_close() is False  # every consumer is suspended waiting on it
    assert demand(worker, producer) == 1  # and the waiting consumer counts as demand
    append(driver, worker, producer, 0)  # releases the waiter
    assert timeout_close() is True
    assert timeout_close() is False  # already closed
    worker.finish(producer, "done")
    assert driver.completion(producer) == (C.STREAM_TIMEOUT, None)


def test_m169_completion_kinds_follow_the_producer_s_own_closes(driver: Driver) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    error = model.ErrorInfo(type="E", message="m")
    kinds = {}
    for name, closes in {
        "clean": [None],
        "errored": [error],
        "timeout": ["timeout"],
        "both": ["timeout", error],
    }.items():
        producer = worker.child(driver.submit(ws))
        for position, how in enumerate(closes):
            register(worker, producer, position)
            driver.handle(
                commands.CloseStream(
                    session_id=worker.id,
                    request_id=None,
                    execution_id=producer,
                    index=position,
                    error=how if isinstance(how, model.ErrorInfo) else None,
                    timeout=how == "timeout",
                )
            )
        worker.finish(producer, name)
        kinds[name] = (driver.completion(producer) or (None,))[0]
    assert kinds == {
        "clean": C.SUCCEEDED,
        "errored": C.STREAM_ERRORED,
        "timeout": C.STREAM_TIMEOUT,
        "both": C.STREAM_ERRORED,  # an error outranks a timeout
    }


def test_m169_stream_errored_and_timed_out_values_are_neither_cache_nor_memo_hits(
    driver: Driver,
) -> None:
    ws = driver.workspace()
    worker = driver.session(ws)
    options = model.StepOptions(
        cache={"params": True, "maxAge": None, "namespace": None, "version": None}, memo=True
    )
    memo_only = model.StepOptions(memo=True)
    for how in ("errored", "timeout"):
        root = driver.submit(ws)
        producer = worker.child(root, arguments=[how], options=options)
        register(worker, producer)
        driver.handle(
            commands.CloseStream(
                session_id=worker.id,
                request_id=None,
                execution_id=producer,
                index=0,
                error=model.ErrorInfo(type="E", message="m") if how == "errored" else None,
                timeout=how == "timeout",
            )
        )
        worker.finish(producer, how)
        other = worker.child(driver.submit(ws), arguments=[how], options=options)
        assert driver.completion(other) is None  # not a cache hit
        assert worker.child(root, arguments=[how], options=memo_only) != producer  # nor memo


def test_m170_a_stream_wait_holds_the_successor_until_the_item_lands(driver: Driver) -> None:
    _, worker, producer, consumer = pair(driver)
    stream = register(worker, producer)
    append(driver, worker, producer, 0)
    driver.handle(
        commands.Suspend(session_id=worker.id, execution_id=consumer, stream_wait=(stream["id"], 2))
    )
    successor = consumer[:-1] + "2"
    append(driver, worker, producer, 1)
    assert successor not in worker.executes()
    append(driver, worker, producer, 2)
    assert successor in worker.executes()


def test_m170_a_stream_wait_is_released_by_the_stream_closing(driver: Driver) -> None:
    _, worker, producer, consumer = pair(driver)
    stream = register(worker, producer)
    driver.handle(
        commands.Suspend(session_id=worker.id, execution_id=consumer, stream_wait=(stream["id"], 5))
    )
    close(driver, worker, producer)
    assert consumer[:-1] + "2" in worker.executes()


def test_m170_an_already_satisfied_wait_does_not_hold_the_successor(driver: Driver) -> None:
    _, worker, producer, consumer = pair(driver)
    stream = register(worker, producer)
    append(driver, worker, producer, 0)
    driver.handle(
        commands.Suspend(session_id=worker.id, execution_id=consumer, stream_wait=(stream["id"], 0))
    )
    assert consumer[:-1] + "2" in worker.executes()


def test_m171_stream_select_handles_report_availability(driver: Driver) -> None:
    _, worker, producer, consumer = pair(driver)
    stream = register(worker, producer)
    handle = [{"type": "stream", "id": stream["id"], "sequence": 1}]
    poll = worker.select_handles(consumer, handle, timeout_ms=0)
    assert worker.replies(poll) == [[2, poll, None]]
    assert driver.completion(consumer) is None  # polling never suspends
    waiting = worker.select_handles(consumer, handle)
    append(driver, worker, producer, 0)
    assert worker.replies(waiting) == []
    append(driver, worker, producer, 1)
    assert worker.replies(waiting) == [[2, waiting, {"winner": 0, "status": "ok"}]]


def test_m171_cancel_refuses_stream_handles(driver: Driver) -> None:
    _, worker, producer, consumer = pair(driver)
    stream = register(worker, producer)
    reply = worker.request(
        lambda request_id: commands.CancelHandles(
            session_id=worker.id,
            request_id=request_id,
            execution_id=consumer,
            handles=[{"type": "execution", "id": producer}, {"type": "stream", "id": stream["id"]}],
        )
    )
    assert reply[0::2] == [3, "invalid_handle"]
    assert driver.completion(producer) is None  # refused as a whole


def test_m172_every_consumer_attempt_records_its_stream_dependency(driver: Driver) -> None:
    ws, worker, producer, consumer = pair(driver)
    stream = register(worker, producer)
    subscribe(driver, worker, consumer, stream["id"])
    driver.handle(commands.Suspend(session_id=worker.id, execution_id=consumer))
    successor = consumer[:-1] + "2"
    subscribe(driver, worker, successor, stream["id"])
    run = views.run(driver.db, ws, consumer.split(":")[0])
    assert run is not None
    executions = run["steps"][consumer.rsplit(":", 1)[0]]["executions"]
    for attempt in ("1", "2"):
        assert stream["id"] in executions[attempt]["dependencies"]


def test_a_resubscription_after_a_reconnect_resumes_from_its_progress(driver: Driver) -> None:
    _, worker, producer, consumer = pair(driver)
    stream = register(worker, producer)
    append(driver, worker, producer, 0, 1, 2, 3)
    subscribe(driver, worker, consumer, stream["id"], prefetch=2)
    assert received(worker, consumer) == [0, 1]
    worker.disconnect()
    worker.connect()
    driver.handle(
        commands.SubscribeStream(
            session_id=worker.id,
            subscription_id=1,
            execution_id=consumer,
            stream_id=stream["id"],
            from_sequence=0,
            stride=None,
            prefetch=2,
            progress=(2, 2, 1),
        )
    )
    assert received(worker, consumer) == [0, 1, 2, 3]


def test_a_producer_still_running_after_a_restart_gets_credit_again(driver: Driver) -> None:
    _, worker, producer, _ = pair(driver)
    register(worker, producer, buffer=2)
    append(driver, worker, producer, 0)
    driver.restart()
    worker.connect()
    # Demand from the stored head: the producer can carry on without any subscriber.
    assert demand(worker, producer) == 2
