"""Snapshot encoding of the broker state: msgpack, versioned, lz4-frame compressed.

Layout: `MAGIC | lz4 frame(msgpack [version, now, next_message_id, next_lease_id,
dead_letter_dropped, exchanges, queues, bodies, producers])`. Bodies are stored once, by message
id; queues refer to them. Only logical state is written (no heaps, caches or stale entries), in
a fixed order, so equal states give equal bytes. Decoding checks every field and every
reference and raises SnapshotError on anything wrong, so a corrupt snapshot fails here and not
later in some unrelated command.

Restore runs on the Raft thread, where a stall of a few seconds makes the node drop its peers,
so the per-message tables are checked and built a column at a time with builtins (`zip`,
`map`, `min`, extended slices) instead of Python code per field of each message.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import compress
from operator import attrgetter
from typing import Any

import lz4.frame
import msgpack

from raftmq.broker import producers
from raftmq.broker.commands import QueueArgs
from raftmq.broker.names import validate_declare_name, validate_name, validate_routing_key
from raftmq.broker.producers import AnyPublishResult, ProducerRecord, ProducerTable
from raftmq.broker.queue_core import BrokerCore
from raftmq.broker.queue_message import LEASED, READY, QueuedMessage, StoredBody
from raftmq.broker.queue_state import COUNTER_NAMES, QueueCounters, QueueState
from raftmq.broker.queue_validation import validate_queue_args
from raftmq.broker.results import PublishResult
from raftmq.broker.routing import EXCHANGE_TYPES, Exchange
from raftmq.broker.snapshot_checks import INT_OR_NONE as _INT_OR_NONE
from raftmq.broker.snapshot_checks import SnapshotError
from raftmq.broker.snapshot_checks import array as _list
from raftmq.broker.snapshot_checks import check as _check
from raftmq.broker.snapshot_checks import check_headers as _check_headers
from raftmq.broker.snapshot_checks import ids_column as _ids_column
from raftmq.broker.snapshot_checks import opt_text as _opt_str
from raftmq.broker.snapshot_checks import opt_uint as _opt_uint
from raftmq.broker.snapshot_checks import text as _str
from raftmq.broker.snapshot_checks import types_of as _types
from raftmq.broker.snapshot_checks import uint as _uint
from raftmq.broker.snapshot_checks import uint_column as _uint_column
from raftmq.broker.snapshot_checks import valid as _valid
from raftmq.broker.stream_results import StreamPublishResult
from raftmq.broker.stream_snapshot import decode_streams, encode_streams

__all__ = ["SNAPSHOT_VERSION", "SnapshotError", "decode_snapshot", "encode_snapshot"]

SNAPSHOT_VERSION = 2  # 2 added streams; version 1 snapshots still restore
_ROOT_FIELDS = {1: 9, 2: 10}
_MAGIC = b"RMQS"
# A queue's message table is flat: id, state, delivery count, lease id, lease expiry, expiry,
# ready time of each message in turn.
_MESSAGE_FIELDS = 7


# ---------------------------------------------------------------- encoding


def encode_snapshot(core: BrokerCore) -> bytes:
    with _collector_paused():
        payload = _payload(core)
    # Block checksums cover the compressed bytes, which is where corruption happens (disk,
    # network): as safe as a checksum of the content, and a fifth of the bytes to hash.
    compressed: bytes = lz4.frame.compress(payload, block_checksum=True)
    return _MAGIC + compressed


def _payload(core: BrokerCore) -> bytes:
    # One pass per message, plain attribute reads: on large states memory access dominates,
    # and this beats gathering each field with its own pass (attrgetter, slices).
    bodies: dict[int, StoredBody] = {}
    queues = []
    for queue in core.queues.values():
        flat: list[int | None] = []
        for message_id, msg in queue.messages.items():
            bodies[message_id] = msg.stored
            flat += [message_id, msg.state, msg.delivery_count, msg.lease_id,
                     msg.lease_expires_ms, msg.expires_ms, msg.ready_at_ms]
        consumers = [[name, seen] for name, seen in queue.consumers.items()]
        queues.append([queue.name, _args_fields(queue.args), queue.counters.as_list(), consumers,
                       flat])
    exchanges = [
        [ex.name, ex.type, ex.alternate_exchange, [[q, k] for q, k in ex.bindings]]
        for ex in core.router.exchanges.values()
    ]
    body_list = [
        [b.message_id, b.body, b.headers, b.routing_key, b.exchange, b.published_ms]
        for _, b in sorted(bodies.items())
    ]
    producers = [
        [pid, rec.max_sequence, rec.last_seen_ms,
         [_producer_result(seq, r) for seq, r in rec.results.items()]]
        for pid, rec in core.producers.records.items()
    ]
    payload: bytes = msgpack.packb(
        [SNAPSHOT_VERSION, core.now_ms, core.next_message_id, core.next_lease_id,
         core.dead_letter_dropped, exchanges, queues, body_list, producers,
         encode_streams(core)],
        use_bin_type=True,
    )
    return payload


def _producer_result(sequence: int, result: AnyPublishResult) -> list[Any]:
    # Exchange publishes are 5 items (the version 1 layout), stream publishes 3.
    if isinstance(result, StreamPublishResult):
        return [sequence, list(result.partitions), list(result.offsets)]
    return [sequence, result.accepted, list(result.unroutable), list(result.rejected),
            result.first_message_id]


def _args_fields(args: QueueArgs) -> list[Any]:
    return [args.max_length, args.max_length_bytes, args.overflow, args.message_ttl_ms,
            args.delivery_limit, args.dead_letter_exchange, args.dead_letter_routing_key]


# ---------------------------------------------------------------- decoding


def decode_snapshot(data: bytes) -> BrokerCore:
    try:
        with _collector_paused():
            core = _decode(data)
            _age_all_objects()
            return core
    except SnapshotError:
        raise
    except Exception as error:  # an unforeseen shape of corruption must still be a SnapshotError
        raise SnapshotError(f"corrupt snapshot: {type(error).__name__}: {error}") from None


@contextmanager
def _collector_paused() -> Iterator[None]:
    """A snapshot holds a few objects per message, none of them garbage: left on, the cyclic
    collector would walk them again and again meanwhile (0.45 s of a 200k-message restore)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _age_all_objects() -> None:
    """Put the restored state out of the cyclic collector's reach without walking it: it is
    long-lived, and the next collection would otherwise walk all of it (0.25 s for 200k
    messages, on the Raft thread). The node freezes long-lived objects every second anyway
    (broker/node.py); this only does it now. Unfreezing here would thaw the whole state."""
    gc.freeze()


