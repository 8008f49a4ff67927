"""One stream partition: an append-only log of records addressed by offset.

Offsets start at 0, grow by one per record and are never reused: retention only moves the
first offset forward. Records live in a list with a moving head so that trimming from the
front is O(1); the dead prefix is cut off in one slice once it is large, which keeps the
amortised cost per record constant while readers can still slice any window in one step.
"""

from __future__ import annotations

from bisect import bisect_left
from operator import itemgetter
from typing import Any, TypeAlias

__all__ = ["COMPACT_MIN_DEAD", "PartitionLog", "StreamRecord"]

# (timestamp_ms, key, body, headers): one tuple per record, shared by every reader.
StreamRecord: TypeAlias = tuple[int, str | None, bytes, dict[str, Any]]

# The dead prefix is cut once it holds this many records and at least half of the list.
COMPACT_MIN_DEAD = 4096

_timestamp_of = itemgetter(0)


class PartitionLog:
    __slots__ = ("_base_offset", "_head", "_records", "bytes")

    def __init__(self, first_offset: int = 0) -> None:
        # Offset of _records[0]; records before _head are trimmed and no longer readable.
        self._base_offset = first_offset
        self._head = 0
        self._records: list[StreamRecord] = []
        self.bytes = 0  # body bytes of the readable records

    @classmethod
    def restored(cls, first_offset: int, records: list[StreamRecord]) -> PartitionLog:
        """A log holding `records` from `first_offset` (a snapshot restore, in bulk)."""
        log = cls(first_offset)
        log._records = records
        log.bytes = sum(len(record[2]) for record in records)
        return log

    # ------------------------------------------------------------ positions

    @property
    def first_offset(self) -> int:
        """The oldest readable offset (equal to next_offset when the log is empty)."""
        return self._base_offset + self._head

    @property
    def next_offset(self) -> int:
        """The offset the next appended record gets."""
        return self._base_offset + len(self._records)

    def __len__(self) -> int:
        return len(self._records) - self._head

    def head_timestamp_ms(self) -> int | None:
        if self._head == len(self._records):
            return None
        return self._records[self._head][0]

    # ------------------------------------------------------------ writing

    def append(self, record: StreamRecord) -> int:
        offset = self._base_offset + len(self._records)
        self._records.append(record)
        self.bytes += len(record[2])
        return offset

    def trim_head(self) -> StreamRecord:
        """Drop the oldest record; the caller checks the log is not empty."""
        assert self._head < len(self._records), "trim of an empty partition"
        record = self._records[self._head]
        self._head += 1
        self.bytes -= len(record[2])
        self._compact_if_needed()
        return record

    def _compact_if_needed(self) -> None:
        dead = self._head
        if dead >= COMPACT_MIN_DEAD and dead * 2 >= len(self._records):
            del self._records[:dead]
            self._base_offset += dead
            self._head = 0

    # ------------------------------------------------------------ reading

    def read(self, offset: int, max_messages: int, max_bytes: int) -> list[StreamRecord]:
        """Records from `offset` (first_offset <= offset <= next_offset) while they fit in
        `max_bytes` of bodies; the first record is returned even if it alone is larger, so a
        reader never gets stuck behind one big record."""
        start = offset - self._base_offset
        assert self._head <= start <= len(self._records), "read outside the readable range"
        window = self._records[start:start + max_messages]
        total = 0
        for index, record in enumerate(window):
            total += len(record[2])
            if total > max_bytes and index > 0:
                return window[:index]
        return window

    def offset_for_timestamp(self, timestamp_ms: int) -> int:
        """The first readable offset whose record is at or after `timestamp_ms` (next_offset
        if none is). Timestamps never decrease along a partition: they are command times."""
        index = bisect_left(self._records, timestamp_ms, lo=self._head, key=_timestamp_of)
        return self._base_offset + index

    def records(self) -> list[StreamRecord]:
        """The readable records, oldest first (a copy)."""
        return self._records[self._head:]
