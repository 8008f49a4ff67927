"""Stream commands applied to the broker core: declare, delete, publish, groups, deadlines.

Streams share the queues' namespace (an exchange binding or the default exchange names either),
their body bytes count toward the same memory limit, and their deadlines (age retention, group
sessions) ride on the same command time and leader ticks as queue timers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from raftmq.broker.queue_core import BrokerCore
from raftmq.broker.results import (
    INVALID_ARGUMENT,
    MESSAGE_TOO_LARGE,
    PRECONDITION_FAILED,
    RESOURCE_EXHAUSTED,
    STREAM_NOT_FOUND,
    UNKNOWN_MEMBER,
    ErrorResult,
    OkResult,
    Result,
)
from raftmq.broker.stream_commands import (
    CommitOffsets,
    DeclareStream,
    DeleteStream,
    GroupHeartbeat,
    JoinGroup,
    LeaveGroup,
)
from raftmq.broker.stream_groups import ConsumerGroup
from raftmq.broker.stream_results import StreamPublishResult
from raftmq.broker.stream_state import MAX_GROUPS_PER_STREAM, StreamState

__all__ = [
    "commit_offsets",
    "declare_stream",
    "delete_stream",
    "fire_stream_deadlines",
    "group_heartbeat",
    "join_group",
    "leave_group",
    "memory_problem",
    "recompute_stream_deadline",
    "stream_publish",
]


def declare_stream(core: BrokerCore, cmd: DeclareStream) -> Result:
    if cmd.name in core.queues:
        return ErrorResult(PRECONDITION_FAILED, f"a queue named {cmd.name!r} exists")
    found = core.streams.get(cmd.name)
    if found is None:
        core.streams[cmd.name] = StreamState(cmd.name, cmd.args)
        return OkResult(created=True)
    if found.args != cmd.args:
        return ErrorResult(
            PRECONDITION_FAILED, f"stream {cmd.name!r} exists with other args {found.args}"
        )
    return OkResult(created=False)


def delete_stream(core: BrokerCore, cmd: DeleteStream) -> Result:
    stream = core.streams.pop(cmd.name, None)
    if stream is None:
        return _no_stream(cmd.name)
    core.router.remove_queue(cmd.name)  # bindings name streams like queues
    core.stream_bytes -= stream.bytes
    return OkResult()


def memory_problem(core: BrokerCore, incoming_bytes: int, max_total_bytes: int) -> ErrorResult | None:
    """The node's memory limit covers queue bodies and stream records alike."""
    held = core.total_body_bytes + core.stream_bytes
    if max_total_bytes and held + incoming_bytes > max_total_bytes:
        return ErrorResult(
            RESOURCE_EXHAUSTED,
            f"the broker holds {held} body bytes; {incoming_bytes} more would exceed the limit "
            f"of {max_total_bytes}",
        )
    return None


def stream_publish(
    core: BrokerCore,
    stream_name: str,
    messages: Sequence[Sequence[Any]],
    producer_id: str | None,
    sequence: int | None,
    max_total_bytes: int,
) -> StreamPublishResult | ErrorResult:
    """Append messages given in wire form `[key, partition, body, headers]`, all or none."""
    if producer_id is not None:
        seen = core.producers.check(producer_id, sequence or 0, core.now_ms, StreamPublishResult)
        if seen is not None:
            return seen
    stream = core.streams.get(stream_name)
    if stream is None:
        return _no_stream(stream_name)
    problem = _batch_problem(stream, messages) or memory_problem(
        core, sum(len(m[2]) for m in messages), max_total_bytes
    )
    if problem is not None:
        return problem
    now = core.now_ms
    partitions: list[int] = []
    offsets: list[int] = []
    choose = stream.choose_partition
    append = stream.append
    notify = core.stream_appends
    freed = 0
    added = 0
    for key, partition, body, headers in messages:
        if partition is None:
            partition = choose(key)
        offset, trimmed = append(partition, (now, key, body, headers))
        freed += trimmed
        added += len(body)
        partitions.append(partition)
        offsets.append(offset)
        notify[(stream_name, partition)] = None
    core.stream_bytes += added - freed
    core.note_stream_head(stream)
    result = StreamPublishResult(tuple(partitions), tuple(offsets))
    if producer_id is not None:
        core.producers.record(producer_id, sequence or 0, result, now)
    return result


