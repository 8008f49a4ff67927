"""The queue checks on crafted histories: each anomaly is reported with its details, and the
clean twin of the same shape passes."""

from __future__ import annotations

from raftmq.chaos.check_common import Anomaly
from raftmq.chaos.checker import CheckResult, check
from tests.unit.chaos_histories import HistoryBuilder

DLQ_QUEUES = {"q": {"dead_letter_queue": "dlq", "delivery_limit": 2}, "dlq": {}}


def only(result: CheckResult, kind: str) -> list[Anomaly]:
    return [anomaly for anomaly in result.anomalies if anomaly.kind == kind]


def violation_kinds(result: CheckResult) -> set[str]:
    return {anomaly.kind for anomaly in result.violations}


def assert_clean(result: CheckResult) -> None:
    assert result.valid, [anomaly.message for anomaly in result.violations]
    assert result.violations == []


# ---------------------------------------------------------------------- lost
def test_a_confirmed_publish_never_delivered_is_lost() -> None:
    history = HistoryBuilder()
    history.publish("m1")
    history.publish("m2")
    history.consume("q", "m2", 2)
    history.drain(queue="q")
    result = check(history.ops)
    assert not result.valid
    [lost] = result.violations
    assert lost.kind == "lost" and result.counts["lost"] == 1
    assert lost.details == {"id": "m1", "queue": "q", "producer": "producer-0", "ok_index": 2,
                            "drain_complete": True}
    twin = HistoryBuilder()
    twin.publish("m1")
    twin.publish("m2")
    twin.consume("q", "m1", 1)
    twin.consume("q", "m2", 2)
    assert_clean(check(twin.ops))


def test_fan_out_checks_each_target_separately() -> None:
    history = HistoryBuilder({"a": {}, "b": {}})
    history.publish("m1", targets=["a", "b"])
    history.consume("a", "m1", 1)
    [lost] = only(check(history.ops), "lost")
    assert lost.details["queue"] == "b"
    history.consume("b", "m1", 2)
    assert_clean(check(history.ops))


def test_arriving_only_through_the_dead_letter_queue_counts_as_arrived() -> None:
    history = HistoryBuilder({"q": {"dead_letter_queue": "dlq", "message_ttl_ms": 100}, "dlq": {}})
    history.publish("m1")
    history.consume("dlq", "m1", 7, death_reason="expired", death_queue="q")
    result = check(history.ops)
    assert_clean(result)
    assert result.stats["fate_expired"] == 1


def test_a_ttl_queue_without_dead_letter_queue_reports_missing_messages_as_info() -> None:
    history = HistoryBuilder({"q": {"message_ttl_ms": 100}})
    history.publish("m1")
    history.publish("m2")
    result = check(history.ops)
    assert_clean(result)
    [info] = only(result, "expired_unobserved")
    assert info.details["count"] == 2 and info.details["sample"] == ["q/m1", "q/m2"]
    assert result.counts["expired_unobserved"] == 2


def test_unroutable_or_unknown_publishes_are_not_expected_to_arrive() -> None:
    history = HistoryBuilder()
    history.publish("m1", status="unroutable")
    history.publish("m2", "unknown")
    history.publish_invoke("m3")  # never completed: the run ended first
    result = check(history.ops)
    assert_clean(result)
    [absent] = only(result, "unknown_absent")
    assert absent.details["sample"] == ["m2", "m3"]


# ---------------------------------------------------------------------- unexpected
def test_a_delivery_of_an_id_never_published_is_unexpected() -> None:
    history = HistoryBuilder()
    history.publish("m1")
    history.consume("q", "m1", 1)
    history.consume("q", "ghost", 2)
    [unexpected] = check(history.ops).violations
    assert unexpected.kind == "unexpected" and "never published" in unexpected.message
    assert unexpected.details["id"] == "ghost" and unexpected.details["targets"] is None


def test_a_delivery_from_a_queue_outside_the_targets_is_unexpected() -> None:
    history = HistoryBuilder({"a": {}, "b": {}})
    history.publish("m1", targets=["a"])
    history.consume("a", "m1", 1)
    history.consume("b", "m1", 2)
    [unexpected] = check(history.ops).violations
    assert unexpected.kind == "unexpected"
    assert unexpected.details == {"id": "m1", "queue": "b", "message_id": 2, "death_queue": None,
                                  "targets": ["a"]}


