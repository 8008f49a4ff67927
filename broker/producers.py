"""The idempotent-producer table: (producer_id, sequence) -> the original publish result.

A producer retries a batch after a leader crash with the same sequence; answering from this
table instead of storing the batch again is what makes failover duplicate-free. The table is
replicated state (part of snapshots) and bounded by count and idle time.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TypeAlias, TypeVar

from raftmq.broker.results import (
    INVALID_ARGUMENT,
    SEQUENCE_TOO_OLD,
    ErrorResult,
    PublishResult,
)
from raftmq.broker.stream_results import StreamPublishResult

__all__ = [
    "MAX_PRODUCERS",
    "PRODUCER_IDLE_MS",
    "PRODUCER_WINDOW",
    "AnyPublishResult",
    "ProducerRecord",
    "ProducerTable",
]

AnyPublishResult: TypeAlias = PublishResult | StreamPublishResult

ResultT = TypeVar("ResultT", PublishResult, StreamPublishResult)

PRODUCER_WINDOW = 64
MAX_PRODUCERS = 10_000
PRODUCER_IDLE_MS = 24 * 3600 * 1000


class ProducerRecord:
    __slots__ = ("last_seen_ms", "max_sequence", "results")

    def __init__(self, max_sequence: int, last_seen_ms: int) -> None:
        self.max_sequence = max_sequence
        self.last_seen_ms = last_seen_ms
        # sequence -> result, only for sequences within PRODUCER_WINDOW of max_sequence.
        self.results: dict[int, AnyPublishResult] = {}


class ProducerTable:
    __slots__ = ("records",)

    def __init__(self) -> None:
        # producer_id -> record, least recently seen first (state time only grows, so moving a
        # record to the end on every use keeps this ordered by last_seen_ms).
        self.records: dict[str, ProducerRecord] = {}

    def __len__(self) -> int:
        return len(self.records)

    def check(
        self,
        producer_id: str,
        sequence: int,
        now_ms: int,
        kind: type[ResultT],
    ) -> ResultT | ErrorResult | None:
        """The answer for a batch already seen (duplicate or too old), or None to apply it.
        `kind` is the result type the publish being checked produces."""
        record = self.records.get(producer_id)
        if record is None:
            return None
        cached = record.results.get(sequence)
        if cached is not None:
            self._touch(producer_id, record, now_ms)
            if type(cached) is not kind:
                return ErrorResult(
                    INVALID_ARGUMENT,
                    f"sequence {sequence} of producer {producer_id!r} was used by a publish to "
                    f"a {'stream' if kind is PublishResult else 'exchange'}; a producer's "
                    "sequences are shared by all its publishes",
                )
            return replace(cached, duplicate=True)
        if sequence <= record.max_sequence - PRODUCER_WINDOW:
            return ErrorResult(
                SEQUENCE_TOO_OLD,
                f"sequence {sequence} of producer {producer_id!r} is older than the last "
                f"{PRODUCER_WINDOW} sequences (latest {record.max_sequence})",
            )
        return None

    def record(
        self, producer_id: str, sequence: int, result: AnyPublishResult, now_ms: int
    ) -> None:
        record = self.records.get(producer_id)
        if record is None:
            record = ProducerRecord(sequence, now_ms)
        self._touch(producer_id, record, now_ms)
        results = record.results
        # Keep results sorted by sequence so that the stale ones are always at the front.
        if results and sequence < record.max_sequence:
            results[sequence] = result
            record.results = results = dict(sorted(results.items()))
        else:
            results[sequence] = result
            record.max_sequence = sequence
        oldest_kept = record.max_sequence - PRODUCER_WINDOW
        while True:
            first = next(iter(results))
            if first > oldest_kept:
                break
            del results[first]
        while len(self.records) > MAX_PRODUCERS:
            del self.records[next(iter(self.records))]

    def expire_idle(self, now_ms: int) -> None:
        records = self.records
        while records:
            oldest = next(iter(records))
            if now_ms - records[oldest].last_seen_ms <= PRODUCER_IDLE_MS:
                return
            del records[oldest]

    def _touch(self, producer_id: str, record: ProducerRecord, now_ms: int) -> None:
        self.records.pop(producer_id, None)
        self.records[producer_id] = record
        record.last_seen_ms = now_ms
