"""Stream readers that record what they read: a consumer-group member that commits, and the
drain reader that reads every partition from the earliest offset to its end.

Commits: `StreamConsumer.commit()` commits the next offset of every assigned partition. The
member records a `commit` (one per partition, invoke then completion, in the same order) for
the partitions whose offset it knows for sure: those it read from since the assignment it was
last told about (`on_rebalance`). Partitions with nothing read since are committed too, at the
offset the member started them from, which the client does not expose: those are not recorded.
No commit is made while a rebalance is under way (the member's assignment is newer than the
last one reported), when the client's positions may be half rebuilt.
"""

from __future__ import annotations

import asyncio
from typing import Any

from raftmq.chaos.history import HistoryWriter
from raftmq.chaos.workload_common import Counters, error_code, id_from_body, is_definite, wait_event
from raftmq.chaos.workload_consume import ConsumerFailed
from raftmq.client import Assignment, Client, StreamConsumer, StreamRecord

__all__ = ["DRAIN_READER", "GroupMemberRunner", "read_partition_to"]

DRAIN_READER = "drain-reader"  # the `consumer` of the drain reader's reads (contract)
SESSION_TIMEOUT_MS = 10_000
COMMIT_INTERVAL_S = 1.0
_MAX_BATCH = 500
_TAKE_TIMEOUT_S = 0.25
_RESTART_PAUSE_S = (0.1, 0.25, 0.5, 1.0)


def record_read(writer: HistoryWriter, process: str, consumer: str, group: str | None,
                stream: str, record: StreamRecord) -> None:
    writer.event(process, "read", {
        "stream": stream, "partition": record.partition, "offset": record.offset,
        "id": id_from_body(record.body), "key": record.key, "consumer": consumer, "group": group})


async def _take(reader: StreamConsumer, timeout_s: float) -> list[StreamRecord]:
    try:
        return await reader.next_batch(_MAX_BATCH, timeout_s=timeout_s)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        raise ConsumerFailed(error_code(error)) from error


async def _start(reader: StreamConsumer) -> None:
    try:
        await reader.start()
    except asyncio.CancelledError:
        raise
    except Exception as error:
        raise ConsumerFailed(error_code(error)) from error


class GroupMemberRunner:
    def __init__(self, *, client: Client, writer: HistoryWriter, stream: str, group: str,
                 process: str, counters: Counters) -> None:
        self.process = process
        self._client = client
        self._writer = writer
        self._stream = stream
        self._group = group
        self._counters = counters
        # Next offset per partition, from the records read since the last reported assignment.
        self._positions: dict[int, int] = {}
        self._reported_generation: int | None = None

    async def run(self, stop: asyncio.Event) -> None:
        failures_in_row = 0
        while not stop.is_set():
            self._positions, self._reported_generation = {}, None
            member = StreamConsumer(self._client, self._stream, group=self._group, member=self.process,
                                    session_timeout_ms=SESSION_TIMEOUT_MS, on_rebalance=self._rebalanced)
            try:
                await _start(member)
                await self._consume(member, stop)
                await self._commit(member)  # leave with the progress committed
                failures_in_row = 0
            except ConsumerFailed:
                self._counters["consumer_restarts"] += 1
                failures_in_row += 1
            finally:
                await member.close()
            await wait_event(stop, _RESTART_PAUSE_S[min(failures_in_row, len(_RESTART_PAUSE_S) - 1)])

    def _rebalanced(self, assignment: Assignment) -> None:
        # Runs inside the client once the new positions are all set: a kept partition resumes
        # after the last record handed out (our position too); others start elsewhere.
        self._reported_generation = assignment.generation
        self._positions = {partition: offset for partition, offset in self._positions.items()
                           if partition in assignment.partitions}
        self._counters["rebalances"] += 1

    async def _consume(self, member: StreamConsumer, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        last_commit_s = loop.time()
        while not stop.is_set():
            for record in await _take(member, _TAKE_TIMEOUT_S):
                record_read(self._writer, self.process, self.process, self._group, self._stream, record)
                self._positions[record.partition] = record.offset + 1
                self._counters["read"] += 1
            if loop.time() - last_commit_s >= COMMIT_INTERVAL_S:
                await self._commit(member)
                last_commit_s = loop.time()

    async def _commit(self, member: StreamConsumer) -> None:
        assignment = member.assignment
        if assignment is None or assignment.generation != self._reported_generation:
            return
        offsets = sorted((partition, offset) for partition, offset in self._positions.items()
                         if partition in assignment.partitions)
        if not offsets:
            return
        values: list[dict[str, Any]] = [
            {"stream": self._stream, "group": self._group, "partition": partition, "offset": offset}
            for partition, offset in offsets]
        for value in values:
            self._writer.invoke(self.process, "commit", value)
        # No await between reading the positions above and `commit` reading its own.
        try:
            await member.commit()
        except asyncio.CancelledError:
            self._complete(values, "unknown", "cancelled")
            raise
        except Exception as error:
            self._complete(values, "fail" if is_definite(error) else "unknown", error_code(error))
        else:
            self._complete(values, "ok", None)

    def _complete(self, values: list[dict[str, Any]], kind: str, code: str | None) -> None:
        record = {"ok": self._writer.ok, "fail": self._writer.fail, "unknown": self._writer.unknown}[kind]
        for value in values:
            record(self.process, "commit", value if code is None else {**value, "error": code})
        self._counters[f"commit_{kind}"] += len(values)


async def read_partition_to(client: Client, writer: HistoryWriter, *, process: str, stream: str,
                            partition: int, first_offset: int, end_offset: int,
                            counters: Counters) -> None:
    """Read one partition from `first_offset` (its earliest) until `end_offset`, recording every
    read (consumer "drain-reader", no group); a failed reader is made again from where it was.
    Runs until done: the caller bounds it with a deadline."""
    position = first_offset
    failures_in_row = 0
    while position < end_offset:
        reader = StreamConsumer(client, stream, partitions=(partition,), start=position)
        try:
            await _start(reader)
            while position < end_offset:
                for record in await _take(reader, 0.5):
                    record_read(writer, process, DRAIN_READER, None, stream, record)
                    position = record.offset + 1
                    counters["drain_read"] += 1
            failures_in_row = 0
        except ConsumerFailed:
            counters["drain_reader_restarts"] += 1
            failures_in_row += 1
        finally:
            await reader.close()
        if position < end_offset:
            await asyncio.sleep(_RESTART_PAUSE_S[min(failures_in_row, len(_RESTART_PAUSE_S) - 1)])
