"""Snapshot restore checks whole columns at once: tampering anywhere in a table (not only in its
first row) is refused, every single-byte corruption is refused, the books a restore builds in bulk
match the original's, and restore leaves the garbage collector as it found it."""

from __future__ import annotations

import copy
import gc
from collections.abc import Callable
from typing import Any

import lz4.frame
import msgpack
import pytest

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
)
from raftmq.broker.results import ClaimResult
from raftmq.broker.snapshot_codec import SnapshotError
from raftmq.broker.state import BrokerState

# Fields of a row of a queue's flat message table, and of a body row.
STATE, DELIVERIES, LEASE_ID, LEASE_EXPIRY, EXPIRY, READY_AT = range(1, 7)
MESSAGE_FIELDS = 7
BODY_ID, BODY, HEADERS, ROUTING_KEY, EXCHANGE, PUBLISHED = range(6)


def mixed_state() -> BrokerState:
    """Two queues sharing bodies; messages ready, delayed, leased, requeued, with and without TTL."""
    state = BrokerState()
    for cmd in (
        DeclareExchange(0, "fan", "fanout"),
        DeclareQueue(0, "mix", QueueArgs()),
        DeclareQueue(0, "other", QueueArgs()),
        Bind(0, "fan", "mix"),
        Bind(0, "fan", "other"),
    ):
        state.apply_command(cmd)
    messages = tuple(
        OutMessage(f"key-{i % 3}", bytes([i]) * (i + 1), {"n": i} if i % 2 else {},
                   ttl_ms=10_000 if i % 3 == 0 else None, delay_ms=500 if i % 4 == 1 else None)
        for i in range(16)
    )
    state.apply_command(Publish(1, "fan", messages))
    claimed = state.apply_command(Claim(2, "mix", "c", 4, 1000))
    assert isinstance(claimed, ClaimResult) and len(claimed.deliveries) == 4
    first = claimed.deliveries[0]
    state.apply_command(Nack(3, "mix", (LeaseRef(first.message_id, first.lease_id),), requeue=True))
    return state


def payload_of(snapshot: bytes) -> list[Any]:
    payload = msgpack.unpackb(lz4.frame.decompress(snapshot[4:]), raw=False)
    assert isinstance(payload, list)
    return payload


def reencode(payload: list[Any]) -> bytes:
    data: bytes = lz4.frame.compress(msgpack.packb(payload, use_bin_type=True))
    return b"RMQS" + data


def middle_message(payload: list[Any], field: int, value: object) -> None:
    flat = payload[6][0][4]
    middle = len(flat) // MESSAGE_FIELDS // 2
    flat[middle * MESSAGE_FIELDS + field] = value


def every_message(payload: list[Any], field: int, value: object) -> None:
    flat = payload[6][0][4]
    for start in range(0, len(flat), MESSAGE_FIELDS):
        flat[start + field] = value