def test_a_dead_lettered_copy_must_come_from_a_target_into_its_dead_letter_queue() -> None:
    queues = {"q": {"dead_letter_queue": "dlq"}, "other": {"dead_letter_queue": "dlq"}, "dlq": {},
              "elsewhere": {}}
    history = HistoryBuilder(queues)
    history.publish("m1")
    history.deliver("q", "m1", 1)
    history.nack("q", "m1", 1, requeue=False)
    history.consume("dlq", "m1", 2, death_reason="rejected", death_queue="q")
    assert_clean(check(history.ops))
    history.consume("dlq", "m1", 3, death_reason="rejected", death_queue="other")
    history.consume("elsewhere", "m1", 4, death_reason="rejected", death_queue="q")
    unexpected = only(check(history.ops), "unexpected")
    assert [anomaly.details["message_id"] for anomaly in unexpected] == [3, 4]
    assert "dead-lettered from other" in unexpected[0].message
    assert "whose dead-letter queue is dlq" in unexpected[1].message


# ---------------------------------------------------------------------- duplicated
def test_one_message_stored_twice_in_a_queue_is_duplicated() -> None:
    history = HistoryBuilder()
    history.publish("m1")
    history.consume("q", "m1", 1)
    history.consume("q", "m1", 5)
    [duplicated] = check(history.ops).violations
    assert duplicated.kind == "duplicated"
    assert duplicated.details == {"reason": "stored_twice", "id": "m1", "queue": "q", "message_ids": [1, 5],
                                  "death_queue": None}


def test_redelivery_of_the_same_copy_before_an_ack_is_at_least_once_not_a_duplicate() -> None:
    history = HistoryBuilder()
    history.publish("m1")
    history.deliver("q", "m1", 1, 1)
    history.ack("q", "m1", 1, "fail")  # the lease had run out
    history.deliver("q", "m1", 1, 2, consumer="consumer-1")
    history.nack("q", "m1", 1, requeue=True, consumer="consumer-1")
    history.deliver("q", "m1", 1, 3)
    history.ack("q", "m1", 1)
    result = check(history.ops)
    assert_clean(result)
    assert result.stats["redeliveries"] == 2 and result.stats["fate_acked"] == 1


def test_a_delivery_after_an_ok_ack_is_duplicated() -> None:
    history = HistoryBuilder()
    history.publish("m1")
    history.consume("q", "m1", 1)
    history.deliver("q", "m1", 1, 2)
    [duplicated] = check(history.ops).violations
    assert duplicated.kind == "duplicated" and duplicated.details["reason"] == "redelivered_after_settle"
    assert duplicated.details["settled_index"] == 5 and duplicated.index == 6


def test_an_older_delivery_seen_after_its_lease_ended_is_late_not_duplicated() -> None:
    """Delivery 1 reached its consumer only after its lease ran out; meanwhile delivery 2 went to
    another consumer and was acked. At-least-once allows the duplicate: info, not a violation."""
    history = HistoryBuilder()
    history.publish("m1")
    history.deliver("q", "m1", 1, 2, consumer="consumer-0")
    history.ack("q", "m1", 1, consumer="consumer-0")
    history.deliver("q", "m1", 1, 1, consumer="consumer-1", late_by_ms=1500)
    history.ack("q", "m1", 1, "unknown", consumer="consumer-1")
    result = check(history.ops)
    assert_clean(result)
    [late] = only(result, "late_delivery")
    assert late.details["delivery_count"] == 1 and not late.violation


def test_a_late_delivery_with_a_newer_count_is_still_a_duplicate() -> None:
    """Only an older delivery can be explained by lateness: a new delivery count after the ack
    means the broker handed the message out again."""
    history = HistoryBuilder()
    history.publish("m1")
    history.consume("q", "m1", 1)
    history.deliver("q", "m1", 1, 2, late_by_ms=10)
    [duplicated] = check(history.ops).violations
    assert duplicated.details["reason"] == "redelivered_after_settle"


