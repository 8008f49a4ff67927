"""Stateful property test: BrokerState against the naive reference model.

Hypothesis drives both with the same random commands (queues with random arguments, publishes
with delays / TTLs / producer retries, claims, acks, nacks, extensions, time jumps, purges,
deletes, fanout bindings) and compares every result and every queue's statistics. One rule
replaces the state with a fresh BrokerState restored from its snapshot, so behaviour after a
restore is checked too.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from raftmq.broker import producers
from raftmq.broker.commands import (
    Ack,
    Bind,
    Claim,
    DeclareExchange,
    DeclareQueue,
    DeleteQueue,
    ExtendLease,
    LeaseRef,
    Nack,
    OutMessage,
    Publish,
    PurgeQueue,
    QueueArgs,
    Tick,
    Unbind,
)
from raftmq.broker.results import (
    ClaimResult,
    ErrorResult,
    OkResult,
    PublishResult,
    PurgeResult,
    Result,
    SettleResult,
)
from raftmq.broker.state import BrokerState
from tests.unit.test_state_reference_model import COUNTERS, Model

QUEUES = ["q0", "q1", "q2"]
WINDOW = 4
queue_names = st.sampled_from(QUEUES)
# Limits are off more often than on, or hardly anything would be stored.
queue_args = st.fixed_dictionaries(
    {
        "max_length": st.none() | st.none() | st.integers(0, 6),
        "max_length_bytes": st.none() | st.none() | st.integers(0, 16),
        "overflow": st.sampled_from(["reject-publish", "drop-head"]),
        "message_ttl_ms": st.none() | st.none() | st.integers(0, 80),
        "delivery_limit": st.none() | st.integers(1, 3),
        "dead_letter_exchange": st.sampled_from([None, "", "", "fan"]),
        "dead_letter_routing_key": st.none() | queue_names,
    }
)
messages = st.lists(
    st.tuples(
        st.sampled_from([*QUEUES, "nowhere"]),
        st.binary(min_size=0, max_size=4),
        st.sampled_from([{}, {"app": 1}]),
        st.none() | st.integers(0, 60),
        st.none() | st.integers(0, 60),
    ),
    min_size=1,
    max_size=4,
)


def normalise(result: Result) -> tuple[Any, ...]:
    """The real result in the model's tuple form."""
    if isinstance(result, ErrorResult):
        return ("error", result.code)
    if isinstance(result, OkResult):
        return ("ok", result.created)
    if isinstance(result, PurgeResult):
        return ("purged", result.purged)
    if isinstance(result, PublishResult):
        return (result.accepted, result.unroutable, result.rejected, result.duplicate,
                result.first_message_id)
    if isinstance(result, ClaimResult):
        return ("claimed", tuple(
            (d.message_id, d.lease_id, d.body, d.headers, d.routing_key, d.exchange,
             d.delivery_count, d.published_ms, d.lease_expires_ms) for d in result.deliveries))
    assert isinstance(result, SettleResult), result
    return ("settled", result.settled, result.failures)


