"""The streams section of a broker snapshot.

Per stream: `[name, args, next_round_robin, published, trimmed, partitions, groups]`; a
partition is `[first_offset, timestamps, keys, bodies, headers]` (columns, so restore checks
and rebuilds them with builtins, not per record), a group `[name, generation, members,
committed]`. Only logical state is written; group assignments are derived again on restore.
"""

from __future__ import annotations

from itertools import islice
from operator import le
from typing import Any

from raftmq.broker.names import validate_name
from raftmq.broker.queue_core import BrokerCore
from raftmq.broker.snapshot_checks import (
    array,
    check,
    check_headers,
    opt_uint,
    text,
    types_of,
    uint,
    uint_column,
    valid,
)
from raftmq.broker.stream_commands import StreamArgs
from raftmq.broker.stream_flow import recompute_stream_deadline
from raftmq.broker.stream_groups import ConsumerGroup, Member
from raftmq.broker.stream_log import PartitionLog
from raftmq.broker.stream_state import StreamState
from raftmq.broker.stream_validation import validate_stream_args

__all__ = ["decode_streams", "encode_streams"]


def encode_streams(core: BrokerCore) -> list[Any]:
    return [_encode_stream(stream) for stream in core.streams.values()]


def _encode_stream(stream: StreamState) -> list[Any]:
    a = stream.args
    args = [a.partitions, a.max_age_ms, a.max_bytes, a.max_messages, a.max_message_bytes]
    partitions = []
    for log in stream.logs:
        records = log.records()
        columns = [list(column) for column in zip(*records, strict=True)] if records else [
            [], [], [], []]
        partitions.append([log.first_offset, *columns])
    groups = [
        [g.name, g.generation,
         [[name, m.session_timeout_ms, m.expires_ms] for name, m in g.members.items()],
         [number for pair in g.committed.items() for number in pair]]
        for g in stream.groups.values()
    ]
    return [stream.name, args, stream.next_round_robin, stream.published, stream.trimmed,
            partitions, groups]


def decode_streams(core: BrokerCore, value: object) -> None:
    for raw in array(value, "streams"):
        stream = _decode_stream(raw, core.now_ms)
        check(stream.name not in core.streams and stream.name not in core.queues,
              f"stream {stream.name!r} twice")
        core.streams[stream.name] = stream
        core.stream_bytes += stream.bytes
    recompute_stream_deadline(core)


def _decode_stream(raw: object, now_ms: int) -> StreamState:
    name, args_raw, round_robin, published, trimmed, partitions, groups = array(raw, "stream", 7)
    valid(validate_name("stream", text(name, "stream name")))
    a = array(args_raw, "stream args", 5)
    args = StreamArgs(uint(a[0], "partitions"), opt_uint(a[1], "max_age_ms"),
                      opt_uint(a[2], "max_bytes"), opt_uint(a[3], "max_messages"),
                      opt_uint(a[4], "max_message_bytes"))
    valid(validate_stream_args(args))
    stream = StreamState(name, args)
    check(uint(round_robin, "round robin") < args.partitions, "round robin out of range")
    stream.next_round_robin = round_robin
    stream.published = uint(published, "published")
    stream.trimmed = uint(trimmed, "trimmed")
    logs = array(partitions, "partitions", args.partitions)
    stream.logs = [_decode_partition(raw_log, now_ms) for raw_log in logs]
    next_offsets = [log.next_offset for log in stream.logs]
    for raw_group in array(groups, "groups"):
        group = _decode_group(raw_group, next_offsets)
        check(group.name not in stream.groups, f"group {group.name!r} twice")
        stream.groups[group.name] = group
    return stream


def _decode_partition(raw: object, now_ms: int) -> PartitionLog:
    first_offset, timestamps, keys, bodies, headers = array(raw, "partition", 5)
    count = len(array(timestamps, "timestamps"))
    for column in (keys, bodies, headers):
        check(len(array(column, "record column")) == count, "record columns differ in length")
    uint_column(timestamps, "timestamp")
    check(all(map(le, timestamps, islice(timestamps, 1, None))), "timestamps go backwards")
    check(not timestamps or timestamps[-1] <= now_ms, "a record is stamped after the state's time")
    check(types_of(keys) <= {str, type(None)}, "record key is not a string")
    check(types_of(bodies) <= {bytes}, "record body is not binary")
    if count:  # check_headers wants at least one map: an empty partition has none
        check_headers(headers)
    records = list(zip(timestamps, keys, bodies, headers, strict=True))
    return PartitionLog.restored(uint(first_offset, "first offset"), records)


def _decode_group(raw: object, next_offsets: list[int]) -> ConsumerGroup:
    name, generation, members, committed = array(raw, "group", 4)
    valid(validate_name("group", text(name, "group name")))
    partition_count = len(next_offsets)
    group = ConsumerGroup(name, partition_count)
    group.generation = uint(generation, "generation")
    for raw_member in array(members, "members"):
        member, timeout, expires = array(raw_member, "member", 3)
        valid(validate_name("consumer", text(member, "member")))
        check(member not in group.members, "member twice")
        group.members[member] = Member(uint(timeout, "session timeout"), uint(expires, "expiry"))
    check(group.generation > 0 or not group.members, "members in generation 0")
    flat = array(committed, "committed")
    check(len(flat) % 2 == 0, "committed offsets are not pairs")
    uint_column(flat, "committed offset")
    for index in range(0, len(flat), 2):
        check(flat[index] < partition_count, "commit of a missing partition")
        # Nobody can have read past a partition's end, so no commit can point there.
        check(flat[index + 1] <= next_offsets[flat[index]], "commit past a partition's end")
        group.committed[flat[index]] = flat[index + 1]
    group.rebuild_assignment()
    return group
