"""The worker against a fake server, running the real SDK as its adapter."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

from tests.support.eventually import eventually_async as eventually
from tests.support.worker_harness import FakeServer, wait_result


def raw(value: object) -> dict[str, object]:
    return {"type": "inline", "format": "json", "value": value}


async def test_start_up_declares_targets_and_creates_session(
    fake_server: FakeServer, start_worker
) -> None:
    await start_worker(register=True, workspace="staging", provides=("gpu:a100", "fast"))

    assert fake_server.api_bodies("create_workspace") == [{"name": "staging"}]
    [session] = fake_server.api_bodies("create_session")
    assert session == {
        "workspaceId": "W2",
        "provides": {"gpu": ["a100"], "fast": ["true"]},
        "accepts": {},
    }
    [registered] = fake_server.api_bodies("register_manifests")
    assert registered["workspaceId"] == "W2"
    workflows = registered["manifests"]["wfmod"]
    assert set(workflows) == {"parent", "waits_for_file", "canceller"}  # tasks never registered
    assert [p["name"] for p in workflows["parent"]["parameters"]] == ["x"]
    assert workflows["parent"]["waitFor"] == []
    assert workflows["parent"]["retries"] is None

    [declare] = fake_server.named("declare_targets")
    targets, concurrency = declare["params"]
    assert concurrency == 2
    assert set(targets["wfmod"]["task"]) >= {"add", "big", "fail"}
    assert set(targets["wfmod"]["workflow"]) == {"parent", "waits_for_file", "canceller"}
    assert fake_server.session_tokens == ["sess1.secret"]
    assert fake_server.ws_queries[0] == {"workspaceId": "W2", "version": "0.12"}


async def test_execute_reports_result_then_termination(
    fake_server: FakeServer, start_worker
) -> None:
    await start_worker()
    await fake_server.execute("R1:1:1", "add", [["raw", 1, []], ["raw", 2, []]])

    assert await wait_result(fake_server, "R1:1:1") == ["raw", 3, []]
    await eventually(lambda: fake_server.named("notify_terminated", "R1:1:1"))
    order = fake_server.requests_for("R1:1:1")
    assert order.index("started") < order.index("put_result") < order.index("notify_terminated")
    assert "put_error" not in order


async def test_error_is_reported_with_frames(fake_server: FakeServer, start_worker) -> None:
    await start_worker()
    await fake_server.execute("R1:1:1", "fail", [])

    [frame] = await eventually(lambda: fake_server.named("put_error", "R1:1:1"))
    error_type, message, frames = frame["params"][1]
    assert (error_type, message) == ("builtins.RuntimeError", "boom")
    assert frames, "frames parsed from the traceback"
    assert frames[-1][0].endswith("wfmod.py")
    assert frames[-1][2] == "fail"
    assert frames[-1][3] == 'raise RuntimeError("boom")'
    await eventually(lambda: fake_server.named("notify_terminated", "R1:1:1"))


async def test_child_submit_and_select_reply_are_relayed(
    fake_server: FakeServer, start_worker
) -> None:
    fake_server.handlers["select"] = lambda params: {
        "winner": 0,
        "status": "ok",
        "value": ["raw", 42, []],
    }
    await start_worker()
    await fake_server.execute("R1:1:1", "parent", [["raw", 41, []]])

    assert await wait_result(fake_server, "R1:1:1") == ["raw", 84, []]
    [submit] = fake_server.named("submit")
    params = submit["params"]
    assert params[:5] == ["wfmod", "add", "task", [["raw", 41, []], ["raw", 1, []]], "R1:1:1"]
    assert len(params) == 16
    [select] = fake_server.named("select")
    assert select["params"][0] == [{"type": "execution", "id": "R1:2:1"}]
    assert select["params"][1:] == ["R1:1:1", None, True, False]


async def test_large_result_goes_to_the_blob_store(fake_server: FakeServer, start_worker) -> None:
    await start_worker()
    await fake_server.execute("R1:1:1", "big", [["raw", 200, []]])

    kind, key, size, references = await wait_result(fake_server, "R1:1:1")
    expected = json.dumps("x" * 200).encode()
    assert kind == "blob"
    assert key == hashlib.sha256(expected).hexdigest()
    assert size == len(expected)
    assert references == []
    assert fake_server.blobs[key] == expected


async def test_blob_arguments_are_downloaded(fake_server: FakeServer, start_worker) -> None:
    data = json.dumps("y" * 300).encode()
    key = hashlib.sha256(data).hexdigest()
    fake_server.blobs[key] = data
    await start_worker()
    await fake_server.execute("R1:1:1", "echo", [["blob", key, len(data), []]])

    kind, result_key, _size, _refs = await wait_result(fake_server, "R1:1:1")
    assert (kind, result_key) == ("blob", key)


async def test_result_survives_a_dropped_connection(
    fake_server: FakeServer, start_worker, tmp_path: Path
) -> None:
    await start_worker()
    release = tmp_path / "release"
    await fake_server.execute("R1:1:1", "waits_for_file", [["raw", str(release), []]])
    await eventually(lambda: fake_server.named("started", "R1:1:1"))

    fake_server.held = ["R1:1:1"]
    await fake_server.drop()
    release.touch()  # the result is produced while (or just after) the socket is down

    frames = await eventually(
        lambda: [f for f in fake_server.named("put_result", "R1:1:1") if f["_connection"] == 2]
    )
    assert frames[0]["params"][1] == ["raw", "released", []]
    await eventually(
        lambda: [
            f for f in fake_server.named("notify_terminated", "R1:1:1") if f["_connection"] == 2
        ]
    )
    assert len(fake_server.named("declare_targets")) == 2


async def test_suspended_select_then_abort_ends_without_a_crash(
    fake_server: FakeServer, start_worker
) -> None:
    fake_server.handlers["select"] = lambda params: None
    await start_worker()
    await fake_server.execute("R1:1:1", "parent", [["raw", 1, []]])
    await eventually(lambda: fake_server.named("select", "R1:1:1"))
    await fake_server.send_command("abort", ["R1:1:1"])

    await eventually(lambda: fake_server.named("notify_terminated", "R1:1:1"))
    assert not fake_server.named("put_result", "R1:1:1")


async def test_cancel_is_forwarded(fake_server: FakeServer, start_worker) -> None:
    await start_worker()
    await fake_server.execute("R1:1:1", "canceller", [])

    assert await wait_result(fake_server, "R1:1:1") == ["raw", "cancelled", []]
    [cancel] = fake_server.named("cancel")
    assert cancel["params"] == [[{"type": "execution", "id": "R1:2:1"}], "R1:1:1"]


async def test_logs_are_posted(fake_server: FakeServer, start_worker) -> None:
    await start_worker()
    await fake_server.execute("R1:1:1", "chatty", [])

    await eventually(lambda: len(fake_server.logs) >= 2)
    structured = next(e for e in fake_server.logs if e.get("template") == "count is {n}")
    assert structured["values"]["n"] == {"type": "raw", "data": 7, "references": []}
    assert structured["runId"] == "R1"
    assert structured["workspaceId"] == "W1"
    assert structured["level"] == 2
    assert any(e.get("template") == "plain output" and e["level"] == 1 for e in fake_server.logs)


async def test_timeout_kills_and_reports(fake_server: FakeServer, start_worker) -> None:
    await start_worker()
    await fake_server.execute("R1:1:1", "sleepy", [["raw", 30, []]], timeout_ms=300)

    await eventually(lambda: fake_server.named("put_timeout", "R1:1:1"))
    await eventually(lambda: fake_server.named("notify_terminated", "R1:1:1"))
    assert not fake_server.named("put_error", "R1:1:1")


async def test_crash_sends_only_the_termination(fake_server: FakeServer, start_worker) -> None:
    await start_worker()
    await fake_server.execute("R1:1:1", "crash", [])

    await eventually(lambda: fake_server.named("notify_terminated", "R1:1:1"))
    assert fake_server.requests_for("R1:1:1") == ["started", "notify_terminated"]


async def test_abort_kills_a_running_execution(fake_server: FakeServer, start_worker) -> None:
    await start_worker()
    await fake_server.execute("R1:1:1", "sleepy", [["raw", 30, []]])
    await eventually(lambda: fake_server.named("started", "R1:1:1"))
    await fake_server.send_command("abort", ["R1:1:1"])

    await eventually(lambda: fake_server.named("notify_terminated", "R1:1:1"))
    assert fake_server.requests_for("R1:1:1") == ["started", "notify_terminated"]


async def test_heartbeats_report_running_executions(fake_server: FakeServer, start_worker) -> None:
    await start_worker()
    await fake_server.execute("R1:1:1", "sleepy", [["raw", 30, []]])

    await eventually(
        lambda: any(f["params"] == [{"R1:1:1": 1}] for f in fake_server.named("record_heartbeats"))
    )
    await fake_server.send_command("abort", ["R1:1:1"])
    await eventually(lambda: fake_server.named("notify_terminated", "R1:1:1"))


async def test_drain_waits_for_running_executions(
    fake_server: FakeServer, start_worker, tmp_path: Path
) -> None:
    worker = await start_worker()
    release = tmp_path / "release"
    await fake_server.execute("R1:1:1", "waits_for_file", [["raw", str(release), []]])
    await eventually(lambda: fake_server.named("started", "R1:1:1"))

    worker.shutdown.request()
    await eventually(lambda: fake_server.named("session_draining"))
    assert not worker.task.done()
    release.touch()

    await asyncio.wait_for(asyncio.shield(worker.task), 10)
    assert fake_server.named("put_result", "R1:1:1")
    assert fake_server.named("notify_terminated", "R1:1:1")


async def test_second_signal_aborts_the_drain(fake_server: FakeServer, start_worker) -> None:
    worker = await start_worker()
    await fake_server.execute("R1:1:1", "sleepy", [["raw", 30, []]])
    await eventually(lambda: fake_server.named("started", "R1:1:1"))

    worker.shutdown.request()
    await eventually(lambda: fake_server.named("session_draining"))
    worker.shutdown.request()

    await asyncio.wait_for(asyncio.shield(worker.task), 10)
    assert fake_server.requests_for("R1:1:1") == ["started", "notify_terminated"]


async def test_drain_timeout_kills_stragglers(fake_server: FakeServer, start_worker) -> None:
    worker = await start_worker(drain_timeout=0.3)
    await fake_server.execute("R1:1:1", "sleepy", [["raw", 30, []]])
    await eventually(lambda: fake_server.named("started", "R1:1:1"))

    worker.shutdown.request()
    await asyncio.wait_for(asyncio.shield(worker.task), 10)
    assert fake_server.named("notify_terminated", "R1:1:1")


async def test_executions_the_server_stops_listing_are_dropped(
    fake_server: FakeServer, start_worker
) -> None:
    await start_worker()
    await fake_server.execute("R1:1:1", "sleepy", [["raw", 30, []]])
    await eventually(lambda: fake_server.named("started", "R1:1:1"))

    fake_server.held = []
    await fake_server.drop()
    await eventually(lambda: len(fake_server.named("declare_targets")) == 2)
    beats = await eventually(
        lambda: [f for f in fake_server.named("record_heartbeats") if f["_connection"] == 2]
    )
    assert beats[0]["params"] == [{}]
    assert fake_server.requests_for("R1:1:1") == ["started"]
