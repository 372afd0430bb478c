"""Adapter-protocol edge cases, driven by a scripted adapter stand-in.

The stand-in performs the handshake, runs a scenario named by the execute ``target`` and
reports what it saw as its execution result, so the assertions read the fake server.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support.eventually import eventually_async as eventually
from tests.support.worker_harness import FakeServer, wait_result

SCRIPT = r"""
import json, sys

def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()

def receive():
    line = sys.stdin.readline()
    return json.loads(line) if line else None

if sys.argv[1] == "discover":
    targets = [{"module": "scripted", "name": n, "type": "task", "parameters": [{"name": "x"}]}
               for n in ("unknown", "garbage", "select", "second_result", "ids", "nan")]
    print(json.dumps({"targets": targets}))
    sys.exit(0)

send({"method": "ready", "params": {"version": "0.12"}})
execute = receive()
if execute is None:
    sys.exit(0)
params = execute["params"]
eid, target = params["execution_id"], params["target"]

def result(value):
    send({"method": "execution_result",
          "params": {"execution_id": eid, "result": {"type": "inline", "format": "json", "value": value}}})

if target == "unknown":
    send({"id": 1, "method": "bogus", "params": {"execution_id": eid}})
    send({"method": "bogus_notification", "params": {"execution_id": eid}})
    result(receive())
elif target == "garbage":
    sys.stdout.write("this is not json\n")
    sys.stdout.flush()
    result({"execute_keys": sorted(params), "workdir_empty": __import__("os").listdir(params["working_dir"]) == []})
elif target == "select":
    send({"id": 1, "method": "select", "params": {"execution_id": eid,
          "handles": [{"type": "stream", "id": "R1:2_0", "sequence": 3}], "suspend": False}})
    result(receive())
elif target == "second_result":
    result(1)
    result(2)
elif target == "ids":
    for i in (1, 2, 3):
        send({"id": i, "method": "upload_blob", "params": {"execution_id": eid, "source_path": "/nonexistent"}})
    replies = sorted((receive(), receive(), receive()), key=lambda r: r["id"])
    result(replies)
elif target == "nan":
    sys.stdout.write('{"method":"execution_result","params":{"execution_id":"%s","result":{"type":"inline","format":"json","value":NaN}}}\n' % eid)
    sys.stdout.flush()
    result("finite")
sys.stdin.read()
"""


@pytest.fixture
def scripted(tmp_path: Path) -> tuple[str, ...]:
    path = tmp_path / "scripted_adapter.py"
    path.write_text(SCRIPT)
    return (sys.executable, str(path))


async def _run(server: FakeServer, start_worker, adapter: tuple[str, ...], target: str) -> object:
    await start_worker(adapter=adapter, modules=("scripted",))
    await server.execute("R1:1:1", target, [], module="scripted")
    value = await wait_result(server, "R1:1:1")
    if value[0] == "blob":  # large results arrive through the blob store
        return json.loads(server.blobs[value[1]])
    return value[1]


async def test_unknown_request_gets_unknown_method(
    fake_server: FakeServer, start_worker, scripted
) -> None:
    response = await _run(fake_server, start_worker, scripted, "unknown")
    assert response == {
        "id": 1,
        "result": None,
        "error": {"code": "unknown_method", "message": "unknown method: bogus"},
    }


async def test_non_json_output_is_skipped_and_execute_is_complete(
    fake_server: FakeServer, start_worker, scripted
) -> None:
    seen = await _run(fake_server, start_worker, scripted, "garbage")
    assert seen == {
        "execute_keys": ["arguments", "execution_id", "module", "target", "working_dir"],
        "workdir_empty": True,
    }


async def test_stream_handle_select_is_relayed_without_a_value(
    fake_server: FakeServer, start_worker, scripted
) -> None:
    fake_server.handlers["select"] = lambda params: {"winner": 0, "status": "ok"}
    response = await _run(fake_server, start_worker, scripted, "select")
    assert response == {"id": 1, "result": {"winner": 0, "status": "ok"}}
    [select] = fake_server.named("select")
    assert select["params"] == [
        [{"type": "stream", "id": "R1:2_0", "sequence": 3}],
        "R1:1:1",
        None,
        False,
        False,
    ]


async def test_only_the_first_terminal_message_counts(
    fake_server: FakeServer, start_worker, scripted
) -> None:
    assert await _run(fake_server, start_worker, scripted, "second_result") == 1
    await eventually(lambda: fake_server.named("notify_terminated", "R1:1:1"))
    assert len(fake_server.named("put_result", "R1:1:1")) == 1


async def test_every_request_gets_one_response_with_its_id(
    fake_server: FakeServer, start_worker, scripted
) -> None:
    replies = await _run(fake_server, start_worker, scripted, "ids")
    assert [r["id"] for r in replies] == [1, 2, 3]
    assert all(r["error"]["code"] == "upload_error" and r["result"] is None for r in replies)


async def test_non_finite_numbers_never_reach_the_server(
    fake_server: FakeServer, start_worker, scripted
) -> None:
    assert await _run(fake_server, start_worker, scripted, "nan") == "finite"
