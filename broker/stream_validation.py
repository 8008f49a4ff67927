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


def _message_range_problem(message: list[Any]) -> str | None:
    """Ranges and encodability of one stream message whose types are right."""
    key, partition, _body, headers = message
    if key is not None and len(key) > MAX_ROUTING_KEY_LEN:
        return f"message key is longer than {MAX_ROUTING_KEY_LEN} characters"
    if partition is not None and partition >= MAX_PARTITIONS:
        return f"partition must be below {MAX_PARTITIONS}"
    return encodable_problem("key", [] if key is None else [key], headers)


def raw_stream_publish_problem(fields: RawStreamPublish) -> str | None:
    """Checks of a stream publish in wire form (`read_stream_publish_fields` or the API's
    decoder built it; message types are checked here again, cheaply, for the latter)."""
    stream, messages, producer_id, sequence, max_total_bytes = fields
    if type(messages) is not list:
        return "messages must be a list"
    problem = _publish_fields_problem(stream, len(messages), producer_id, sequence, max_total_bytes)
    if problem is not None:
        return problem
    for message in messages:
        problem = stream_message_type_problem(message) or _message_range_problem(message)
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