def _decode(data: bytes) -> BrokerCore:
    if not isinstance(data, bytes | bytearray | memoryview) or bytes(data[:4]) != _MAGIC:
        raise SnapshotError("not a raftmq broker snapshot")
    try:
        payload = lz4.frame.decompress(memoryview(data)[4:])
        root = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True)
    except Exception as error:  # lz4 and msgpack raise many types for garbage; all mean corrupt
        raise SnapshotError(f"corrupt snapshot: {type(error).__name__}: {error}") from None
    del payload  # every body is copied out of it by now: do not hold both at once
    fields = _list(root, "root")
    _check(bool(fields), "root is malformed")
    version = fields[0]
    _check(type(version) is int and version in _ROOT_FIELDS,
           f"unsupported snapshot version {version!r}")
    _check(len(fields) == _ROOT_FIELDS[version], "root is malformed")
    core = BrokerCore()
    core.now_ms = _uint(fields[1], "now_ms")
    core.next_message_id = _uint(fields[2], "next_message_id")
    core.next_lease_id = _uint(fields[3], "next_lease_id")
    core.dead_letter_dropped = _uint(fields[4], "dead_letter_dropped")
    bodies = _decode_bodies(fields[7], core.next_message_id)
    for raw in _list(fields[6], "queues"):
        _decode_queue(core, raw, bodies)
    if version >= 2:
        decode_streams(core, fields[9])  # before exchanges: bindings may name streams
    for raw in _list(fields[5], "exchanges"):
        _decode_exchange(core, raw)
    stored = list(bodies.values())
    _check(not stored or min(map(attrgetter("refs"), stored)) > 0, "a body is in no queue")
    core.total_body_bytes = sum(map(len, map(attrgetter("body"), stored)))
    core.producers = _decode_producers(fields[8])
    core.rebuild_timers()
    for name, queue in core.queues.items():
        if queue.count[READY]:
            core.ready_notifications[name] = None
    return core