def test_a_delivery_after_a_reject_is_duplicated() -> None:
    history = HistoryBuilder({"q": {}})
    history.publish("m1")
    history.deliver("q", "m1", 1, 1)
    history.nack("q", "m1", 1, requeue=False)
    history.deliver("q", "m1", 1, 2)
    history.ack("q", "m1", 1)
    [duplicated] = check(history.ops).violations
    assert "rejected (nack without requeue)" in duplicated.message


def test_stored_twice_without_idempotent_producers_is_info() -> None:
    history = HistoryBuilder(idempotent=False)
    history.publish("m1")
    history.consume("q", "m1", 1)
    history.consume("q", "m1", 2)
    result = check(history.ops)
    assert_clean(result)
    assert result.counts["duplicate_unidempotent"] == 1


def test_a_delivery_count_going_down_is_reported() -> None:
    history = HistoryBuilder()
    history.publish("m1")
    history.deliver("q", "m1", 1, 2)
    history.deliver("q", "m1", 1, 1)
    history.ack("q", "m1", 1)
    [regressed] = check(history.ops).violations
    assert regressed.kind == "delivery_count_regressed"
    assert regressed.details["delivery_count"] == 1 and regressed.details["previous_max"] == 2
    twin = HistoryBuilder()
    twin.publish("m1")
    twin.deliver("q", "m1", 1, 1)
    twin.deliver("q", "m1", 1, 2)
    twin.ack("q", "m1", 1)
    assert_clean(check(twin.ops))


def test_two_ids_under_one_message_id_are_divergent() -> None:
    history = HistoryBuilder()
    history.publish("m1")
    history.publish("m2")
    history.deliver("q", "m1", 1)
    history.deliver("q", "m2", 1)
    history.ack("q", "m1", 1)
    divergent = only(check(history.ops), "divergent_read")
    assert [anomaly.details for anomaly in divergent] == [
        {"queue": "q", "message_id": 1, "ids": ["m1", "m2"]}]


# ---------------------------------------------------------------------- outcomes
def test_a_failed_publish_that_arrives_is_failed_but_stored() -> None:
    history = HistoryBuilder()
    history.publish("m1", "fail")
    history.publish("m2", status="rejected")
    history.consume("q", "m1", 1)
    history.consume("q", "m2", 2)
    found = check(history.ops).violations
    assert [(anomaly.kind, anomaly.details["id"]) for anomaly in found] == [
        ("failed_but_stored", "m1"), ("failed_but_stored", "m2")]
    assert found[0].details["outcome"] == "fail" and found[1].details["status"] == "rejected"
    twin = HistoryBuilder()
    twin.publish("m1", "fail")
    twin.publish("m2", status="rejected")
    assert_clean(check(twin.ops))


def test_an_unknown_publish_that_arrives_is_recovered_info() -> None:
    history = HistoryBuilder()
    history.publish("m1", "unknown")
    history.consume("q", "m1", 1)
    result = check(history.ops)
    assert_clean(result)
    [recovered] = only(result, "recovered")
    assert recovered.details["sample"] == ["m1"] and result.counts["recovered"] == 1


# ---------------------------------------------------------------------- order
def order_history(first_message_id: int, second_message_id: int, *, concurrent: bool) -> HistoryBuilder:
    history = HistoryBuilder()
    history.publish_invoke("m1")
    if concurrent:
        history.publish_invoke("m2")
        history.publish_done("m1")
    else:
        history.publish_done("m1")
        history.publish_invoke("m2")
    history.publish_done("m2")
    history.consume("q", "m1", first_message_id)
    history.consume("q", "m2", second_message_id)
    return history


def test_a_later_publish_stored_before_an_earlier_confirmed_one_is_an_order_violation() -> None:
    [order] = check(order_history(5, 3, concurrent=False).ops).violations
    assert order.kind == "order"
    assert order.details == {"queue": "q", "producer": "producer-0", "earlier": "m1", "later": "m2",
                             "earlier_message_id": 5, "later_message_id": 3}
    assert_clean(check(order_history(3, 5, concurrent=False).ops))


def test_concurrent_publishes_may_be_stored_in_either_order() -> None:
    assert_clean(check(order_history(5, 3, concurrent=True).ops))


