"""The stream checks and the run-wide checks (replicas, stalls, result shape) on crafted
histories: each anomaly is reported with its details, and the clean twin passes."""

from __future__ import annotations

import json

import pytest

from raftmq.chaos.check_common import Anomaly
from raftmq.chaos.checker import CHECKERS, CheckResult, check
from raftmq.chaos.history import HistoryError, Op
from tests.unit.chaos_histories import HistoryBuilder

STREAMS = {"s": 2}


def only(result: CheckResult, kind: str) -> list[Anomaly]:
    return [anomaly for anomaly in result.anomalies if anomaly.kind == kind]


def assert_clean(result: CheckResult) -> None:
    assert result.valid, [anomaly.message for anomaly in result.violations]
    assert result.violations == []


def streams() -> HistoryBuilder:
    return HistoryBuilder({}, STREAMS)


def test_a_confirmed_record_never_read_is_lost() -> None:
    history = streams()
    history.publish("m1", targets=["s"], partition=0, offset=0)
    history.publish("m2", targets=["s"], partition=0, offset=1)
    history.read("s", 0, 1, "m2")
    history.drain(stream="s")
    [lost] = check(history.ops).violations
    assert lost.kind == "lost"
    assert lost.details == {"id": "m1", "stream": "s", "producer": "producer-0", "ok_index": 2,
                            "position": [0, 0], "drain_complete": True}
    history.read("s", 0, 0, "m1", consumer="reader-1")
    assert_clean(check(history.ops))


def test_reads_of_unpublished_ids_or_of_the_wrong_stream_are_unexpected() -> None:
    history = HistoryBuilder({}, {"s": 1, "t": 1})
    history.publish("m1", targets=["s"], partition=0, offset=0)
    history.read("s", 0, 0, "m1")
    history.read("s", 0, 1, "ghost")
    history.read("t", 0, 0, "m1")
    unexpected = only(check(history.ops), "unexpected")
    assert [(anomaly.details["id"], anomaly.details["stream"]) for anomaly in unexpected] == [
        ("ghost", "s"), ("m1", "t")]
    assert "never published" in unexpected[0].message and "not one of its targets" in unexpected[1].message


def test_one_id_at_two_positions_is_duplicated() -> None:
    history = streams()
    history.publish("m1", targets=["s"], partition=0, offset=0)
    history.read("s", 0, 0, "m1")
    history.read("s", 0, 3, "m1")
    history.read("s", 0, 3, "m1", consumer="reader-1")  # the same second position: reported once
    [duplicated] = check(history.ops).violations
    assert duplicated.kind == "duplicated"
    assert duplicated.details == {"reason": "two_positions", "id": "m1", "stream": "s",
                                  "positions": [[0, 0], [0, 3]]}
    twin = streams()
    twin.publish("m1", targets=["s"], partition=0, offset=0)
    twin.read("s", 0, 0, "m1")
    twin.read("s", 0, 0, "m1", consumer="reader-1")
    assert_clean(check(twin.ops))


def test_two_ids_at_one_position_are_divergent() -> None:
    history = streams()
    history.publish("m1", targets=["s"], partition=1, offset=4)
    history.publish("m2", targets=["s"], partition=1, offset=5)
    history.read("s", 1, 4, "m1")
    history.read("s", 1, 5, "m2")
    history.read("s", 1, 5, "m1", consumer="reader-1")
    found = check(history.ops).violations
    divergent = [anomaly for anomaly in found if anomaly.kind == "divergent_read"]
    assert [anomaly.details for anomaly in divergent] == [
        {"stream": "s", "partition": 1, "offset": 5, "ids": ["m2", "m1"], "sources": ["publish ok", "read"]}]
    # m1 is also at two positions
    assert {anomaly.kind for anomaly in found} == {"divergent_read", "duplicated"}


def test_a_read_contradicting_a_publish_ok_is_divergent_even_without_other_reads() -> None:
    history = streams()
    history.publish("m1", targets=["s"], partition=0, offset=0)
    history.publish("m2", "unknown", targets=["s"])
    history.read("s", 0, 0, "m2")
    divergent = only(check(history.ops), "divergent_read")
    assert [anomaly.details["ids"] for anomaly in divergent] == [["m1", "m2"]]


def test_offsets_against_real_time_order_are_an_order_violation() -> None:
    history = streams()
    history.publish("m1", targets=["s"], partition=0, offset=7)
    history.publish("m2", targets=["s"], partition=0, offset=6)
    history.read("s", 0, 6, "m2")
    history.read("s", 0, 7, "m1")
    [order] = check(history.ops).violations
    assert order.kind == "order" and order.details["reason"] == "offsets"
    assert (order.details["earlier"], order.details["later"]) == ("m1", "m2")
    assert (order.details["earlier_offset"], order.details["later_offset"]) == (7, 6)
    twin = streams()
    twin.publish_invoke("m1", targets=["s"])
    twin.publish_invoke("m2", targets=["s"])  # concurrent: either order is fine
    twin.publish_done("m2", partition=0, offset=6)
    twin.publish_done("m1", partition=0, offset=7)
    twin.read("s", 0, 6, "m2")
    twin.read("s", 0, 7, "m1")
    assert_clean(check(twin.ops))


