"""Snapshot encoding of the broker state: msgpack, versioned, lz4-frame compressed.

Layout: `MAGIC | lz4 frame(msgpack [version, now, next_message_id, next_lease_id,
dead_letter_dropped, exchanges, queues, bodies, producers])`. Bodies are stored once, by message
id; queues refer to them. Only logical state is written (no heaps, caches or stale entries), in
a fixed order, so equal states give equal bytes. Decoding checks every field and every
reference and raises SnapshotError on anything wrong, so a corrupt snapshot fails here and not
later in some unrelated command.
"""

from __future__ import annotations

from typing import Any

import lz4.frame
import msgpack

from raftmq.broker import producers
from raftmq.broker.commands import QueueArgs
from raftmq.broker.names import validate_declare_name, validate_name, validate_routing_key
from raftmq.broker.producers import ProducerRecord, ProducerTable
from raftmq.broker.queue_core import BrokerCore
from raftmq.broker.queue_message import LEASED, READY, QueuedMessage, StoredBody
from raftmq.broker.queue_state import COUNTER_NAMES, QueueCounters, QueueState
from raftmq.broker.queue_validation import MAX_COUNT, validate_queue_args
from raftmq.broker.results import PublishResult
from raftmq.broker.routing import EXCHANGE_TYPES, Exchange

__all__ = ["SNAPSHOT_VERSION", "SnapshotError", "decode_snapshot", "encode_snapshot"]

SNAPSHOT_VERSION = 1
_MAGIC = b"RMQS"
_MESSAGE_FIELDS = 7
_HEADER_TYPES = (str, int, float, bool, bytes, type(None))


class SnapshotError(ValueError):
    """The bytes are not a valid broker snapshot."""


# ---------------------------------------------------------------- encoding


def encode_snapshot(core: BrokerCore) -> bytes:
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
         [[seq, r.accepted, list(r.unroutable), list(r.rejected), r.first_message_id]
          for seq, r in rec.results.items()]]
        for pid, rec in core.producers.records.items()
    ]
    payload = msgpack.packb(
        [SNAPSHOT_VERSION, core.now_ms, core.next_message_id, core.next_lease_id,
         core.dead_letter_dropped, exchanges, queues, body_list, producers],
        use_bin_type=True,
    )
    compressed: bytes = lz4.frame.compress(payload, content_checksum=True)
    return _MAGIC + compressed


def _args_fields(args: QueueArgs) -> list[Any]:
    return [args.max_length, args.max_length_bytes, args.overflow, args.message_ttl_ms,
            args.delivery_limit, args.dead_letter_exchange, args.dead_letter_routing_key]


# ---------------------------------------------------------------- decoding helpers


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise SnapshotError(f"corrupt snapshot: {what}")


def _uint(value: object, what: str) -> int:
    # Bounded so that no later sum (a time plus a duration) can outgrow msgpack's integers.
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        raise SnapshotError(f"corrupt snapshot: {what} is not an integer in 0..{MAX_COUNT}")
    return value


def _opt_uint(value: object, what: str) -> int | None:
    return None if value is None else _uint(value, what)


def _str(value: object, what: str) -> str:
    if type(value) is not str:
        raise SnapshotError(f"corrupt snapshot: {what} is not a string")
    return value


def _opt_str(value: object, what: str) -> str | None:
    return None if value is None else _str(value, what)


def _list(value: object, what: str, length: int | None = None) -> list[Any]:
    if type(value) is not list or (length is not None and len(value) != length):
        raise SnapshotError(f"corrupt snapshot: {what} is malformed")
    return value


def _valid(error: str | None) -> None:
    _check(error is None, str(error))


# ---------------------------------------------------------------- decoding


def decode_snapshot(data: bytes) -> BrokerCore:
    try:
        return _decode(data)
    except SnapshotError:
        raise
    except Exception as error:  # an unforeseen shape of corruption must still be a SnapshotError
        raise SnapshotError(f"corrupt snapshot: {type(error).__name__}: {error}") from None