class BrokerComparison(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # A window of 4 instead of 64, so that short runs reach "too old" and eviction from it.
        self.saved_window = producers.PRODUCER_WINDOW
        producers.PRODUCER_WINDOW = WINDOW
        self.real = BrokerState()
        self.model = Model(window=WINDOW)
        self.now = 0
        # Producer "p"'s latest sequence; starting high puts "older" sequences in play at once.
        self.sequence = 10
        self.leases: list[tuple[str, int, int]] = []  # (queue, message_id, lease_id) seen so far

    def teardown(self) -> None:
        producers.PRODUCER_WINDOW = self.saved_window

    def check(self, result: Result, expected: tuple[Any, ...]) -> None:
        assert normalise(result) == expected

    @initialize(args=st.lists(queue_args, min_size=len(QUEUES), max_size=len(QUEUES)))
    def topology(self, args: list[dict[str, Any]]) -> None:
        assert self.real.apply_command(DeclareExchange(0, "fan", "fanout")) == OkResult(True)
        for name, queue_arg in zip(QUEUES, args, strict=True):
            self.declare_queue(name, queue_arg)

    @rule(name=queue_names, args=queue_args)
    def declare_queue(self, name: str, args: dict[str, Any]) -> None:
        result = self.real.apply_command(DeclareQueue(self.now, name, QueueArgs(**args)))
        self.check(result, self.model.declare(self.now, name, args))

    @rule(name=queue_names, if_empty=st.booleans(), args=queue_args)
    def recreate_queue(self, name: str, if_empty: bool, args: dict[str, Any]) -> None:
        """Delete (if allowed) and declare again, so that queues mostly exist."""
        result = self.real.apply_command(DeleteQueue(self.now, name, if_empty))
        self.check(result, self.model.delete(self.now, name, if_empty))
        self.declare_queue(name, args)

    @rule(name=queue_names)
    def purge_queue(self, name: str) -> None:
        result = self.real.apply_command(PurgeQueue(self.now, name))
        self.check(result, self.model.purge(self.now, name))

    @rule(name=queue_names, bound=st.booleans())
    def bind_to_fanout(self, name: str, bound: bool) -> None:
        command = Bind if bound else Unbind
        result = self.real.apply_command(command(self.now, "fan", name, ""))
        if not bound and name in self.model.queues:
            result = OkResult(False)  # unbind answers ok either way; the model says created=False
        self.check(result, self.model.bind(self.now, name, bound))

    @rule(exchange=st.sampled_from(["", "fan"]), batch=messages,
          producer=st.sampled_from(["none", "next", "next", "retry", "older", "edge", "ancient"]),
          max_total=st.sampled_from([0, 0, 20]))
    def publish(self, exchange: str, batch: list[Any], producer: str, max_total: int) -> None:
        seq = {"none": None, "next": self.sequence + 1, "retry": self.sequence,
               "older": max(0, self.sequence - 3), "edge": max(0, self.sequence - WINDOW),
               "ancient": max(0, self.sequence - 5)}[producer]
        producer_id = None if seq is None else "p"
        out = tuple(OutMessage(rk, body, dict(h), ttl, delay) for rk, body, h, ttl, delay in batch)
        result = self.real.apply_command(
            Publish(self.now, exchange, out, producer_id, seq, max_total)
        )
        expected = self.model.publish(self.now, exchange, [(rk, body, dict(h), ttl, delay)
                                      for rk, body, h, ttl, delay in batch],
                                      producer_id, seq, max_total)
        self.check(result, expected)
        if seq is not None and seq > self.sequence:
            self.sequence = seq

    @rule(batch=messages)
    def publish_plain(self, batch: list[Any]) -> None:
        """A second publish rule: publishing is what everything else needs, so do it often."""
        self.publish("", batch, "none", 0)

    @rule(name=queue_names, count=st.integers(1, 5), lease_ms=st.integers(1, 60),
          consumer=st.sampled_from(["c1", "c2"]))
    def claim(self, name: str, count: int, lease_ms: int, consumer: str) -> None:
        result = self.real.apply_command(Claim(self.now, name, consumer, count, lease_ms))
        self.check(result, self.model.claim(self.now, name, consumer, count, lease_ms))
        if isinstance(result, ClaimResult):
            self.leases += [(name, d.message_id, d.lease_id) for d in result.deliveries]
            del self.leases[:-30]

    @rule(name=queue_names, count=st.integers(1, 5))
    def claim_more(self, name: str, count: int) -> None:
        """Claims drive most of the interesting paths: a second rule makes them frequent."""
        self.claim(name, count, 20, "c1")

    @rule(step=st.integers(1, 15))
    def small_tick(self, step: int) -> None:
        self.tick(step, False)

    def pick_leases(self, data: st.DataObject) -> tuple[str, list[tuple[int, int]]]:
        name = data.draw(queue_names)
        known = [(m, lease) for q, m, lease in self.leases if q == name]
        bogus = st.tuples(st.integers(1, 40), st.integers(1, 40))
        picks = st.sampled_from(known) | bogus if known else bogus
        return name, data.draw(st.lists(picks, max_size=4))

    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        name, pairs = self.pick_leases(data)
        refs = tuple(LeaseRef(m, lease) for m, lease in pairs)
        result = self.real.apply_command(Ack(self.now, name, refs))
        self.check(result, self.model.settle(self.now, name, "ack", pairs))

    @rule(data=st.data(), requeue=st.booleans(), delay=st.sampled_from([0, 0, 5, 30]))
    def nack(self, data: st.DataObject, requeue: bool, delay: int) -> None:
        name, pairs = self.pick_leases(data)
        refs = tuple(LeaseRef(m, lease) for m, lease in pairs)
        result = self.real.apply_command(Nack(self.now, name, refs, requeue, delay))
        self.check(result, self.model.settle(self.now, name, "nack", pairs, requeue, delay))

    @rule(data=st.data(), lease_ms=st.integers(1, 60))
    def extend(self, data: st.DataObject, lease_ms: int) -> None:
        name, pairs = self.pick_leases(data)
        refs = tuple(LeaseRef(m, lease) for m, lease in pairs)
        result = self.real.apply_command(ExtendLease(self.now, name, refs, lease_ms))
        self.check(result, self.model.settle(self.now, name, "extend", pairs, True, lease_ms))

    @rule(step=st.integers(0, 40) | st.just(25 * 3600 * 1000), stale_clock=st.booleans())
    def tick(self, step: int, stale_clock: bool) -> None:
        self.now += step
        # A proposer with a slow clock: state time must not go backwards.
        stamp = max(0, self.now - 30) if stale_clock else self.now
        self.check(self.real.apply_command(Tick(stamp)), self.model.tick(stamp))

    @precondition(lambda self: self.real.message_count > 0)
    @rule()
    def snapshot_and_restore(self) -> None:
        snapshot = self.real.snapshot()
        restored = BrokerState()
        restored.restore(snapshot)
        assert restored.snapshot() == snapshot
        self.real = restored

    @invariant()
    def observations_agree(self) -> None:
        real_queues = self.real.list_queues()
        assert [q.name for q in real_queues] == list(self.model.queues)
        for info in real_queues:
            real = (info.name, info.ready, info.delayed, info.leased, info.bytes, info.consumers,
                    *(getattr(info, c) for c in COUNTERS))
            assert real == self.model.queue_view(info.name)
        assert self.real.total_body_bytes == self.model.body_bytes()
        assert self.real.message_count == self.model.message_count()
        assert self.real.dead_letter_dropped == self.model.dropped_total
        assert self.real.now_ms == self.model.now


BrokerComparison.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_broker_matches_reference_model = BrokerComparison.TestCase