def test_one_key_in_two_partitions_is_an_order_violation() -> None:
    history = streams()
    history.publish("m1", targets=["s"], key="k", partition=0, offset=0)
    history.publish("m2", targets=["s"], key="k", partition=1, offset=0)
    history.publish("m3", targets=["s"], key=None, partition=1, offset=1)
    for partition, offset, msg_id in ((0, 0, "m1"), (1, 0, "m2"), (1, 1, "m3")):
        history.read("s", partition, offset, msg_id)
    [order] = check(history.ops).violations
    assert order.details == {"reason": "key_in_two_partitions", "stream": "s", "key": "k",
                             "partitions": [0, 1], "ids": ["m1", "m2"]}


def test_replica_digests_must_agree() -> None:
    history = HistoryBuilder(nodes=["n1", "n2", "n3"])
    history.digest("n1", "aaa")
    history.digest("n2", "aaa")
    history.digest("n3", "bbb")
    [differ] = check(history.ops).violations
    assert differ.kind == "replicas_differ"
    assert differ.details == {"digests": {"n1": "aaa", "n2": "aaa", "n3": "bbb"}}
    assert "n1, n2: aaa; n3: bbb" in differ.message
    twin = HistoryBuilder(nodes=["n1", "n2", "n3"])
    for node in ("n1", "n2", "n3"):
        twin.digest(node, "aaa")
    assert_clean(check(twin.ops))


def test_nodes_without_a_digest_are_missing_digest_info() -> None:
    history = HistoryBuilder(nodes=["n1", "n2"])
    history.nemesis("start", "kill-leader", ["n3"])
    history.digest("n1", "aaa")
    result = check(history.ops, nodes=["n4"])
    assert_clean(result)
    [missing] = only(result, "missing_digest")
    assert missing.details["sample"] == ["n2", "n3", "n4"] and result.counts["missing_digest"] == 3


def test_stalls_report_the_longest_gaps_and_the_recovery_after_each_fault() -> None:
    history = HistoryBuilder()
    history.publish("m1")
    history.consume("q", "m1", 1)
    history.nemesis("start", "kill-leader")
    history.wait(5000)
    history.publish("m2")  # its ok lands 5020 ms after the fault started
    history.consume("q", "m2", 2)
    history.nemesis("stop", "kill-leader")
    result = check(history.ops)
    assert_clean(result)
    stalls = only(result, "stall")
    by_what = {anomaly.details.get("what", "window"): anomaly.details for anomaly in stalls}
    assert by_what["publish ok"]["gap_ms"] == pytest.approx(5060.0)  # ok at 30 ms, next at 5090 ms
    assert by_what["window"]["fault"] == "kill-leader"
    assert by_what["window"]["publish_ok_after_ms"] == pytest.approx(5020.0)
    assert by_what["window"]["stop_ms"] == history.ops[-1].time_ms
    assert result.stats["max_publish_gap_ms"] == 5060 and result.stats["fault_windows"] == 1


def test_an_observation_neither_opens_nor_closes_a_fault_window() -> None:
    history = HistoryBuilder()
    history.publish("m1")
    history.consume("q", "m1", 1)
    history.nemesis("start", "pause-leader")
    history.wait(1000)
    history.nemesis("observe", "pause-leader")
    history.wait(1000)
    history.nemesis("stop", "pause-leader")
    history.nemesis("observe", "pause-leader")
    result = check(history.ops)
    assert_clean(result)
    window = next(a for a in only(result, "stall") if "fault" in a.details)
    assert window.details["stop_ms"] == history.ops[-2].time_ms
    assert result.stats["fault_windows"] == 1


def test_the_result_is_deterministic_sorted_and_serialisable() -> None:
    history = HistoryBuilder()
    history.publish("m2")
    history.publish("m1")
    history.consume("q", "ghost", 3)
    first, second = check(history.ops), check(history.ops)
    assert first.to_json() == second.to_json()
    keys = [(anomaly.kind, anomaly.time_ms, anomaly.index) for anomaly in first.anomalies]
    assert keys == sorted(keys)
    document = json.loads(first.to_json())
    assert document["valid"] is False
    assert set(document["counts"]) == {kind for kinds in CHECKERS.values() for kind in kinds}
    assert document["counts"]["lost"] == 2 and document["stats"]["publish_invoke"] == 2


def test_a_broken_history_raises_instead_of_reporting_broker_bugs() -> None:
    history = HistoryBuilder()
    history.publish("m1")
    history.publish_invoke("m1")
    with pytest.raises(HistoryError, match="publish id 'm1' was already invoked at op 1"):
        check(history.ops)
    orphan = Op(1, 50.0, "consumer-0", "ok", "ack", {"queue": "q", "id": "m1", "message_id": 1})
    with pytest.raises(HistoryError, match="has no open invoke"):
        check([HistoryBuilder().ops[0], orphan])


def test_an_undeclared_stream_is_recognised_from_offsets_and_reads() -> None:
    history = HistoryBuilder({})  # the workload event declares no stream
    history.publish("m1", targets=["s"], partition=0, offset=0)
    history.publish("m2", targets=["s"], partition=0, offset=1)
    history.read("s", 0, 0, "m1")
    history.commit("s", "group-a", 0, 1)
    result = check(history.ops)
    [lost] = result.violations
    assert lost.kind == "lost" and lost.details["stream"] == "s" and lost.details["id"] == "m2"
    assert result.stats["commit_ok"] == 1
