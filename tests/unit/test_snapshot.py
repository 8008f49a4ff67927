"""Snapshots: determinism, faithful restore, bodies stored once, corrupt input."""

from __future__ import annotations

from typing import Any

import lz4.frame
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftmq.broker.commands import (
    Ack,
    Bind,
    Claim,
    Command,
    DeclareExchange,
    DeclareQueue,
    ExtendLease,
    LeaseRef,
    Nack,
    OutMessage,
    Publish,
    QueueArgs,
    Tick,
)
from raftmq.broker.results import ClaimResult, Result
from raftmq.broker.snapshot_codec import SnapshotError
from raftmq.broker.state import BrokerState

BIG_BODY = b"B" * 5000


def setup_commands() -> list[Command]:
    dl = QueueArgs(dead_letter_exchange="dlx", dead_letter_routing_key="dead")
    return [
        DeclareExchange(0, "fan", "fanout", alternate_exchange="alt"),
        DeclareExchange(0, "dlx", "direct"),
        DeclareExchange(0, "topic", "topic"),
        DeclareQueue(0, "a", QueueArgs(message_ttl_ms=500, delivery_limit=2, dead_letter_exchange="dlx",
                                       dead_letter_routing_key="dead")),
        DeclareQueue(0, "b", QueueArgs(max_length=5, overflow="drop-head",
                                       dead_letter_exchange="dlx", dead_letter_routing_key="dead")),
        DeclareQueue(0, "dlq", QueueArgs()),
        DeclareQueue(0, "c", dl),
        Bind(0, "fan", "a"),
        Bind(0, "fan", "b"),
        Bind(0, "dlx", "dlq", "dead"),
        Bind(0, "topic", "c", "x.#"),
        Bind(0, "topic", "a", "*.y"),
        Publish(10, "fan", (OutMessage("k", BIG_BODY, {"h": 1.5, "b": b"\x00"}),
                            OutMessage("k", b"delayed", delay_ms=300),
                            OutMessage("k", b"short", ttl_ms=50)), "prod", 1),
        Publish(20, "topic", tuple(OutMessage("x.y", bytes([i])) for i in range(8)), "prod", 2),
        Claim(30, "a", "consumer-1", 3, 100),
        Claim(31, "c", "consumer-2", 2, 1000),
    ]


def future_commands(state: BrokerState) -> list[Command]:
    """Commands whose results depend on everything: leases, timers, ids, producers, limits."""
    return [
        Publish(40, "fan", (OutMessage("k", b"dup"),), "prod", 2),  # duplicate of seq 2
        Tick(60),
        Claim(131, "a", "consumer-3", 10, 200),  # after the first leases expired
        Claim(320, "b", "consumer-1", 10, 50),
        Publish(321, "fan", tuple(OutMessage("k", bytes([i])) for i in range(7)), "prod", 3),
        Tick(600),
        Claim(601, "dlq", "d", 100, 100),
        Claim(602, "c", "e", 100, 100),
    ]


def build() -> BrokerState:
    state = BrokerState()
    for cmd in setup_commands():
        state.apply_command(cmd)
    return state


def test_snapshot_is_deterministic_and_stable_through_restore() -> None:
    first, second = build(), build()
    assert first.snapshot() == second.snapshot()
    restored = BrokerState()
    restored.restore(first.snapshot())
    assert restored.snapshot() == first.snapshot()


def test_restored_state_behaves_identically() -> None:
    original = build()
    restored = BrokerState()
    restored.restore(original.snapshot())
    for query in ("list_queues", "list_exchanges", "list_bindings"):
        assert getattr(restored, query)() == getattr(original, query)()
    assert restored.total_body_bytes == original.total_body_bytes
    assert restored.message_count == original.message_count
    assert restored.next_deadline_ms() == original.next_deadline_ms()
    expected: list[Result] = [original.apply_command(c) for c in future_commands(original)]
    actual: list[Result] = [restored.apply_command(c) for c in future_commands(restored)]
    assert actual == expected
    assert restored.snapshot() == original.snapshot()


def test_settles_after_restore_match_the_original() -> None:
    original = build()
    restored = BrokerState()
    restored.restore(original.snapshot())
    outcomes = []
    for state in (original, restored):
        claimed = state.apply_command(Claim(40, "c", "x", 10, 1000))
        assert isinstance(claimed, ClaimResult) and claimed.deliveries
        leases = tuple(LeaseRef(d.message_id, d.lease_id) for d in claimed.deliveries)
        old_lease = (LeaseRef(leases[0].message_id, 1),)
        outcomes.append([
            claimed,
            state.apply_command(ExtendLease(41, "c", leases, 10)),
            state.apply_command(Nack(42, "c", leases[:1], requeue=False)),
            state.apply_command(Ack(43, "c", leases + old_lease)),
        ])
    assert outcomes[0] == outcomes[1]
    assert original.snapshot() == restored.snapshot()


