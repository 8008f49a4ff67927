"""BrokerState: claim / lease / ack / nack / extend, expiry, TTL, delays, limits, purge, stats."""

from __future__ import annotations

import pytest

from raftmq.broker.commands import (
    Ack,
    Claim,
    Command,
    DeclareQueue,
    ExtendLease,
    LeaseRef,
    Nack,
    OutMessage,
    Publish,
    PurgeQueue,
    QueueArgs,
    Tick,
)
from raftmq.broker.results import (
    ClaimResult,
    Delivery,
    ErrorResult,
    PublishResult,
    PurgeResult,
    QueueInfo,
    Result,
    SettleResult,
)
from raftmq.broker.state import BrokerState


def make(args: QueueArgs | None = None, name: str = "q") -> BrokerState:
    state = BrokerState()
    assert state.apply_command(DeclareQueue(0, name, args or QueueArgs())) is not None
    return state


def send(state: BrokerState, now: int, *messages: OutMessage | bytes, queue: str = "q") -> (
    PublishResult
):
    out = tuple(m if isinstance(m, OutMessage) else OutMessage(queue, m) for m in messages)
    result = state.apply_command(Publish(now, "", out))
    assert isinstance(result, PublishResult), result
    return result


def claim(state: BrokerState, now: int, n: int = 100, lease_ms: int = 1000, queue: str = "q",
          consumer: str = "c") -> list[Delivery]:
    result = state.apply_command(Claim(now, queue, consumer, n, lease_ms))
    assert isinstance(result, ClaimResult), result
    return list(result.deliveries)


def refs(*deliveries: Delivery) -> tuple[LeaseRef, ...]:
    return tuple(LeaseRef(d.message_id, d.lease_id) for d in deliveries)


def settle(state: BrokerState, cmd: Command) -> SettleResult:
    result = state.apply_command(cmd)
    assert isinstance(result, SettleResult), result
    return result


def info(state: BrokerState, queue: str = "q") -> QueueInfo:
    found = state.queue_info(queue)
    assert found is not None
    return found


def error_code(result: Result) -> str:
    assert isinstance(result, ErrorResult), result
    return result.code


def test_claim_is_fifo_and_fills_delivery_fields() -> None:
    state = make()
    send(state, 5, OutMessage("q", b"a", {"h": 1}), b"b", b"c")
    first = claim(state, 10, n=2, lease_ms=500)
    assert [d.body for d in first] == [b"a", b"b"]
    d = first[0]
    assert (d.message_id, d.delivery_count, d.published_ms, d.lease_expires_ms) == (1, 1, 5, 510)
    assert (d.routing_key, d.exchange, d.headers) == ("q", "", {"h": 1})
    assert first[0].lease_id != first[1].lease_id
    assert [x.body for x in claim(state, 10)] == [b"c"]
    assert claim(state, 10) == []
    assert (info(state).ready, info(state).leased) == (0, 3)


def test_claim_validation() -> None:
    state = make()
    for cmd in (
        Claim(1, "q", "c", 0, 1000),
        Claim(1, "q", "c", 1001, 1000),
        Claim(1, "q", "c", 1, 0),
        Claim(1, "q", "c", 1, 43_200_001),
        Claim(1, "q", "", 1, 1000),
    ):
        assert error_code(state.apply_command(cmd)) == "invalid_argument"
    assert state.apply_command(Claim(1, "q", "c", 1000, 43_200_000)) == ClaimResult(())
    assert error_code(state.apply_command(Claim(1, "nope", "c", 1, 1))) == "queue_not_found"
    assert error_code(state.apply_command(Ack(1, "nope", ()))) == "queue_not_found"