def _decode(data: bytes) -> BrokerCore:
    if not isinstance(data, bytes | bytearray | memoryview) or bytes(data[:4]) != _MAGIC:
        raise SnapshotError("not a raftmq broker snapshot")
    try:
        payload = lz4.frame.decompress(bytes(data[4:]))
        root = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True)
    except Exception as error:  # lz4 and msgpack raise many types for garbage; all mean corrupt
        raise SnapshotError(f"corrupt snapshot: {type(error).__name__}: {error}") from None
    fields = _list(root, "root", 9)
    _check(fields[0] == SNAPSHOT_VERSION and type(fields[0]) is int,
           f"unsupported snapshot version {fields[0]!r}")
    core = BrokerCore()
    core.now_ms = _uint(fields[1], "now_ms")
    core.next_message_id = _uint(fields[2], "next_message_id")
    core.next_lease_id = _uint(fields[3], "next_lease_id")
    core.dead_letter_dropped = _uint(fields[4], "dead_letter_dropped")
    bodies = _decode_bodies(fields[7], core.next_message_id)
    for raw in _list(fields[6], "queues"):
        _decode_queue(core, raw, bodies)
    for raw in _list(fields[5], "exchanges"):
        _decode_exchange(core, raw)
    for stored in bodies.values():
        _check(stored.refs > 0, f"body {stored.message_id} is in no queue")
        core.total_body_bytes += len(stored.body)
    core.producers = _decode_producers(fields[8])
    core.rebuild_timers()
    for name, queue in core.queues.items():
        if queue.count[READY]:
            core.ready_notifications[name] = None
    return core


def _decode_bodies(value: object, next_message_id: int) -> dict[int, StoredBody]:
    bodies: dict[int, StoredBody] = {}
    previous = 0
    for raw in _list(value, "bodies"):
        message_id, body, headers, routing_key, exchange, published = _list(raw, "body", 6)
        _uint(message_id, "message id")
        _check(previous < message_id < next_message_id, "body ids out of order or range")
        previous = message_id
        _check(type(body) is bytes, "body is not binary")
        _check(type(headers) is dict, "headers are not a map")
        for key, item in headers.items():
            _check(type(key) is str and type(item) in _HEADER_TYPES, "bad header")
        _valid(validate_routing_key("routing key", _str(routing_key, "routing key")))
        _valid(validate_name("exchange", _str(exchange, "exchange")))
        bodies[message_id] = StoredBody(
            message_id, body, headers, routing_key, exchange, _uint(published, "published_ms")
        )
    return bodies


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
    items = _list(flat, "messages")
    _check(len(items) % _MESSAGE_FIELDS == 0, "message table is ragged")
    previous = 0
    for start in range(0, len(items), _MESSAGE_FIELDS):
        message_id, state, deliveries, lease_id, lease_expires, expires, ready_at = (
            items[start:start + _MESSAGE_FIELDS])
        _check(_uint(message_id, "message id") > previous, "message ids out of order")
        previous = message_id
        stored = bodies.get(message_id)
        if stored is None:
            raise SnapshotError(f"corrupt snapshot: message {message_id} has no body")
        _check(_uint(state, "state") <= LEASED, "unknown message state")
        _check(_uint(lease_id, "lease id") < core.next_lease_id, "lease id out of range")
        msg = QueuedMessage(stored, state, _opt_uint(expires, "expires"), _uint(ready_at, "ready"))
        msg.delivery_count = _uint(deliveries, "delivery count")
        msg.lease_id = lease_id
        msg.lease_expires_ms = _uint(lease_expires, "lease expiry")
        queue.messages[message_id] = msg
        stored.refs += 1
    queue.rebuild_after_restore()
    core.message_count += len(queue.messages)
    core.queues[name] = queue


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
        _check(_str(queue, "bound queue") in core.queues, "binding to a missing queue")
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
            seq, accepted, unroutable, rejected, first_id = _list(item, "producer result", 5)
            # The table relies on results being in sequence order, within the window.
            _check(previous_seq < _uint(seq, "sequence") <= max_sequence, "sequence out of order")
            previous_seq = seq
            record.results[seq] = PublishResult(
                _uint(accepted, "accepted"),
                tuple(_uint(i, "index") for i in _list(unroutable, "unroutable")),
                tuple(_uint(i, "index") for i in _list(rejected, "rejected")),
                False,
                _uint(first_id, "first message id"),
            )
        table.records[pid] = record
    return table
