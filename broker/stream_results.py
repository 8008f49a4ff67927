"""What stream commands return, and the read-only views of streams, partitions and groups."""

from __future__ import annotations

from dataclasses import dataclass

from raftmq.broker.stream_commands import StreamArgs
from raftmq.broker.stream_log import StreamRecord

__all__ = [
    "FetchResult",
    "GroupAssignment",
    "GroupInfo",
    "MemberInfo",
    "OffsetOutOfRange",
    "PartitionInfo",
    "StreamInfo",
    "StreamPublishResult",
]


@dataclass(frozen=True, slots=True)
class StreamPublishResult:
    # Message i of the batch went to partitions[i] at offsets[i].
    partitions: tuple[int, ...]
    offsets: tuple[int, ...]
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class GroupAssignment:
    """A member's view of its group after a join, heartbeat or commit."""

    generation: int
    member: str
    partitions: tuple[int, ...]  # assigned to this member, ascending
    members: tuple[str, ...]  # all members, in assignment order
    # Committed next offset of each assigned partition that has one.
    committed: tuple[tuple[int, int], ...]
    session_expires_ms: int


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    partition: int
    first_offset: int
    next_offset: int  # one past the last offset; equal to first_offset when empty
    messages: int
    bytes: int
    first_timestamp_ms: int | None


@dataclass(frozen=True, slots=True)
class StreamInfo:
    name: str
    args: StreamArgs
    partitions: tuple[PartitionInfo, ...]
    groups: tuple[str, ...]
    published: int
    trimmed: int


@dataclass(frozen=True, slots=True)
class MemberInfo:
    member: str
    partitions: tuple[int, ...]
    session_timeout_ms: int
    session_expires_ms: int


@dataclass(frozen=True, slots=True)
class GroupInfo:
    stream: str
    group: str
    generation: int
    members: tuple[MemberInfo, ...]
    committed: tuple[tuple[int, int], ...]  # (partition, next offset), ascending


@dataclass(frozen=True, slots=True)
class FetchResult:
    partition: int
    offset: int  # offset of records[0] (the requested one, or where a timestamp led)
    records: list[StreamRecord]
    first_offset: int
    next_offset: int


@dataclass(frozen=True, slots=True)
class OffsetOutOfRange:
    """A fetch before the first readable offset (trimmed by retention) or past the next one."""

    partition: int
    offset: int
    first_offset: int
    next_offset: int