def _batch_problem(stream: StreamState, messages: Sequence[Sequence[Any]]) -> ErrorResult | None:
    count = len(stream.logs)
    max_size = stream.args.max_message_bytes
    for index, (_key, partition, body, _headers) in enumerate(messages):
        if partition is not None and partition >= count:
            return ErrorResult(
                INVALID_ARGUMENT,
                f"message {index}: partition {partition} does not exist; stream "
                f"{stream.name!r} has {count}",
            )
        if max_size is not None and len(body) > max_size:
            return ErrorResult(
                MESSAGE_TOO_LARGE,
                f"message {index} has {len(body)} bytes; stream {stream.name!r} takes at most "
                f"{max_size}",
            )
    return None


# ---------------------------------------------------------------- consumer groups


def join_group(core: BrokerCore, cmd: JoinGroup) -> Result:
    stream = core.streams.get(cmd.stream)
    if stream is None:
        return _no_stream(cmd.stream)
    group = _existing_or_new_group(stream, cmd.group)
    if isinstance(group, ErrorResult):
        return group
    stream.groups.setdefault(cmd.group, group)
    result = group.join(cmd.member, cmd.session_timeout_ms, core.now_ms)
    core.lower_stream_deadline(core.now_ms + cmd.session_timeout_ms)
    return result


def _existing_or_new_group(stream: StreamState, name: str) -> ConsumerGroup | ErrorResult:
    """The group, or a new one not yet registered (the caller keeps it if it is used)."""
    group = stream.groups.get(name)
    if group is not None:
        return group
    if len(stream.groups) >= MAX_GROUPS_PER_STREAM:
        return ErrorResult(
            RESOURCE_EXHAUSTED,
            f"stream {stream.name!r} already has {MAX_GROUPS_PER_STREAM} consumer groups",
        )
    return ConsumerGroup(name, len(stream.logs))


def group_heartbeat(core: BrokerCore, cmd: GroupHeartbeat) -> Result:
    found = _group(core, cmd.stream, cmd.group)
    return found if isinstance(found, ErrorResult) else found.heartbeat(cmd.member, core.now_ms)


def leave_group(core: BrokerCore, cmd: LeaveGroup) -> Result:
    found = _group(core, cmd.stream, cmd.group)
    return found if isinstance(found, ErrorResult) else found.leave(cmd.member)


def commit_offsets(core: BrokerCore, cmd: CommitOffsets) -> Result:
    stream = core.streams.get(cmd.stream)
    if stream is None:
        return _no_stream(cmd.stream)
    if cmd.member is not None and cmd.group not in stream.groups:
        return _no_group(cmd.stream, cmd.group)
    group = _existing_or_new_group(stream, cmd.group)
    if isinstance(group, ErrorResult):
        return group
    next_offsets = [log.next_offset for log in stream.logs]
    result = group.commit(cmd.member, cmd.generation, cmd.offsets, next_offsets, core.now_ms)
    if isinstance(result, OkResult):  # a rejected commit leaves no empty group behind
        stream.groups.setdefault(cmd.group, group)
    return result


def _group(core: BrokerCore, stream_name: str, group_name: str) -> ConsumerGroup | ErrorResult:
    stream = core.streams.get(stream_name)
    if stream is None:
        return _no_stream(stream_name)
    group = stream.groups.get(group_name)
    return _no_group(stream_name, group_name) if group is None else group


def _no_group(stream_name: str, group_name: str) -> ErrorResult:
    return ErrorResult(
        UNKNOWN_MEMBER, f"group {group_name!r} of stream {stream_name!r} has no members: join"
    )


# ---------------------------------------------------------------- time


def fire_stream_deadlines(core: BrokerCore) -> None:
    """Age retention and group session expiry, when the earliest of them is due."""
    due = core.stream_deadline_ms
    now = core.now_ms
    if due is None or now < due:
        return
    for stream in core.streams.values():
        max_age = stream.args.max_age_ms
        if max_age is not None:
            core.stream_bytes -= stream.trim_older_than(now - max_age)
        for group in stream.groups.values():
            group.expire(now)
    recompute_stream_deadline(core)


def recompute_stream_deadline(core: BrokerCore) -> None:
    """The exact next stream deadline (age retention or group session), from scratch."""
    candidates = [
        deadline
        for stream in core.streams.values()
        for deadline in (stream.next_age_deadline_ms(), stream.next_group_deadline_ms())
        if deadline is not None
    ]
    core.stream_deadline_ms = min(candidates, default=None)


def _no_stream(name: str) -> ErrorResult:
    return ErrorResult(STREAM_NOT_FOUND, f"stream {name!r} does not exist")
