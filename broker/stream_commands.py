"""Stream and consumer-group commands, and their msgpack fields.

`commands` merges these into the one command codec (same envelope `[version, kind, now_ms,
fields...]`, kinds numbered after the queue commands). A stream message travels in wire form
`[key, partition, body, headers]`: key and partition are each optional.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from raftmq.broker.queue_wire import (
    CommandDecodeError,
    HeaderValue,
    read_list,
    read_opt_str,
    read_opt_uint,
    read_str,
    read_uint,
)

__all__ = [
    "KIND_STREAM_PUBLISH",
    "STREAM_DECODERS",
    "STREAM_KINDS",
    "CommitOffsets",
    "DeclareStream",
    "DeleteStream",
    "GroupHeartbeat",
    "JoinGroup",
    "LeaveGroup",
    "RawStreamPublish",
    "StreamArgs",
    "StreamCommand",
    "StreamMessage",
    "StreamPublish",
    "read_stream_publish_fields",
    "stream_fields",
    "stream_message_type_problem",
]


@dataclass(frozen=True, slots=True)
class StreamArgs:
    partitions: int = 1
    # Retention, each per partition; a record goes when any limit is passed.
    max_age_ms: int | None = None
    max_bytes: int | None = None
    max_messages: int | None = None
    max_message_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class StreamMessage:
    body: bytes
    key: str | None = None  # picks the partition by a stable hash when partition is None
    partition: int | None = None
    headers: dict[str, HeaderValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeclareStream:
    now_ms: int
    name: str
    args: StreamArgs = field(default_factory=StreamArgs)


@dataclass(frozen=True, slots=True)
class DeleteStream:
    now_ms: int
    name: str


@dataclass(frozen=True, slots=True)
class StreamPublish:
    now_ms: int
    stream: str
    messages: tuple[StreamMessage, ...]
    producer_id: str | None = None
    sequence: int | None = None
    max_total_bytes: int = 0  # 0 = no limit


@dataclass(frozen=True, slots=True)
class JoinGroup:
    now_ms: int
    stream: str
    group: str
    member: str
    session_timeout_ms: int


@dataclass(frozen=True, slots=True)
class GroupHeartbeat:
    now_ms: int
    stream: str
    group: str
    member: str


@dataclass(frozen=True, slots=True)
class LeaveGroup:
    now_ms: int
    stream: str
    group: str
    member: str


@dataclass(frozen=True, slots=True)
class CommitOffsets:
    """Offsets are the next offset to read, per partition (Kafka's convention). `member` None
    with generation 0 is a standalone commit, accepted only while the group has no members."""

    now_ms: int
    stream: str
    group: str
    member: str | None
    generation: int
    offsets: tuple[tuple[int, int], ...]  # (partition, next offset)


StreamCommand: TypeAlias = (
    DeclareStream | DeleteStream | StreamPublish | JoinGroup | GroupHeartbeat | LeaveGroup
    | CommitOffsets
)

# Wire kind numbers continue the queue commands' (1..13): never renumber, only append.
KIND_STREAM_PUBLISH = 16
STREAM_KINDS: dict[type, int] = {
    DeclareStream: 14,
    DeleteStream: 15,
    StreamPublish: KIND_STREAM_PUBLISH,
    JoinGroup: 17,
    GroupHeartbeat: 18,
    LeaveGroup: 19,
    CommitOffsets: 20,
}


def _args_fields(args: StreamArgs) -> list[Any]:
    return [args.partitions, args.max_age_ms, args.max_bytes, args.max_messages,
            args.max_message_bytes]


def stream_fields(cmd: StreamCommand) -> list[Any]:
    if isinstance(cmd, StreamPublish):
        messages = [[m.key, m.partition, m.body, m.headers] for m in cmd.messages]
        return [cmd.stream, messages, cmd.producer_id, cmd.sequence, cmd.max_total_bytes]
    if isinstance(cmd, DeclareStream):
        return [cmd.name, _args_fields(cmd.args)]
    if isinstance(cmd, DeleteStream):
        return [cmd.name]
    if isinstance(cmd, JoinGroup):
        return [cmd.stream, cmd.group, cmd.member, cmd.session_timeout_ms]
    if isinstance(cmd, GroupHeartbeat | LeaveGroup):
        return [cmd.stream, cmd.group, cmd.member]
    flat = [number for pair in cmd.offsets for number in pair]
    return [cmd.stream, cmd.group, cmd.member, cmd.generation, flat]


# ---------------------------------------------------------------- decoding

_HEADER_TYPES = (str, int, float, bool, bytes, type(None))

# (stream, messages as [key, partition, body, headers] lists, producer_id, sequence,
# max_total_bytes)
RawStreamPublish: TypeAlias = tuple[str, list[list[Any]], str | None, int | None, int]


def stream_message_type_problem(value: object) -> str | None:
    """Why a wire stream message `[key, partition, body, headers]` is malformed, or None."""
    if type(value) is not list or len(value) != 4:
        return "stream message must be an array of 4"
    key, partition, body, headers = value
    if key is not None and type(key) is not str:
        return "message key must be a string"
    if partition is not None and (type(partition) is not int or partition < 0):
        return "partition must be a non-negative integer"
    if type(body) is not bytes:
        return "message body must be binary"
    if type(headers) is not dict:
        return "message headers must be a map"
    for name, item in headers.items():
        if type(name) is not str:
            return "header names must be strings"
        if type(item) not in _HEADER_TYPES:
            return f"header {name!r} has an unsupported value type"
    return None


def read_stream_publish_fields(fields: list[Any]) -> RawStreamPublish:
    stream = read_str(fields[0], "stream")
    messages = read_list(fields[1], "messages")
    for message in messages:
        problem = stream_message_type_problem(message)
        if problem is not None:
            raise CommandDecodeError(problem)
    return (
        stream,
        messages,
        read_opt_str(fields[2], "producer_id"),
        read_opt_uint(fields[3], "sequence"),
        read_uint(fields[4], "max_total_bytes"),
    )


def _stream_args(value: object) -> StreamArgs:
    f = read_list(value, "stream args", 5)
    return StreamArgs(
        partitions=read_uint(f[0], "partitions"),
        max_age_ms=read_opt_uint(f[1], "max_age_ms"),
        max_bytes=read_opt_uint(f[2], "max_bytes"),
        max_messages=read_opt_uint(f[3], "max_messages"),
        max_message_bytes=read_opt_uint(f[4], "max_message_bytes"),
    )


def _stream_publish(now: int, f: list[Any]) -> StreamPublish:
    stream, messages, producer_id, sequence, max_total_bytes = read_stream_publish_fields(f)
    records = tuple(StreamMessage(body, key, partition, headers)
                    for key, partition, body, headers in messages)
    return StreamPublish(now, stream, records, producer_id, sequence, max_total_bytes)


def _member_fields(f: list[Any]) -> tuple[str, str, str]:
    return read_str(f[0], "stream"), read_str(f[1], "group"), read_str(f[2], "member")


def _commit(now: int, f: list[Any]) -> CommitOffsets:
    stream, group = read_str(f[0], "stream"), read_str(f[1], "group")
    member, generation = read_opt_str(f[2], "member"), read_uint(f[3], "generation")
    flat = read_list(f[4], "offsets")
    if len(flat) % 2:
        raise CommandDecodeError("offsets must be partition, offset pairs")
    pairs = tuple(
        (read_uint(flat[i], "partition"), read_uint(flat[i + 1], "offset"))
        for i in range(0, len(flat), 2)
    )
    return CommitOffsets(now, stream, group, member, generation, pairs)


_Decoder = Callable[[int, list[Any]], StreamCommand]

# kind -> (number of fields after now_ms, decoder)
STREAM_DECODERS: dict[int, tuple[int, _Decoder]] = {
    14: (2, lambda now, f: DeclareStream(now, read_str(f[0], "name"), _stream_args(f[1]))),
    15: (1, lambda now, f: DeleteStream(now, read_str(f[0], "name"))),
    KIND_STREAM_PUBLISH: (5, _stream_publish),
    17: (4, lambda now, f: JoinGroup(now, *_member_fields(f),
                                     read_uint(f[3], "session_timeout_ms"))),
    18: (3, lambda now, f: GroupHeartbeat(now, *_member_fields(f))),
    19: (3, lambda now, f: LeaveGroup(now, *_member_fields(f))),
    20: (5, _commit),
}