def middle_body(payload: list[Any], field: int, value: object) -> None:
    bodies = payload[7]
    bodies[len(bodies) // 2][field] = value


def swap_middle_ids(payload: list[Any]) -> None:
    flat = payload[6][0][4]
    middle = len(flat) // MESSAGE_FIELDS // 2 * MESSAGE_FIELDS
    after = middle + MESSAGE_FIELDS
    flat[middle], flat[after] = flat[after], flat[middle]


def repeat_middle_id(payload: list[Any]) -> None:
    flat = payload[6][0][4]
    middle = len(flat) // MESSAGE_FIELDS // 2 * MESSAGE_FIELDS
    flat[middle] = flat[middle - MESSAGE_FIELDS]


def unreferenced_body(payload: list[Any]) -> None:
    payload[7].append([payload[2], b"orphan", {}, "k", "fan", 1])
    payload[2] += 1


TAMPERINGS: dict[str, Callable[[list[Any]], None]] = {
    "state beyond leased": lambda p: middle_message(p, STATE, 3),
    "state as bool": lambda p: middle_message(p, STATE, True),
    "every state unknown": lambda p: every_message(p, STATE, 3),
    "negative delivery count": lambda p: middle_message(p, DELIVERIES, -1),
    "float delivery count": lambda p: middle_message(p, DELIVERIES, 1.0),
    "every delivery count a bool": lambda p: every_message(p, DELIVERIES, False),
    "lease id not yet issued": lambda p: middle_message(p, LEASE_ID, p[3]),
    "lease expiry nil": lambda p: middle_message(p, LEASE_EXPIRY, None),
    "expiry as text": lambda p: middle_message(p, EXPIRY, "soon"),
    "negative expiry": lambda p: middle_message(p, EXPIRY, -5),
    "ready time too large": lambda p: middle_message(p, READY_AT, 2**62 + 1),
    "every ready time too large": lambda p: every_message(p, READY_AT, 2**63),
    "message ids out of order": swap_middle_ids,
    "message id repeated": repeat_middle_id,
    "message without body": lambda p: p[7].pop(len(p[7]) // 2),
    "body ids out of order": lambda p: p[7].insert(len(p[7]) // 2, p[7].pop()),
    "body not binary": lambda p: middle_body(p, BODY, "text"),
    "header name binary": lambda p: middle_body(p, HEADERS, {b"n": 1}),
    "header value a list": lambda p: middle_body(p, HEADERS, {"n": [1]}),
    "headers a list": lambda p: middle_body(p, HEADERS, []),
    "routing key too long": lambda p: middle_body(p, ROUTING_KEY, "r" * 256),
    "routing key a number": lambda p: middle_body(p, ROUTING_KEY, 7),
    "exchange name invalid": lambda p: middle_body(p, EXCHANGE, "no spaces"),
    "published time negative": lambda p: middle_body(p, PUBLISHED, -1),
    "published time as bool": lambda p: middle_body(p, PUBLISHED, True),
    "body row short": lambda p: p[7][len(p[7]) // 2].pop(),
    "body row a map": lambda p: p[7].__setitem__(len(p[7]) // 2, {"id": 1}),
    "body in no queue": unreferenced_body,
}


def test_untouched_payload_restores_to_the_same_state() -> None:
    snapshot = mixed_state().snapshot()
    restored = BrokerState()
    restored.restore(reencode(payload_of(snapshot)))
    assert restored.snapshot() == snapshot


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_tampering_anywhere_in_a_table_is_refused(name: str) -> None:
    payload = copy.deepcopy(payload_of(mixed_state().snapshot()))
    TAMPERINGS[name](payload)
    with pytest.raises(SnapshotError):
        BrokerState().restore(reencode(payload))


def test_every_single_byte_corruption_is_refused() -> None:
    snapshot = mixed_state().snapshot()
    for flip in (0x01, 0x80, 0xFF):
        for index in range(len(snapshot)):
            damaged = bytearray(snapshot)
            damaged[index] ^= flip
            with pytest.raises(SnapshotError):
                BrokerState().restore(bytes(damaged))


def test_snapshots_framed_with_a_content_checksum_still_restore() -> None:
    """Snapshots written before block checksums replaced the content checksum."""
    snapshot = mixed_state().snapshot()
    payload = lz4.frame.decompress(snapshot[4:])
    older = b"RMQS" + lz4.frame.compress(payload, content_checksum=True)
    restored = BrokerState()
    restored.restore(older)
    assert restored.snapshot() == snapshot


def test_books_built_in_bulk_match_the_original() -> None:
    original = mixed_state()
    restored = BrokerState()
    restored.restore(original.snapshot())
    for name, queue in original._core.queues.items():
        copy_of_queue = restored._core.queues[name]
        assert copy_of_queue.count == queue.count
        assert copy_of_queue.size == queue.size
        assert list(copy_of_queue.messages) == list(queue.messages)
    assert restored.total_body_bytes == original.total_body_bytes
    assert restored.message_count == original.message_count
    for state in (original, restored):
        state.apply_command(Claim(4, "mix", "d", 100, 1000))  # ready ones, in id order
    assert restored.snapshot() == original.snapshot()


def test_restore_and_snapshot_leave_the_collector_as_they_found_it() -> None:
    snapshot = mixed_state().snapshot()
    assert gc.isenabled()
    BrokerState().restore(snapshot)
    assert gc.isenabled()
    with pytest.raises(SnapshotError):
        BrokerState().restore(snapshot[:-5])
    assert gc.isenabled()
    gc.disable()
    try:
        state = BrokerState()
        state.restore(snapshot)
        state.snapshot()
        assert not gc.isenabled()
    finally:
        gc.enable()
