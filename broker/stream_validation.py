"""Argument checks of stream and consumer-group commands (the stream half of
`queue_validation.validate_command`, which dispatches here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from raftmq.broker.names import MAX_ROUTING_KEY_LEN
from raftmq.broker.stream_commands import (
    CommitOffsets,
    DeclareStream,
    DeleteStream,
    GroupHeartbeat,
    JoinGroup,
    LeaveGroup,
    RawStreamPublish,
    StreamArgs,
    StreamMessage,
    StreamPublish,
    stream_message_type_problem,
)
from raftmq.broker.value_checks import (
    MAX_DURATION_MS,
    count_problem,
    declare_name_problem,
    encodable_problem,
    first_problem,
    name_problem,
    opt_count_problem,
)

__all__ = [
    "MAX_PARTITIONS",
    "MAX_SESSION_TIMEOUT_MS",
    "MAX_STREAM_PUBLISH_MESSAGES",
    "MIN_SESSION_TIMEOUT_MS",
    "STREAM_CHECKS",
    "decoded_stream_publish_problem",
    "raw_stream_publish_problem",
    "validate_stream_args",
]

MAX_PARTITIONS = 1024
MAX_STREAM_PUBLISH_MESSAGES = 10_000
MIN_SESSION_TIMEOUT_MS = 100
MAX_SESSION_TIMEOUT_MS = 86_400_000


def validate_stream_args(args: object) -> str | None:
    if not isinstance(args, StreamArgs):
        return "stream args are malformed"
    return first_problem(
        count_problem(args.partitions, "partitions", 1, MAX_PARTITIONS),
        opt_count_problem(args.max_age_ms, "max_age_ms", 1, MAX_DURATION_MS),
        opt_count_problem(args.max_bytes, "max_bytes", 1),
        opt_count_problem(args.max_messages, "max_messages", 1),
        opt_count_problem(args.max_message_bytes, "max_message_bytes", 1),
    )


def _publish_fields_problem(
    stream: object, message_count: int, producer_id: object, sequence: object, max_total: object
) -> str | None:
    if message_count > MAX_STREAM_PUBLISH_MESSAGES:
        return f"a stream publish carries at most {MAX_STREAM_PUBLISH_MESSAGES} messages"
    producer_error = None
    if producer_id is not None:
        producer_error = name_problem("producer", producer_id) or count_problem(sequence, "sequence")
    elif sequence is not None:
        producer_error = "a sequence needs a producer_id"
    return first_problem(
        name_problem("stream", stream), producer_error, count_problem(max_total, "max_total_bytes")
    )


def _range_problem(key: str | None, partition: int | None) -> str | None:
    if key is not None and len(key) > MAX_ROUTING_KEY_LEN:
        return f"message key is longer than {MAX_ROUTING_KEY_LEN} characters"
    if partition is not None and partition >= MAX_PARTITIONS:
        return f"partition must be below {MAX_PARTITIONS}"
    return None


def _is_plain(message: object) -> bool:
    """The common shape, which needs no further check: an ASCII key (or none), no partition
    or one in range, binary body, no headers."""
    if type(message) is not list or len(message) != 4:
        return False
    key, partition, body, headers = message
    return (
        (key is None or (type(key) is str and key.isascii() and len(key) <= MAX_ROUTING_KEY_LEN))
        and (partition is None or (type(partition) is int and 0 <= partition < MAX_PARTITIONS))
        and type(body) is bytes and type(headers) is dict and not headers
    )


def decoded_stream_publish_problem(fields: RawStreamPublish) -> str | None:
    """Checks of a stream publish decoded from the log by `read_stream_publish_fields`, which
    already checked every type; decoded text is always encodable, so ranges remain."""
    stream, messages, producer_id, sequence, max_total_bytes = fields
    problem = _publish_fields_problem(stream, len(messages), producer_id, sequence, max_total_bytes)
    if problem is not None:
        return problem
    for key, partition, _body, _headers in messages:
        problem = _range_problem(key, partition)
        if problem is not None:
            return problem
    return None


def raw_stream_publish_problem(fields: RawStreamPublish) -> str | None:
    """Every check of a stream publish in wire form built in-process (types, ranges, what
    msgpack can encode), so that once it passes the command encodes and applies cleanly."""
    stream, messages, producer_id, sequence, max_total_bytes = fields
    if type(messages) is not list:
        return "messages must be a list"
    problem = _publish_fields_problem(stream, len(messages), producer_id, sequence, max_total_bytes)
    if problem is not None:
        return problem
    for message in messages:
        if _is_plain(message):
            continue
        problem = stream_message_type_problem(message) or _range_problem(message[0], message[1])
        if problem is None:
            problem = encodable_problem("key", [] if message[0] is None else [message[0]],
                                        message[3])
        if problem is not None:
            return problem
    return None


def _stream_publish(cmd: StreamPublish) -> str | None:
    if type(cmd.messages) is not tuple:
        return "messages must be a tuple"
    wire: list[list[Any]] = []
    for msg in cast(tuple[object, ...], cmd.messages):
        if not isinstance(msg, StreamMessage):
            return "messages must be StreamMessage records"
        wire.append([msg.key, msg.partition, msg.body, msg.headers])
    return raw_stream_publish_problem(
        (cmd.stream, wire, cmd.producer_id, cmd.sequence, cmd.max_total_bytes)
    )


def _member(cmd: JoinGroup | GroupHeartbeat | LeaveGroup) -> str | None:
    return first_problem(
        name_problem("stream", cmd.stream),
        name_problem("group", cmd.group),
        name_problem("consumer", cmd.member),
    )


def _commit(cmd: CommitOffsets) -> str | None:
    offsets = cmd.offsets
    if type(offsets) is not tuple or len(offsets) > MAX_PARTITIONS:
        return f"offsets must be a tuple of at most {MAX_PARTITIONS} (partition, offset) pairs"
    for pair in offsets:
        if type(pair) is not tuple or len(pair) != 2:
            return "offsets must be (partition, offset) pairs"
        problem = count_problem(pair[0], "partition", 0, MAX_PARTITIONS - 1) or count_problem(
            pair[1], "offset"
        )
        if problem is not None:
            return problem
    member_problem = None if cmd.member is None else name_problem("consumer", cmd.member)
    if cmd.member is None and cmd.generation != 0:
        member_problem = "a commit without a member must have generation 0"
    return first_problem(
        name_problem("stream", cmd.stream),
        name_problem("group", cmd.group),
        member_problem,
        count_problem(cmd.generation, "generation"),
    )


STREAM_CHECKS: dict[type, Callable[[Any], str | None]] = {
    DeclareStream: lambda c: declare_name_problem("stream", c.name) or validate_stream_args(c.args),
    DeleteStream: lambda c: declare_name_problem("stream", c.name),
    StreamPublish: _stream_publish,
    JoinGroup: lambda c: _member(c) or count_problem(
        c.session_timeout_ms, "session_timeout_ms", MIN_SESSION_TIMEOUT_MS, MAX_SESSION_TIMEOUT_MS
    ),
    GroupHeartbeat: _member,
    LeaveGroup: _member,
    CommitOffsets: _commit,
}