def test_ack_settles_and_rejects_unknown_and_stale_leases() -> None:
    state = make()
    send(state, 1, b"a", b"b")
    a, b = claim(state, 2)
    assert settle(state, Ack(3, "q", refs(a))) == SettleResult(1, ())
    # Acking again: the message is gone.
    assert settle(state, Ack(3, "q", refs(a))) == SettleResult(0, ((a.message_id, "unknown_message"),))
    wrong = LeaseRef(b.message_id, b.lease_id + 100)
    assert settle(state, Ack(3, "q", (wrong,))) == SettleResult(0, ((b.message_id, "lease_expired"),))
    assert settle(state, Ack(3, "q", (LeaseRef(999, 1),))).failures == ((999, "unknown_message"),)
    assert info(state).acked == 1 and info(state).leased == 1


def test_lease_expiry_redelivers_and_old_lease_is_stale() -> None:
    state = make()
    send(state, 0, b"a")
    (first,) = claim(state, 0, lease_ms=100)
    assert claim(state, 99) == []
    (second,) = claim(state, 100, lease_ms=100)  # expired exactly at its deadline
    assert second.message_id == first.message_id
    assert second.delivery_count == 2
    assert second.lease_id != first.lease_id
    # The first consumer's ack is late: rejected, and the new delivery is untouched.
    assert settle(state, Ack(150, "q", refs(first))).failures == ((first.message_id, "lease_expired"),)
    assert settle(state, Nack(150, "q", refs(first))).failures == ((first.message_id, "lease_expired"),)
    extend = ExtendLease(150, "q", refs(first), 1000)
    assert settle(state, extend).failures == ((first.message_id, "lease_expired"),)
    assert settle(state, Ack(150, "q", refs(second))) == SettleResult(1, ())
    assert (info(state).delivered, info(state).redelivered) == (2, 1)


def test_extend_lease_postpones_expiry() -> None:
    state = make()
    send(state, 0, b"a")
    (d,) = claim(state, 0, lease_ms=100)
    assert settle(state, ExtendLease(50, "q", refs(d), 200)) == SettleResult(1, ())
    assert claim(state, 100) == []  # the original deadline passed: still leased
    assert claim(state, 249) == []
    assert [x.delivery_count for x in claim(state, 250)] == [2]
    assert error_code(state.apply_command(ExtendLease(1, "q", refs(d), 0))) == "invalid_argument"


def test_extend_lease_can_shorten() -> None:
    state = make()
    send(state, 0, b"a")
    (d,) = claim(state, 0, lease_ms=1000)
    settle(state, ExtendLease(10, "q", refs(d), 5))
    assert len(claim(state, 15)) == 1


def test_nack_requeue_returns_to_id_position() -> None:
    state = make()
    send(state, 0, b"a", b"b", b"c")
    a, b = claim(state, 1, n=2)
    assert settle(state, Nack(2, "q", refs(b))) == SettleResult(1, ())
    assert settle(state, Nack(2, "q", refs(a))) == SettleResult(1, ())
    again = claim(state, 3)
    assert [d.body for d in again] == [b"a", b"b", b"c"]
    assert [d.delivery_count for d in again] == [2, 2, 1]
    assert info(state).nacked == 2


def test_nack_with_delay() -> None:
    state = make()
    send(state, 0, b"a", b"b")
    a, _ = claim(state, 0)
    settle(state, Nack(10, "q", refs(a), requeue=True, delay_ms=50))
    assert (info(state).delayed, info(state).ready) == (1, 0)
    assert claim(state, 59) == []
    assert [d.body for d in claim(state, 60)] == [b"a"]


def test_delivery_limit_without_dlx_drops() -> None:
    state = make(QueueArgs(delivery_limit=2))
    send(state, 0, b"a")
    claim(state, 0, lease_ms=10)
    assert len(claim(state, 10, lease_ms=10)) == 1  # second delivery
    assert claim(state, 20) == []  # limit reached at expiry: gone
    q = info(state)
    assert (q.ready, q.leased, q.dead_lettered, q.dropped) == (0, 0, 1, 1)
    assert state.dead_letter_dropped == 1
    assert state.total_body_bytes == 0


