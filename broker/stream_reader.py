"""Read-only stream queries, answered from the local replica without a Raft round trip.

Every applied entry is committed, so whatever a replica has applied is safe to serve; it may
only be behind. The API runs these under the state lock and encodes the records after
releasing it: records are immutable tuples, so the returned list stays valid.
"""

from __future__ import annotations

from raftmq.broker.queue_core import BrokerCore
from raftmq.broker.results import PARTITION_NOT_FOUND, STREAM_NOT_FOUND, ErrorResult
from raftmq.broker.stream_log import PartitionLog
from raftmq.broker.stream_results import FetchResult, GroupInfo, OffsetOutOfRange, StreamInfo

__all__ = ["StreamReader"]


class StreamReader:
    __slots__ = ("_core",)

    def __init__(self, core: BrokerCore) -> None:
        self._core = core

    def list_all(self) -> list[StreamInfo]:
        return [stream.info() for stream in self._core.streams.values()]

    def info(self, name: str) -> StreamInfo | None:
        found = self._core.streams.get(name)
        return None if found is None else found.info()

    def has_stream(self, name: str) -> bool:
        return name in self._core.streams

    def fetch(
        self, stream: str, partition: int, offset: int, max_messages: int, max_bytes: int
    ) -> FetchResult | OffsetOutOfRange | ErrorResult:
        """Up to `max_messages` records from `offset`, within `max_bytes` of bodies (at least
        one record if any is there). Reading at the next offset gives no records."""
        log = self._log(stream, partition)
        if isinstance(log, ErrorResult):
            return log
        first, after = log.first_offset, log.next_offset
        if not first <= offset <= after:
            return OffsetOutOfRange(partition, offset, first, after)
        records = log.read(offset, max_messages, max_bytes)
        return FetchResult(partition, offset, records, first, after)

    def offset_for_timestamp(self, stream: str, partition: int, timestamp_ms: int) -> int | ErrorResult:
        """The first readable offset stamped at or after `timestamp_ms` (the next offset if
        none is)."""
        log = self._log(stream, partition)
        return log if isinstance(log, ErrorResult) else log.offset_for_timestamp(timestamp_ms)

    def next_offset(self, stream: str, partition: int) -> int | ErrorResult:
        log = self._log(stream, partition)
        return log if isinstance(log, ErrorResult) else log.next_offset

    def groups(self, stream: str) -> list[GroupInfo] | None:
        found = self._core.streams.get(stream)
        if found is None:
            return None
        return [group.info(stream) for group in found.groups.values()]

    def group(self, stream: str, group: str) -> GroupInfo | None:
        found = self._core.streams.get(stream)
        member_group = None if found is None else found.groups.get(group)
        return None if member_group is None else member_group.info(stream)

    def _log(self, stream: str, partition: int) -> PartitionLog | ErrorResult:
        found = self._core.streams.get(stream)
        if found is None:
            return ErrorResult(STREAM_NOT_FOUND, f"stream {stream!r} does not exist")
        if not 0 <= partition < len(found.logs):
            return ErrorResult(
                PARTITION_NOT_FOUND,
                f"stream {stream!r} has partitions 0..{len(found.logs) - 1}, not {partition}",
            )
        return found.logs[partition]
