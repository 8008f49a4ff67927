"""BrokerState: bounded internals (timer heap, consumer table), partial rejects, the typed
validation entry point, and that a bug becomes an internal_error result instead of a crash."""

from __future__ import annotations

import pytest

from raftmq.broker import queue_flow
from raftmq.broker.commands import (
    Ack,
    Bind,
    Claim,
    DeclareExchange,
    DeclareQueue,
    ExtendLease,
    LeaseRef,
    OutMessage,
    Publish,
    QueueArgs,
    Tick,
    encode_command,
)
from raftmq.broker.queue_state import MAX_TRACKED_CONSUMERS
from raftmq.broker.queue_timers import LEASE, TimerHeap
from raftmq.broker.queue_validation import validate_command
from raftmq.broker.results import ClaimResult, ErrorResult, PublishResult
from raftmq.broker.state import BrokerState


def test_timer_heap_compaction_drops_only_moot_entries() -> None:
    heap = TimerHeap()
    for i in range(10_000):
        heap.push(1000 + i, i, "q", LEASE, i)
    live = {i for i in range(10_000) if i % 100 == 0}
    heap.compact_if_needed(lambda entry: entry[1] in live)
    assert sorted(entry[1] for entry in heap.entries) == sorted(live)
    assert heap.next_deadline_ms() == 1000


def test_settled_leases_do_not_pile_up_in_the_timer_heap() -> None:
    state = BrokerState()
    state.apply_command(DeclareQueue(0, "q", QueueArgs()))
    for round_number in range(60):
        state.apply_command(Publish(round_number, "", tuple(OutMessage("q", b"x") for _ in range(100))))
        claimed = state.apply_command(Claim(round_number, "q", "c", 100, 43_200_000))
        assert isinstance(claimed, ClaimResult)
        refs = tuple(LeaseRef(d.message_id, d.lease_id) for d in claimed.deliveries)
        state.apply_command(ExtendLease(round_number, "q", refs, 43_000_000))
        state.apply_command(Ack(round_number, "q", refs))
    # 12,000 lease timers were pushed and all became moot; compaction keeps the heap small.
    assert len(state._core.timers.entries) <= 2 * 4096
    assert state.next_deadline_ms() is None


def test_consumer_table_is_bounded() -> None:
    state = BrokerState()
    state.apply_command(DeclareQueue(0, "q", QueueArgs()))
    for i in range(MAX_TRACKED_CONSUMERS + 50):
        state.apply_command(Claim(0, "q", f"consumer-{i}", 1, 1000))
    info = state.queue_info("q")
    assert info is not None and info.consumers == MAX_TRACKED_CONSUMERS


def test_fanout_partial_reject_is_accepted_and_rejected() -> None:
    state = BrokerState()
    for cmd in (
        DeclareExchange(0, "fan", "fanout"),
        DeclareQueue(0, "small", QueueArgs(max_length=1)),
        DeclareQueue(0, "big", QueueArgs()),
        Bind(0, "fan", "small"),
        Bind(0, "fan", "big"),
    ):
        state.apply_command(cmd)
    result = state.apply_command(Publish(0, "fan", (OutMessage("", b"1"), OutMessage("", b"2"))))
    assert result == PublishResult(2, (), (1,), False, 1)
    assert state.ready_count("small") == 1 and state.ready_count("big") == 2


@pytest.mark.parametrize(
    "cmd",
    [
        Claim(0, "q", "c", 1.5, 1000),  # type: ignore[arg-type]
        Claim(0, "q", "c", True, 1000),
        Claim(0, 7, "c", 1, 1000),  # type: ignore[arg-type]
        Publish(0, "", [OutMessage("q", b"x")]),  # type: ignore[arg-type]
        Publish(0, "", (OutMessage("q", "text"),)),  # type: ignore[arg-type]
        Publish(0, "", (OutMessage("q", b"x", {"h": [1]}),)),  # type: ignore[dict-item]
        Publish(0, "", ("not a message",)),  # type: ignore[arg-type]
        Ack(0, "q", [LeaseRef(1, 1)]),  # type: ignore[arg-type]
        Ack(0, "q", (LeaseRef(1, -1),)),
        DeclareQueue(0, "q", {"max_length": 1}),  # type: ignore[arg-type]
        Tick(2**53 + 1),
        # What JSON can carry but msgpack cannot encode:
        Publish(0, "", (OutMessage("\ud800", b"x"),)),
        Publish(0, "", (OutMessage("q", b"x", {"h": "\udc00"}),)),
        Publish(0, "", (OutMessage("q", b"x", {"\udc00": 1}),)),
        Publish(0, "", (OutMessage("q", b"x", {"h": 2**70}),)),
        Bind(0, "x", "q", "\ud800"),
    ],
)
def test_validate_command_catches_wrong_types_for_the_api_layer(cmd: object) -> None:
    assert validate_command(cmd) is not None  # type: ignore[arg-type]
    result = BrokerState().apply_command(cmd)  # type: ignore[arg-type]
    assert isinstance(result, ErrorResult) and result.code == "invalid_argument"


def test_a_bug_becomes_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    state = BrokerState()
    state.apply_command(DeclareQueue(0, "q", QueueArgs()))

    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(queue_flow, "publish", broken)
    result = state.apply_command(Publish(0, "", (OutMessage("q", b"x"),)))
    assert isinstance(result, ErrorResult) and result.code == "internal_error"
    assert "boom" in result.message
    raw = state.apply(encode_command(Publish(0, "", (OutMessage("q", b"x"),))))  # the hot path
    assert isinstance(raw, ErrorResult) and raw.code == "internal_error"