def _decode_bodies(value: object, next_message_id: int) -> dict[int, StoredBody]:
    rows = _list(value, "bodies")
    if not rows:
        return {}
    _check(_types(rows) == {list}, "body is malformed")
    try:
        columns = list(zip(*rows, strict=True))  # rows of one length: to columns, in C
    except ValueError:
        raise SnapshotError("corrupt snapshot: body is malformed") from None
    _check(len(columns) == 6, "body is malformed")
    message_ids, body_bytes, headers, routing_keys, exchanges, published = columns
    _ids_column(message_ids, "body id", next_message_id)
    _check(_types(body_bytes) == {bytes}, "body is not binary")
    _check_headers(headers)
    # Checked once per distinct value: most messages share their routing key and exchange.
    _check(_types(routing_keys) == {str}, "routing key is not a string")
    for routing_key in set(routing_keys):
        _valid(validate_routing_key("routing key", routing_key))
    _check(_types(exchanges) == {str}, "exchange is not a string")
    for exchange in set(exchanges):
        _valid(validate_name("exchange", exchange))
    _uint_column(published, "published_ms")
    stored = map(StoredBody, message_ids, body_bytes, headers, routing_keys, exchanges, published)
    return dict(zip(message_ids, stored, strict=True))


def _decode_queue(core: BrokerCore, raw: object, bodies: dict[int, StoredBody]) -> None:
    name, args_raw, counters, consumers, flat = _list(raw, "queue", 5)
    _valid(validate_name("queue", _str(name, "queue name")))
    _check(name not in core.queues, f"queue {name!r} twice")
    a = _list(args_raw, "queue args", 7)
    args = QueueArgs(_opt_uint(a[0], "max_length"), _opt_uint(a[1], "max_length_bytes"),
                     _str(a[2], "overflow"), _opt_uint(a[3], "message_ttl_ms"),
                     _opt_uint(a[4], "delivery_limit"), _opt_str(a[5], "dlx"),
                     _opt_str(a[6], "dl routing key"))
    _valid(validate_queue_args(args))
    queue = QueueState(name, args)
    counter_values = _list(counters, "counters", len(COUNTER_NAMES))
    queue.counters = QueueCounters([_uint(v, "counter") for v in counter_values])
    for pair in _list(consumers, "consumers"):
        consumer, seen = _list(pair, "consumer", 2)
        _valid(validate_name("consumer", _str(consumer, "consumer")))
        _check(consumer not in queue.consumers, "consumer twice")
        queue.consumers[consumer] = _uint(seen, "consumer last seen")
    _decode_messages(core, queue, _list(flat, "messages"), bodies)
    core.message_count += len(queue.messages)
    core.queues[name] = queue


