"""The history format: Op JSON round trip, the writer (line-buffered, locked, validated), and
load_history's errors with line numbers."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from raftmq.chaos.history import HistoryError, HistoryWriter, Op, load_history, run_clock_ms, validate_history

PUBLISH = {"id": "m1", "producer": "producer-0", "seq": 0, "exchange": "", "routing_key": "q", "key": None,
           "targets": ["q"]}


def line(position: int = 0, **overrides: Any) -> str:
    document: dict[str, Any] = {"index": position, "time_ms": 1.5, "process": "producer-0", "type": "invoke",
                                "f": "publish", "value": dict(PUBLISH)}
    document.update(overrides)
    return json.dumps(document)


def write(tmp_path: Path, *lines: str, newline_at_end: bool = True) -> Path:
    path = tmp_path / "history.jsonl"
    path.write_text("\n".join(lines) + ("\n" if newline_at_end else ""), encoding="utf-8")
    return path


def test_op_round_trips_through_json() -> None:
    op = Op(3, 12.25, "consumer-1", "event", "deliver",
            {"queue": "q", "id": "m1", "message_id": 9, "delivery_count": 2, "consumer": "consumer-1",
             "death_reason": None, "death_queue": None})
    assert Op.from_json(op.to_json()) == op


def test_op_to_json_refuses_values_json_cannot_hold() -> None:
    with pytest.raises(HistoryError, match="not JSON"):
        Op(0, 0.0, "p", "event", "custom", {"when": object()}).to_json()
    with pytest.raises(HistoryError, match="not JSON"):
        Op(0, 0.0, "p", "event", "custom", {"ratio": float("nan")}).to_json()


def test_writer_records_ops_in_order_and_the_file_loads_back(tmp_path: Path) -> None:
    times = iter([5.0, 6.0, 7.5])
    with HistoryWriter(tmp_path / "h.jsonl", lambda: next(times)) as writer:
        invoke = writer.invoke("producer-0", "publish", PUBLISH)
        done = writer.ok("producer-0", "publish", {**PUBLISH, "status": "accepted", "duplicate": False})
        writer.event("nemesis", "nemesis", {"action": "start", "fault": "kill-leader", "nodes": ["n1"]})
    ops = load_history(tmp_path / "h.jsonl")
    assert [op.index for op in ops] == [0, 1, 2]
    assert [op.time_ms for op in ops] == [5.0, 6.0, 7.5]
    assert ops[0] == invoke and ops[1] == done
    assert ops[2].f == "nemesis" and ops[2].process == "nemesis"


def test_writer_flushes_each_line_before_close(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    writer = HistoryWriter(path, lambda: 1.0)
    writer.invoke("producer-0", "publish", PUBLISH)
    # A run killed now must still have its history on disk.
    assert load_history(path)[0].value["id"] == "m1"
    writer.close()


def test_writer_keeps_time_from_going_back_when_the_clock_does(tmp_path: Path) -> None:
    times = iter([10.0, 4.0, 12.0])
    with HistoryWriter(tmp_path / "h.jsonl", lambda: next(times)) as writer:
        recorded = [writer.invoke("p", "custom", {}).time_ms for _ in range(3)]
    assert recorded == [10.0, 10.0, 12.0]


def test_writer_is_safe_across_threads(tmp_path: Path) -> None:
    clock = run_clock_ms()
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path, clock) as writer:
        def produce(producer: str) -> None:
            for seq in range(200):
                value = {**PUBLISH, "id": f"{producer}-{seq}", "producer": producer, "seq": seq}
                writer.invoke(producer, "publish", value)
                writer.ok(producer, "publish", {**value, "status": "accepted", "duplicate": False})
        threads = [threading.Thread(target=produce, args=(f"producer-{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    ops = load_history(path)  # validates indices, time order and pairing
    assert len(ops) == 4 * 200 * 2


def test_writer_rejects_a_malformed_value_and_writing_after_close(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path / "h.jsonl", lambda: 0.0)
    with pytest.raises(HistoryError, match=r"publish invoke: value\.id is missing"):
        writer.invoke("producer-0", "publish", {k: v for k, v in PUBLISH.items() if k != "id"})
    writer.close()
    writer.close()  # closing twice is harmless
    with pytest.raises(HistoryError, match="closed"):
        writer.invoke("producer-0", "publish", PUBLISH)
    assert (tmp_path / "h.jsonl").read_text() == ""


def test_run_clock_starts_near_zero_and_never_goes_back() -> None:
    clock = run_clock_ms()
    readings = [clock() for _ in range(100)]
    assert 0.0 <= readings[0] < 1000.0
    assert readings == sorted(readings)


@pytest.mark.parametrize(("bad_line", "message"), [
    ("{not json", r"line 2: not JSON"),
    ("[1, 2]", r"line 2: expected a JSON object, got list"),
    (json.dumps({"index": 1, "time_ms": 1, "process": "p", "type": "invoke", "f": "publish"}),
     r"line 2: missing field\(s\): value"),
    (line(1, extra=1), r"line 2: unexpected field\(s\): extra"),
    (line(1, index="1"), r"line 2: index must be a non-negative integer, got '1'"),
    (line(1, time_ms=True), r"line 2: time_ms must be a finite number, got True"),
    (line(1, process=""), r"line 2: process must be a non-empty string"),
    (line(1, type="done"), r"line 2: type must be one of .*got 'done'"),
    (line(1, value=[1]), r"line 2: value must be an object, got list"),
    (line(1, value={**PUBLISH, "seq": -1}),
     r"line 2: publish invoke: value\.seq must be a non-negative integer"),
    (line(1, value={**PUBLISH, "targets": "q"}), r"line 2: publish invoke: value\.targets must be a list"),
    (line(1, f="deliver"), r"line 2: deliver invoke: the type of a deliver must be event"),
    (line(1, type="event", f="deliver", value={"queue": "q", "id": "m1", "message_id": True,
                                                "delivery_count": 1}),
     r"line 2: deliver event: value\.message_id must be a non-negative integer, got True"),
    (line(1, type="event", f="nemesis", value={"action": "begin", "fault": "kill-leader"}),
     r"line 2: nemesis event: value\.action must be start, stop or observe"),
    (line(1, type="event", f="final", value={"kind": "drain", "complete": True}),
     r"line 2: final event: a drain names exactly one of"),
    (line(1, type="event", f="workload", value={"queues": {"q": {"delivery_limit": "3"}}, "streams": {}}),
     r"line 2: workload event: value\.queues\.q\.delivery_limit must be"),
    (line(5), r"line 2: index 5 out of sequence \(expected 1\)"),
    (line(1, time_ms=0.5), r"line 2: time_ms 0.5 goes back"),
    (line(1, type="ok", process="producer-9"),
     r"line 2: publish ok of producer-9 \(id 'm1'\) has no open invoke"),
])
def test_load_history_names_the_bad_line(tmp_path: Path, bad_line: str, message: str) -> None:
    path = write(tmp_path, line(0), bad_line, line(2))
    with pytest.raises(HistoryError, match=message):
        load_history(path)


def test_unknown_operations_are_kept_without_schema(tmp_path: Path) -> None:
    custom = line(1, type="event", f="log", value={"anything": [1, "x"]})
    assert load_history(write(tmp_path, line(0), custom))[1].value == {"anything": [1, "x"]}


def test_a_torn_last_line_is_an_error_unless_tolerated(tmp_path: Path) -> None:
    path = write(tmp_path, line(0), line(1, type="ok")[:25], newline_at_end=False)
    with pytest.raises(HistoryError, match="line 2: not JSON"):
        load_history(path)
    assert [op.type for op in load_history(path, tolerate_torn_tail=True)] == ["invoke"]
    # Only the last line may be torn: the same line inside the file is still an error.
    inner = write(tmp_path, line(0), line(1, type="ok")[:25], line(2))
    with pytest.raises(HistoryError, match="line 2"):
        load_history(inner, tolerate_torn_tail=True)


def test_blank_lines_are_errors(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="line 2: not JSON"):
        load_history(write(tmp_path, line(0), "", line(1)))


def test_validate_history_checks_in_memory_ops() -> None:
    invoke = Op(0, 0.0, "producer-0", "invoke", "publish", dict(PUBLISH))
    orphan = Op(1, 1.0, "producer-0", "ok", "publish", {**PUBLISH, "id": "m2"})
    validate_history([invoke])
    with pytest.raises(HistoryError, match=r"op 1: publish ok of producer-0 \(id 'm2'\) has no open invoke"):
        validate_history([invoke, orphan])
    with pytest.raises(HistoryError, match=r"op 0 \(publish invoke\): value\.producer must be a string"):
        validate_history([Op(0, 0.0, "producer-0", "invoke", "publish", {**PUBLISH, "producer": 3})])
    with pytest.raises(HistoryError, match="op 1: index 1 out of sequence"):
        validate_history([Op(1, 0.0, "p", "event", "log", {})])
