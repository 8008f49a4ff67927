"""The broker's replicated commands and their versioned msgpack encoding.

A command is encoded as a msgpack array `[CODEC_VERSION, kind, now_ms, fields...]` (arrays, not
maps: the log holds every command ever proposed, so field names would be pure overhead).
Decoding checks every type strictly because the bytes come from the Raft log, and a command
that one replica rejects must be rejected the same way by all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import msgpack

from raftmq.broker.queue_wire import (
    CommandDecodeError,
    HeaderValue,
    RawPublish,
    read_bool,
    read_lease_pairs,
    read_list,
    read_opt_str,
    read_opt_uint,
    read_publish_fields,
    read_str,
    read_uint,
    unpack_array,
)
from raftmq.broker.stream_commands import (
    KIND_STREAM_PUBLISH,
    STREAM_DECODERS,
    STREAM_KINDS,
    RawStreamPublish,
    StreamCommand,
    stream_fields,
)

__all__ = [
    "CODEC_VERSION",
    "KIND_ACK",
    "KIND_EXTEND_LEASE",
    "KIND_NACK",
    "KIND_PUBLISH",
    "Ack",
    "Bind",
    "Claim",
    "Command",
    "CommandDecodeError",
    "DeclareExchange",
    "DeclareQueue",
    "DeleteExchange",
    "DeleteQueue",
    "ExtendLease",
    "HeaderValue",
    "LeaseRef",
    "Nack",
    "OutMessage",
    "Publish",
    "PurgeQueue",
    "QueueArgs",
    "Tick",
    "Unbind",
    "decode_command",
    "decode_items",
    "encode_command",
    "encode_raw_publish",
    "encode_raw_stream_publish",
    "unpack_command",
]

CODEC_VERSION = 1


@dataclass(frozen=True, slots=True)
class QueueArgs:
    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: str = "reject-publish"  # or "drop-head"
    message_ttl_ms: int | None = None
    delivery_limit: int | None = None
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None


@dataclass(frozen=True, slots=True)
class OutMessage:
    routing_key: str
    body: bytes
    # Shared with the stored message and every delivery of it: treat as immutable.
    headers: dict[str, HeaderValue] = field(default_factory=dict)
    ttl_ms: int | None = None
    delay_ms: int | None = None


@dataclass(frozen=True, slots=True)
class LeaseRef:
    message_id: int
    lease_id: int


@dataclass(frozen=True, slots=True)
class DeclareExchange:
    now_ms: int
    name: str
    type: str  # "fanout" | "direct" | "topic"
    alternate_exchange: str | None = None


@dataclass(frozen=True, slots=True)
class DeleteExchange:
    now_ms: int
    name: str
    if_unused: bool = False


@dataclass(frozen=True, slots=True)
class DeclareQueue:
    now_ms: int
    name: str
    args: QueueArgs = field(default_factory=QueueArgs)


@dataclass(frozen=True, slots=True)
class DeleteQueue:
    now_ms: int
    name: str
    if_empty: bool = False


@dataclass(frozen=True, slots=True)
class PurgeQueue:
    now_ms: int
    name: str


@dataclass(frozen=True, slots=True)
class Bind:
    now_ms: int
    exchange: str
    queue: str
    binding_key: str = ""


@dataclass(frozen=True, slots=True)
class Unbind:
    now_ms: int
    exchange: str
    queue: str
    binding_key: str = ""


@dataclass(frozen=True, slots=True)
class Publish:
    now_ms: int
    exchange: str
    messages: tuple[OutMessage, ...]
    producer_id: str | None = None
    sequence: int | None = None
    max_total_bytes: int = 0  # 0 = no limit


@dataclass(frozen=True, slots=True)
class Claim:
    now_ms: int
    queue: str
    consumer: str
    max_messages: int
    lease_ms: int


@dataclass(frozen=True, slots=True)
class Ack:
    now_ms: int
    queue: str
    leases: tuple[LeaseRef, ...]


@dataclass(frozen=True, slots=True)
class Nack:
    now_ms: int
    queue: str
    leases: tuple[LeaseRef, ...]
    requeue: bool = True
    delay_ms: int = 0


@dataclass(frozen=True, slots=True)
class ExtendLease:
    now_ms: int
    queue: str
    leases: tuple[LeaseRef, ...]
    lease_ms: int


@dataclass(frozen=True, slots=True)
class Tick:
    now_ms: int


Command: TypeAlias = (
    DeclareExchange
    | DeleteExchange
    | DeclareQueue
    | DeleteQueue
    | PurgeQueue
    | Bind
    | Unbind
    | Publish
    | Claim
    | Ack
    | Nack
    | ExtendLease
    | Tick
    | StreamCommand
)

# Wire kind numbers: never renumber, only append.
KIND_PUBLISH = 8
KIND_ACK = 10
KIND_NACK = 11
KIND_EXTEND_LEASE = 12
_KIND_BY_TYPE: dict[type, int] = {
    DeclareExchange: 1,
    DeleteExchange: 2,
    DeclareQueue: 3,
    DeleteQueue: 4,
    PurgeQueue: 5,
    Bind: 6,
    Unbind: 7,
    Publish: KIND_PUBLISH,
    Claim: 9,
    Ack: KIND_ACK,
    Nack: KIND_NACK,
    ExtendLease: KIND_EXTEND_LEASE,
    Tick: 13,
    **STREAM_KINDS,
}


# ---------------------------------------------------------------- encoding


def _args_fields(args: QueueArgs) -> list[Any]:
    return [
        args.max_length,
        args.max_length_bytes,
        args.overflow,
        args.message_ttl_ms,
        args.delivery_limit,
        args.dead_letter_exchange,
        args.dead_letter_routing_key,
    ]


def _leases_fields(leases: tuple[LeaseRef, ...]) -> list[int]:
    # Flattened pairs: one array instead of one per lease.
    flat: list[int] = []
    for ref in leases:
        flat.append(ref.message_id)
        flat.append(ref.lease_id)
    return flat


def _fields(cmd: Command) -> list[Any]:
    if isinstance(cmd, StreamCommand):
        return stream_fields(cmd)
    if isinstance(cmd, Publish):
        messages = [
            [m.routing_key, m.body, m.headers, m.ttl_ms, m.delay_ms] for m in cmd.messages
        ]
        return [cmd.exchange, messages, cmd.producer_id, cmd.sequence, cmd.max_total_bytes]
    if isinstance(cmd, Claim):
        return [cmd.queue, cmd.consumer, cmd.max_messages, cmd.lease_ms]
    if isinstance(cmd, Ack):
        return [cmd.queue, _leases_fields(cmd.leases)]
    if isinstance(cmd, Nack):
        return [cmd.queue, _leases_fields(cmd.leases), cmd.requeue, cmd.delay_ms]
    if isinstance(cmd, ExtendLease):
        return [cmd.queue, _leases_fields(cmd.leases), cmd.lease_ms]
    if isinstance(cmd, Tick):
        return []
    if isinstance(cmd, DeclareExchange):
        return [cmd.name, cmd.type, cmd.alternate_exchange]
    if isinstance(cmd, DeleteExchange):
        return [cmd.name, cmd.if_unused]
    if isinstance(cmd, DeclareQueue):
        return [cmd.name, _args_fields(cmd.args)]
    if isinstance(cmd, DeleteQueue):
        return [cmd.name, cmd.if_empty]
    if isinstance(cmd, PurgeQueue):
        return [cmd.name]
    return [cmd.exchange, cmd.queue, cmd.binding_key]  # Bind | Unbind


def encode_command(cmd: Command) -> bytes:
    kind = _KIND_BY_TYPE[type(cmd)]
    data: bytes = msgpack.packb([CODEC_VERSION, kind, cmd.now_ms, *_fields(cmd)], use_bin_type=True)
    return data


def encode_raw_publish(now_ms: int, fields: RawPublish) -> bytes:
    """A publish from its wire form (what `read_publish_fields` returns, each message a
    [routing_key, body, headers, ttl_ms, delay_ms] list): byte for byte what `encode_command`
    gives for the same Publish, without building an OutMessage per message."""
    data: bytes = msgpack.packb([CODEC_VERSION, KIND_PUBLISH, now_ms, *fields], use_bin_type=True)
    return data


def encode_raw_stream_publish(now_ms: int, fields: RawStreamPublish) -> bytes:
    """A stream publish from its wire form (each message a [key, partition, body, headers]
    list): byte for byte what `encode_command` gives for the same StreamPublish."""
    data: bytes = msgpack.packb(
        [CODEC_VERSION, KIND_STREAM_PUBLISH, now_ms, *fields], use_bin_type=True
    )
    return data


# ---------------------------------------------------------------- decoding


def _leases(value: object) -> tuple[LeaseRef, ...]:
    flat = read_lease_pairs(value)
    return tuple(LeaseRef(flat[i], flat[i + 1]) for i in range(0, len(flat), 2))


def _queue_args(value: object) -> QueueArgs:
    fields = read_list(value, "queue args", 7)
    return QueueArgs(
        max_length=read_opt_uint(fields[0], "max_length"),
        max_length_bytes=read_opt_uint(fields[1], "max_length_bytes"),
        overflow=read_str(fields[2], "overflow"),
        message_ttl_ms=read_opt_uint(fields[3], "message_ttl_ms"),
        delivery_limit=read_opt_uint(fields[4], "delivery_limit"),
        dead_letter_exchange=read_opt_str(fields[5], "dead_letter_exchange"),
        dead_letter_routing_key=read_opt_str(fields[6], "dead_letter_routing_key"),
    )


def _publish(now: int, f: list[Any]) -> Publish:
    exchange, messages, producer_id, sequence, max_total_bytes = read_publish_fields(f)
    return Publish(
        now,
        exchange,
        tuple(OutMessage(*m) for m in messages),
        producer_id,
        sequence,
        max_total_bytes,
    )


def _declare_exchange(now: int, f: list[Any]) -> DeclareExchange:
    alternate = read_opt_str(f[2], "alternate_exchange")
    return DeclareExchange(now, read_str(f[0], "name"), read_str(f[1], "type"), alternate)


def _bind(now: int, f: list[Any]) -> Bind:
    return Bind(now, read_str(f[0], "exchange"), read_str(f[1], "queue"), read_str(f[2], "binding key"))


def _unbind(now: int, f: list[Any]) -> Unbind:
    queue = read_str(f[1], "queue")
    return Unbind(now, read_str(f[0], "exchange"), queue, read_str(f[2], "binding key"))


def _claim(now: int, f: list[Any]) -> Claim:
    queue, consumer = read_str(f[0], "queue"), read_str(f[1], "consumer")
    return Claim(now, queue, consumer, read_uint(f[2], "max_messages"), read_uint(f[3], "lease_ms"))


def _nack(now: int, f: list[Any]) -> Nack:
    queue, leases = read_str(f[0], "queue"), _leases(f[1])
    return Nack(now, queue, leases, read_bool(f[2], "requeue"), read_uint(f[3], "delay_ms"))


def _extend(now: int, f: list[Any]) -> ExtendLease:
    queue, leases = read_str(f[0], "queue"), _leases(f[1])
    return ExtendLease(now, queue, leases, read_uint(f[2], "lease_ms"))


_Decoder = Callable[[int, list[Any]], Command]

# kind -> (number of fields after now_ms, decoder)
_DECODERS: dict[int, tuple[int, _Decoder]] = {
    1: (3, _declare_exchange),
    2: (2, lambda now, f: DeleteExchange(now, read_str(f[0], "name"), read_bool(f[1], "if_unused"))),
    3: (2, lambda now, f: DeclareQueue(now, read_str(f[0], "name"), _queue_args(f[1]))),
    4: (2, lambda now, f: DeleteQueue(now, read_str(f[0], "name"), read_bool(f[1], "if_empty"))),
    5: (1, lambda now, f: PurgeQueue(now, read_str(f[0], "name"))),
    6: (3, _bind),
    7: (3, _unbind),
    KIND_PUBLISH: (5, _publish),
    9: (4, _claim),
    KIND_ACK: (2, lambda now, f: Ack(now, read_str(f[0], "queue"), _leases(f[1]))),
    KIND_NACK: (4, _nack),
    KIND_EXTEND_LEASE: (3, _extend),
    13: (0, lambda now, f: Tick(now)),
    **STREAM_DECODERS,
}


def unpack_command(data: bytes) -> list[Any]:
    """The command's msgpack array with version, kind, arity and now_ms checked (items[1] is the
    kind, items[2] now_ms); its fields are not checked yet. Raises CommandDecodeError."""
    items = unpack_array(data)
    version, kind = items[0], items[1]
    if type(version) is not int or version != CODEC_VERSION:
        raise CommandDecodeError(f"unsupported command codec version {version!r}")
    if type(kind) is not int or kind not in _DECODERS:
        raise CommandDecodeError(f"unknown command kind {kind!r}")
    arity = _DECODERS[kind][0]
    if len(items) != 3 + arity:
        raise CommandDecodeError(f"command kind {kind} takes {arity} fields, got {len(items) - 3}")
    read_uint(items[2], "now_ms")
    return items


def decode_items(items: list[Any]) -> Command:
    """Finish decoding what `unpack_command` returned."""
    return _DECODERS[items[1]][1](items[2], items[3:])


def decode_command(data: bytes) -> Command:
    """Decode one command; raise CommandDecodeError (and nothing else) on any malformed input."""
    return decode_items(unpack_command(data))