def decoded_payload(snapshot: bytes) -> list[Any]:
    payload = msgpack.unpackb(lz4.frame.decompress(snapshot[4:]), raw=False)
    assert isinstance(payload, list)
    return payload


def test_body_shared_by_queues_is_stored_once() -> None:
    state = build()
    payload = decoded_payload(state.snapshot())
    bodies = [entry[1] for entry in payload[7]]
    assert bodies.count(BIG_BODY) == 1
    # ...although two queues hold it.
    assert state.total_body_bytes < 2 * len(BIG_BODY)


def test_restore_rejects_garbage_and_keeps_old_state() -> None:
    state = build()
    before = state.snapshot()
    for bad in (b"", b"RMQS", b"XXXX" + before[4:], before[:-3], before[:4] + b"\x00" * 40):
        with pytest.raises(SnapshotError):
            state.restore(bad)
    assert state.snapshot() == before


def reencode(payload: list[Any]) -> bytes:
    data: bytes = lz4.frame.compress(msgpack.packb(payload, use_bin_type=True))
    return b"RMQS" + data


def mutations(payload: list[Any]) -> list[list[Any]]:
    """Structurally valid msgpack that breaks the snapshot's own invariants."""
    import copy

    out = []

    def changed(edit: Any) -> None:
        clone = copy.deepcopy(payload)
        edit(clone)
        out.append(clone)

    changed(lambda p: p.__setitem__(0, 99))  # version
    changed(lambda p: p.append(1))  # arity
    changed(lambda p: p.__setitem__(1, -1))  # negative now
    changed(lambda p: p[7].pop())  # a queue refers to a body that is gone
    changed(lambda p: p[7].append([10**6, b"x", {}, "k", "", 0]))  # body id out of range
    changed(lambda p: p[7].append(list(p[7][-1])))  # duplicate body id
    changed(lambda p: p[6].append(list(p[6][0])))  # duplicate queue
    changed(lambda p: p[6][0][4].__setitem__(1, 7))  # unknown message state
    changed(lambda p: p[6][0][4].append(1))  # ragged message table
    changed(lambda p: p[6][0][1].__setitem__(2, "drop-tail"))  # invalid overflow
    changed(lambda p: p[6][0][2].pop())  # counters
    changed(lambda p: p[5][0][3].append(["missing-queue", ""]))  # binding to a missing queue
    changed(lambda p: p[5][0].__setitem__(1, "headers"))  # exchange type
    changed(lambda p: p[5].append(["", "direct", None, []]))  # default exchange declared
    changed(lambda p: p[8][0].__setitem__(2, "yesterday"))  # producer last seen
    changed(lambda p: p[8][0][3][0].__setitem__(0, 10**9))  # sequence beyond max
    changed(lambda p: p[7][0].__setitem__(2, {"h": [1]}))  # header value type
    changed(lambda p: p.__setitem__(3, 0))  # lease ids beyond next_lease_id
    return out


def test_restore_rejects_inconsistent_snapshots() -> None:
    payload = decoded_payload(build().snapshot())
    BrokerState().restore(reencode(payload))  # the untouched payload restores fine
    for mutated in mutations(payload):
        with pytest.raises(SnapshotError):
            BrokerState().restore(reencode(mutated))


@settings(max_examples=200)
@given(position=st.integers(0, 10**6), value=st.integers(0, 255))
def test_corrupted_snapshot_bytes_raise_snapshot_error_only(position: int, value: int) -> None:
    snapshot = bytearray(build().snapshot())
    index = position % len(snapshot)
    if snapshot[index] == value:
        return
    snapshot[index] = value
    state = BrokerState()
    try:
        state.restore(bytes(snapshot))
    except SnapshotError:
        return
    # lz4's checksum makes surviving corruption unlikely; if it decoded, it must be usable.
    state.apply_command(Tick(10**6))
    state.snapshot()


def test_empty_state_round_trip() -> None:
    state = BrokerState()
    restored = BrokerState()
    restored.restore(state.snapshot())
    assert restored.snapshot() == state.snapshot()
    assert restored.list_queues() == [] and restored.now_ms == 0
