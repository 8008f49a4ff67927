"""BrokerState: dead-lettering (reasons, headers, routing, cycles) and the total-bytes limit."""

from __future__ import annotations

from dataclasses import replace

from raftmq.broker.commands import (
    Bind,
    Claim,
    DeclareExchange,
    DeclareQueue,
    LeaseRef,
    Nack,
    OutMessage,
    Publish,
    QueueArgs,
    Tick,
)
from raftmq.broker.queue_core import MAX_DEATH_COUNT
from raftmq.broker.results import ClaimResult, Delivery, ErrorResult, PublishResult, QueueInfo
from raftmq.broker.state import BrokerState


def with_dlq(args: QueueArgs) -> BrokerState:
    """Queue "work" dead-letters via exchange "dlx" (direct, key "dead") into queue "dlq"."""
    state = BrokerState()
    for cmd in (
        DeclareExchange(0, "dlx", "direct"),
        DeclareQueue(0, "dlq", QueueArgs()),
        Bind(0, "dlx", "dlq", "dead"),
        DeclareQueue(0, "work", args),
    ):
        state.apply_command(cmd)
    return state


DLX_ARGS = QueueArgs(dead_letter_exchange="dlx", dead_letter_routing_key="dead")


def claim(state: BrokerState, now: int, queue: str, lease_ms: int = 10) -> list[Delivery]:
    result = state.apply_command(Claim(now, queue, "c", 100, lease_ms))
    assert isinstance(result, ClaimResult), result
    return list(result.deliveries)


def publish(state: BrokerState, now: int, *messages: OutMessage) -> PublishResult:
    result = state.apply_command(Publish(now, "", messages))
    assert isinstance(result, PublishResult), result
    return result


def info(state: BrokerState, queue: str) -> QueueInfo:
    found = state.queue_info(queue)
    assert found is not None
    return found


def test_delivery_limit_dead_letters_with_headers() -> None:
    state = with_dlq(replace(DLX_ARGS, delivery_limit=2))
    publish(state, 0, OutMessage("work", b"job", {"app": "x"}))
    claim(state, 0, "work")
    claim(state, 10, "work")
    assert claim(state, 20, "work") == []
    (dead,) = claim(state, 20, "dlq")
    assert dead.body == b"job"
    assert dead.message_id == 2  # a new id in the dead-letter queue
    assert dead.exchange == "dlx" and dead.routing_key == "dead"
    assert dead.published_ms == 20
    assert dead.headers == {
        "app": "x",
        "x-death-reason": "delivery_limit",
        "x-death-queue": "work",
        "x-death-count": 1,
        "x-death-time-ms": 20,
        "x-delivery-count": 2,
        "x-original-exchange": "",
        "x-original-routing-key": "work",
    }
    work = info(state, "work")
    assert (work.dead_lettered, work.dropped) == (1, 0)
    assert info(state, "dlq").published == 1
    assert state.total_body_bytes == 3


def test_nack_without_requeue_dead_letters_as_rejected() -> None:
    state = with_dlq(DLX_ARGS)
    publish(state, 0, OutMessage("work", b"a"))
    (d,) = claim(state, 0, "work")
    state.apply_command(Nack(1, "work", (LeaseRef(d.message_id, d.lease_id),), requeue=False))
    (dead,) = claim(state, 1, "dlq")
    assert dead.headers["x-death-reason"] == "rejected"
    assert dead.headers["x-delivery-count"] == 1


def test_expired_and_overflow_reasons_and_original_routing_key() -> None:
    # No dead_letter_routing_key: the original routing key is used, so route by a topic.
    state = BrokerState()
    for cmd in (
        DeclareExchange(0, "dlx", "topic"),
        DeclareQueue(0, "dlq", QueueArgs()),
        Bind(0, "dlx", "dlq", "#"),
        DeclareQueue(
            0,
            "work",
            QueueArgs(max_length=1, overflow="drop-head", message_ttl_ms=50,
                      dead_letter_exchange="dlx"),
        ),
    ):
        state.apply_command(cmd)
    publish(state, 0, OutMessage("work", b"first"), OutMessage("work", b"second"))
    state.apply_command(Tick(50))
    dead = claim(state, 50, "dlq")
    assert [(d.body, d.headers["x-death-reason"]) for d in dead] == [
        (b"first", "overflow"),
        (b"second", "expired"),
    ]
    assert all(d.routing_key == "work" for d in dead)
    assert info(state, "work").expired == 1