def test_nack_requeue_respects_delivery_limit() -> None:
    state = make(QueueArgs(delivery_limit=1))
    send(state, 0, b"a")
    (d,) = claim(state, 0)
    assert settle(state, Nack(1, "q", refs(d))) == SettleResult(1, ())
    assert info(state).ready == 0 and info(state).dropped == 1


def test_queue_ttl_expires_non_head_messages_exactly_at_deadline() -> None:
    state = make(QueueArgs(message_ttl_ms=100))
    send(state, 0, b"old")
    send(state, 50, OutMessage("q", b"short", ttl_ms=10), b"young")
    # At 60 "short" (not the head) expires; "old" is still there.
    state.apply_command(Tick(60))
    assert (info(state).ready, info(state).expired) == (2, 1)
    assert [d.body for d in claim(state, 99, lease_ms=1)] == [b"old", b"young"]
    # Leased messages do not expire; when the lease returns after their deadline they do.
    state.apply_command(Tick(200))
    q = info(state)
    assert (q.ready, q.leased, q.expired, q.dropped) == (0, 0, 3, 3)


def test_message_ttl_is_min_of_message_and_queue_ttl() -> None:
    state = make(QueueArgs(message_ttl_ms=100))
    send(state, 0, OutMessage("q", b"long", ttl_ms=1000), OutMessage("q", b"short", ttl_ms=30))
    state.apply_command(Tick(30))
    assert [d.body for d in claim(state, 99, lease_ms=1_000_000)] == [b"long"]
    state2 = make()
    send(state2, 0, OutMessage("q", b"x", ttl_ms=0))
    assert claim(state2, 0) == []  # TTL 0: expired before anyone can claim it


def test_delayed_delivery() -> None:
    state = make()
    send(state, 100, OutMessage("q", b"later", delay_ms=50), b"now")
    assert (info(state).ready, info(state).delayed) == (1, 1)
    assert [d.body for d in claim(state, 149)] == [b"now"]
    assert state.next_deadline_ms() == 150
    late = claim(state, 150)
    assert [d.body for d in late] == [b"later"] and late[0].published_ms == 100


def test_delayed_message_can_expire_before_it_is_ready() -> None:
    state = make()
    send(state, 0, OutMessage("q", b"x", ttl_ms=10, delay_ms=20))
    state.apply_command(Tick(20))
    assert (info(state).ready, info(state).delayed, info(state).expired) == (0, 0, 1)


def test_max_length_reject_publish() -> None:
    state = make(QueueArgs(max_length=2))
    result = send(state, 0, b"a", b"b", b"c", OutMessage("q", b"d", delay_ms=5))
    assert result == PublishResult(2, (), (2, 3), False, 1)
    # Leased messages do not count toward max length.
    claim(state, 0, n=1)
    assert send(state, 0, b"e").accepted == 1
    assert info(state).ready == 2


def test_max_length_drop_head_dead_letters_oldest_ready() -> None:
    state = make(QueueArgs(max_length=2, overflow="drop-head"))
    assert send(state, 0, b"a", b"b", b"c").accepted == 3
    assert [d.body for d in claim(state, 0)] == [b"b", b"c"]
    q = info(state)
    assert (q.dead_lettered, q.dropped) == (1, 1)


def test_drop_head_rejects_when_only_delayed_messages_fill_the_queue() -> None:
    state = make(QueueArgs(max_length=1, overflow="drop-head"))
    send(state, 0, OutMessage("q", b"later", delay_ms=100))
    assert send(state, 0, b"now").rejected == (0,)
    zero = make(QueueArgs(max_length=0, overflow="drop-head"))
    assert send(zero, 0, b"x").rejected == (0,)


def test_max_length_bytes() -> None:
    state = make(QueueArgs(max_length_bytes=10))
    assert send(state, 0, b"12345", b"123456", b"12345").rejected == (1,)
    assert info(state).bytes == 10
    dropper = make(QueueArgs(max_length_bytes=10, overflow="drop-head"))
    send(dropper, 0, b"12345", b"12345", b"123")
    assert [d.body for d in claim(dropper, 0)] == [b"12345", b"123"]
    assert send(dropper, 0, b"x" * 11).rejected == (0,)  # can never fit: nothing dropped


