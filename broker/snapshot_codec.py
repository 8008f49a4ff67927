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
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain, compress, islice
from operator import attrgetter, lt
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
# A queue's message table is flat: id, state, delivery count, lease id, lease expiry, expiry,
# ready time of each message in turn.
_MESSAGE_FIELDS = 7
_HEADER_TYPES = frozenset((str, int, float, bool, bytes, type(None)))
_INT = frozenset((int,))
_INT_OR_NONE = frozenset((int, type(None)))


class SnapshotError(ValueError):
    """The bytes are not a valid broker snapshot."""


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
         [[seq, r.accepted, list(r.unroutable), list(r.rejected), r.first_message_id]
          for seq, r in rec.results.items()]]
        for pid, rec in core.producers.records.items()
    ]
    payload: bytes = msgpack.packb(
        [SNAPSHOT_VERSION, core.now_ms, core.next_message_id, core.next_lease_id,
         core.dead_letter_dropped, exchanges, queues, body_list, producers],
        use_bin_type=True,
    )
    return payload


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


def _types(items: Iterable[object]) -> set[type]:
    return set(map(type, items))


def _uint_column(column: Sequence[Any], what: str, high: int = MAX_COUNT) -> None:
    """`_uint` of every item. `type(...) is int` matters: bools and floats compare as numbers."""
    if not column:
        return
    valid = _types(column) <= _INT
    if valid and column.count(column[0]) == len(column):  # one value throughout is common
        valid = 0 <= column[0] <= high
    elif valid:
        valid = min(column) >= 0 and max(column) <= high
    if not valid:
        raise SnapshotError(f"corrupt snapshot: every {what} must be an integer in 0..{high}")


def _ids_column(column: Sequence[Any], what: str, below: int = MAX_COUNT + 1) -> None:
    """Message ids: integers, increasing strictly from 1 up, all below `below`."""
    _check(_types(column) <= _INT, f"every {what} must be an integer")
    _check(not column or (column[0] > 0 and column[-1] < below
                          and all(map(lt, column, islice(column, 1, None)))),
           f"{what}s out of order or range")


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


def _check_headers(column: Sequence[Any]) -> None:
    _check(_types(column) == {dict}, "headers are not a map")
    filled: list[dict[Any, Any]] = list(filter(None, column))
    _check(_types(chain.from_iterable(filled)) <= {str}, "bad header name")
    _check(_types(chain.from_iterable(map(dict.values, filled))) <= _HEADER_TYPES,
           "bad header value")


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