def _decode_messages(
    core: BrokerCore, queue: QueueState, flat: list[Any], bodies: dict[int, StoredBody]
) -> None:
    _check(len(flat) % _MESSAGE_FIELDS == 0, "message table is ragged")
    message_ids, states, deliveries, lease_ids, lease_expiries, expiries, ready_ats = (
        flat[offset::_MESSAGE_FIELDS] for offset in range(_MESSAGE_FIELDS))
    _ids_column(message_ids, "message id")
    _uint_column(states, "state", LEASED)
    _uint_column(deliveries, "delivery count")
    _uint_column(lease_ids, "lease id", core.next_lease_id - 1)
    _uint_column(lease_expiries, "lease expiry")
    _check(_types(expiries) <= _INT_OR_NONE, "every expiry must be an integer or nil")
    _uint_column([expiry for expiry in expiries if expiry is not None], "expiry")
    _uint_column(ready_ats, "ready time")
    try:
        stored = list(map(bodies.__getitem__, message_ids))
    except KeyError as missing:
        raise SnapshotError(f"corrupt snapshot: message {missing} has no body") from None
    messages = list(map(QueuedMessage, stored, states, expiries, ready_ats))
    # These default to 0, which is what most messages (never delivered) have.
    _set_nonzero(messages, "delivery_count", deliveries)
    _set_nonzero(messages, "lease_id", lease_ids)
    _set_nonzero(messages, "lease_expires_ms", lease_expiries)
    for body in stored:
        body.refs += 1
    body_sizes = list(map(len, map(attrgetter("body"), stored)))
    queue.restore_messages(message_ids, messages, states, body_sizes)


def _set_nonzero(messages: list[QueuedMessage], attribute: str, values: list[int]) -> None:
    for index in compress(range(len(values)), values):
        setattr(messages[index], attribute, values[index])


def _decode_exchange(core: BrokerCore, raw: object) -> None:
    name, exchange_type, alternate, bindings = _list(raw, "exchange", 4)
    _valid(validate_declare_name("exchange", _str(name, "exchange name")))
    _check(name not in core.router.exchanges, f"exchange {name!r} twice")
    _check(exchange_type in EXCHANGE_TYPES, "unknown exchange type")
    if alternate is not None:
        _valid(validate_name("exchange", _str(alternate, "alternate exchange")))
    core.router.exchanges[name] = Exchange(name, exchange_type, alternate)
    for pair in _list(bindings, "bindings"):
        queue, key = _list(pair, "binding", 2)
        _check(_str(queue, "bound queue") in core, "binding to a missing queue or stream")
        _valid(validate_routing_key("binding key", _str(key, "binding key")))
        _check(core.router.bind(name, queue, key), "binding twice")


def _decode_producers(value: object) -> ProducerTable:
    table = ProducerTable()
    previous_seen = 0
    window = producers.PRODUCER_WINDOW
    for raw in _list(value, "producers"):
        pid, max_sequence, last_seen, results = _list(raw, "producer", 4)
        _valid(validate_name("producer", _str(pid, "producer id")))
        _check(pid not in table.records, "producer twice")
        record = ProducerRecord(_uint(max_sequence, "max sequence"), _uint(last_seen, "last seen"))
        _check(last_seen >= previous_seen, "producers out of order")
        previous_seen = last_seen
        previous_seq = max_sequence - window
        for item in _list(results, "producer results"):
            row = _list(item, "producer result")
            _check(bool(row), "producer result is malformed")
            seq = _uint(row[0], "sequence")
            # The table relies on results being in sequence order, within the window.
            _check(previous_seq < seq <= max_sequence, "sequence out of order")
            previous_seq = seq
            record.results[seq] = _decode_producer_result(row)
        table.records[pid] = record
    return table


def _decode_producer_result(item: list[Any]) -> AnyPublishResult:
    if len(item) == 3:
        partitions = _list(item[1], "partitions")
        offsets = _list(item[2], "offsets")
        _uint_column(partitions, "partition")
        _uint_column(offsets, "offset")
        _check(len(partitions) == len(offsets), "partitions and offsets differ in length")
        return StreamPublishResult(tuple(partitions), tuple(offsets))
    _seq, accepted, unroutable, rejected, first_id = _list(item, "producer result", 5)
    return PublishResult(
        _uint(accepted, "accepted"),
        tuple(_uint(i, "index") for i in _list(unroutable, "unroutable")),
        tuple(_uint(i, "index") for i in _list(rejected, "rejected")),
        False,
        _uint(first_id, "first message id"),
    )