def test_order_is_per_producer() -> None:
    history = HistoryBuilder()
    history.publish("m1", producer="producer-0")
    history.publish("m2", producer="producer-1")
    history.consume("q", "m1", 5)
    history.consume("q", "m2", 3)
    assert_clean(check(history.ops))


# ---------------------------------------------------------------------- dead-letter accounting
def test_fates_are_counted_and_a_message_acked_and_dead_lettered_has_two_fates() -> None:
    history = HistoryBuilder(DLQ_QUEUES)
    for msg_id in ("m1", "m2", "m3"):
        history.publish(msg_id)
    history.consume("q", "m1", 1)
    history.deliver("q", "m2", 2, 1)
    history.deliver("q", "m2", 2, 2)  # past the delivery limit: dead-lettered
    history.consume("dlq", "m2", 10, death_reason="delivery_limit", death_queue="q")
    history.deliver("q", "m3", 3)
    history.ack("q", "m3", 3)
    history.consume("dlq", "m3", 11, death_reason="rejected", death_queue="q")
    result = check(history.ops)
    [two_fates] = result.violations
    assert two_fates.kind == "dead_letter_accounting"
    assert two_fates.details["reason"] == "two_fates" and two_fates.details["id"] == "m3"
    assert two_fates.details["acked_message_id"] == 3 and two_fates.details["dead_letter_message_id"] == 11
    assert result.stats["fate_acked"] == 2 and result.stats["fate_dead_lettered"] == 1


def test_a_delivered_message_without_a_fate_is_unsettled_once_drained() -> None:
    def history_with(drain_complete: bool | None) -> HistoryBuilder:
        history = HistoryBuilder(DLQ_QUEUES)
        history.publish("m1")
        history.publish("m2")
        history.deliver("q", "m1", 1)
        history.deliver("q", "m2", 2)
        history.nack("q", "m2", 2, requeue=False)
        history.deliver("dlq", "m2", 3, death_reason="rejected", death_queue="q")
        if drain_complete is not None:
            history.drain(queue="q", complete=drain_complete)
            history.drain(queue="dlq", complete=drain_complete)
        return history
    result = check(history_with(True).ops)
    unsettled = result.violations
    found = [(anomaly.kind, anomaly.details["id"], anomaly.details["stuck_queue"]) for anomaly in unsettled]
    assert found == [("unsettled", "m1", "q"), ("unsettled", "m2", "dlq")]
    for drain in (False, None):
        undrained = check(history_with(drain).ops)
        assert_clean(undrained)
        assert undrained.counts["unsettled_undrained"] == 2


def test_queues_without_dead_letter_queue_drop_what_they_would_dead_letter() -> None:
    history = HistoryBuilder({"q": {"delivery_limit": 2}})
    history.publish("m1")
    history.publish("m2")
    history.deliver("q", "m1", 1, 1)
    history.deliver("q", "m1", 1, 2)
    history.deliver("q", "m2", 2, 1)
    history.nack("q", "m2", 2, requeue=False)
    history.drain(queue="q")
    result = check(history.ops)
    assert_clean(result)
    assert result.stats["fate_dropped"] == 2


def test_an_ack_of_unknown_outcome_may_have_settled_the_message() -> None:
    history = HistoryBuilder()
    history.publish("m1")
    history.publish("m2")
    history.deliver("q", "m1", 1)
    history.ack("q", "m1", 1, "unknown")
    history.deliver("q", "m2", 2)
    history.ack("q", "m2", 2, "open")
    history.drain(queue="q")
    result = check(history.ops)
    assert_clean(result)
    assert result.stats["fate_maybe_acked"] == 2
    failed = HistoryBuilder()
    failed.publish("m1")
    failed.deliver("q", "m1", 1)
    failed.ack("q", "m1", 1, "fail")
    failed.drain(queue="q")
    assert violation_kinds(check(failed.ops)) == {"unsettled"}


def test_never_delivered_after_an_incomplete_drain_is_undrained_not_lost() -> None:
    """A backlog the drain could not finish is a failed run, but not proof of loss."""
    history = HistoryBuilder()
    history.publish("m1")
    history.drain(queue="q", complete=False)
    result = check(history.ops)
    [undrained] = result.violations
    assert undrained.kind == "undrained" and undrained.details["drain_complete"] is False
    assert result.counts["lost"] == 0 and not result.valid