def test_purge_removes_ready_and_delayed_not_leased() -> None:
    state = make()
    send(state, 0, b"a", b"b", OutMessage("q", b"c", delay_ms=10))
    (leased,) = claim(state, 0, n=1)
    assert state.apply_command(PurgeQueue(1, "q")) == PurgeResult(2)
    assert (info(state).ready, info(state).delayed, info(state).leased) == (0, 0, 1)
    assert settle(state, Ack(2, "q", refs(leased))) == SettleResult(1, ())
    assert state.total_body_bytes == 0 and state.message_count == 0
    assert claim(state, 100) == []  # the delayed message's timer is moot
    assert error_code(state.apply_command(PurgeQueue(1, "nope"))) == "queue_not_found"


def test_stats_counters_and_consumers() -> None:
    state = make()
    send(state, 0, b"a", b"b", b"c")
    a, b = claim(state, 0, n=2, consumer="c1")
    claim(state, 0, n=1, consumer="c2")
    settle(state, Ack(1, "q", refs(a)))
    settle(state, Nack(1, "q", refs(b)))
    claim(state, 1, n=1, consumer="c1")
    q = info(state)
    assert (q.published, q.delivered, q.redelivered, q.acked, q.nacked) == (3, 4, 1, 1, 1)
    assert (q.ready, q.leased, q.delayed, q.bytes) == (0, 2, 0, 2)
    assert q.consumers == 2
    state.apply_command(Tick(60_000))  # consumers seen 60 s ago or more no longer count
    assert info(state).consumers == 1  # c1 claimed at 1
    state.apply_command(Tick(60_001))
    assert info(state).consumers == 0


def test_time_never_goes_backwards() -> None:
    state = make()
    state.apply_command(Tick(1000))
    send(state, 10, OutMessage("q", b"x", ttl_ms=5))  # published at 1000, not 10
    assert state.now_ms == 1000
    (d,) = claim(state, 0)
    assert d.published_ms == 1000


def test_ready_notifications_and_next_deadline() -> None:
    state = make()
    state.apply_command(DeclareQueue(0, "other", QueueArgs()))
    assert state.drain_ready_notifications() == []
    send(state, 0, b"a")
    send(state, 0, OutMessage("other", b"x", delay_ms=100), queue="other")
    assert state.drain_ready_notifications() == ["q"]
    assert state.drain_ready_notifications() == []
    (d,) = claim(state, 0, lease_ms=50)
    assert state.next_deadline_ms() == 50
    settle(state, Ack(1, "q", refs(d)))
    assert state.next_deadline_ms() == 100  # the moot lease timer is skipped
    state.apply_command(Tick(100))
    assert state.drain_ready_notifications() == ["other"]
    assert state.next_deadline_ms() is None


def test_many_ttl_expiries_keep_memory_bounded_and_order_intact() -> None:
    state = make()
    for i in range(300):
        ttl = 10 if i % 3 else None  # two of every three expire, scattered through the queue
        send(state, 0, OutMessage("q", str(i).encode(), ttl_ms=ttl))
    state.apply_command(Tick(10))
    bodies = [d.body for d in claim(state, 10, n=1000)]
    assert bodies == [str(i).encode() for i in range(0, 300, 3)]


@pytest.mark.parametrize("requeue", [True, False])
def test_settle_batch_reports_each_failure(requeue: bool) -> None:
    state = make()
    send(state, 0, b"a", b"b")
    a, b = claim(state, 0)
    cmd = Nack(1, "q", (*refs(a), LeaseRef(77, 1), *refs(a), *refs(b)), requeue=requeue)
    result = settle(state, cmd)
    # The repeated ref finds the message requeued (no longer under that lease) or gone.
    repeated = "lease_expired" if requeue else "unknown_message"
    assert result == SettleResult(2, ((77, "unknown_message"), (a.message_id, repeated)))