def test_dead_letter_to_missing_exchange_or_unroutable_is_dropped() -> None:
    state = BrokerState()
    state.apply_command(DeclareQueue(0, "work", QueueArgs(message_ttl_ms=1,
                                                          dead_letter_exchange="gone")))
    state.apply_command(DeclareQueue(0, "dlq-by-name", QueueArgs(message_ttl_ms=1,
                                                                 dead_letter_exchange="",
                                                                 dead_letter_routing_key="x")))
    publish(state, 0, OutMessage("work", b"a"), OutMessage("dlq-by-name", b"b"))
    state.apply_command(Tick(1))
    assert info(state, "work").dropped == 1
    assert info(state, "dlq-by-name").dropped == 1  # default exchange, no queue "x"
    assert state.dead_letter_dropped == 2
    assert state.total_body_bytes == 0


def test_dead_letter_via_default_exchange() -> None:
    state = BrokerState()
    state.apply_command(DeclareQueue(0, "parking", QueueArgs()))
    args = QueueArgs(message_ttl_ms=5, dead_letter_exchange="", dead_letter_routing_key="parking")
    state.apply_command(DeclareQueue(0, "work", args))
    publish(state, 0, OutMessage("work", b"a"))
    state.apply_command(Tick(5))
    assert [d.body for d in claim(state, 5, "parking")] == [b"a"]


def test_dead_letter_cycle_with_zero_ttl_terminates() -> None:
    state = BrokerState()
    args = QueueArgs(message_ttl_ms=0, dead_letter_exchange="", dead_letter_routing_key="loop")
    state.apply_command(DeclareQueue(0, "loop", args))
    publish(state, 0, OutMessage("loop", b"a"))
    state.apply_command(Tick(1))  # expires, comes back with TTL 0, expires again...
    loop = info(state, "loop")
    assert loop.dead_lettered == MAX_DEATH_COUNT + 1
    assert loop.dropped == 1
    assert state.message_count == 0


def test_dead_letter_cycle_through_drop_head_terminates() -> None:
    state = BrokerState()
    args = QueueArgs(max_length=1, overflow="drop-head", dead_letter_exchange="",
                     dead_letter_routing_key="ring")
    state.apply_command(DeclareQueue(0, "ring", args))
    result = publish(state, 0, OutMessage("ring", b"a"), OutMessage("ring", b"b"))
    assert result.accepted == 2
    assert info(state, "ring").ready == 1
    assert state.message_count == 1


def test_dead_lettered_message_gets_queue_ttl_of_dead_letter_queue() -> None:
    state = BrokerState()
    state.apply_command(DeclareQueue(0, "dlq", QueueArgs(message_ttl_ms=100)))
    state.apply_command(DeclareQueue(0, "work", QueueArgs(
        message_ttl_ms=10, dead_letter_exchange="", dead_letter_routing_key="dlq")))
    publish(state, 0, OutMessage("work", b"a", ttl_ms=1))
    state.apply_command(Tick(1))
    assert info(state, "dlq").ready == 1
    state.apply_command(Tick(100))
    assert info(state, "dlq").ready == 1  # published to dlq at 1: expires at 101
    state.apply_command(Tick(101))
    assert info(state, "dlq").ready == 0


def test_max_total_bytes_refuses_whole_batch() -> None:
    state = BrokerState()
    state.apply_command(DeclareQueue(0, "q", QueueArgs()))
    ok = state.apply_command(Publish(0, "", (OutMessage("q", b"12345"),), max_total_bytes=10))
    assert isinstance(ok, PublishResult) and ok.accepted == 1
    batch = (OutMessage("q", b"123"), OutMessage("q", b"123"))
    refused = state.apply_command(Publish(0, "", batch, max_total_bytes=10))
    assert isinstance(refused, ErrorResult) and refused.code == "resource_exhausted"
    assert state.total_body_bytes == 5
    fits = state.apply_command(Publish(0, "", batch[:1], max_total_bytes=10))
    assert isinstance(fits, PublishResult) and fits.accepted == 1
    assert state.total_body_bytes == 8
