"""`StreamConsumer`: read a stream by offset, by time, or as a member of a consumer group.

Reads are HTTP long-poll fetches, one task per partition, into one bounded buffer that the
caller drains (`next_batch`, or `async for`). Positions live in the client, so any node can
serve the next fetch: when the node in use fails, the client's failover path moves to another
replica and the consumer carries on from the same offsets (a lagging replica answers with
less, never with a record that is not committed).

As a group member the consumer joins, heartbeats every third of its session timeout, and
follows the group's generations: on a new generation it stops its fetches, reports the new
assignment (`assignment`, and the `on_rebalance` callback) and restarts every assigned
partition from the group's committed offset. `commit()` commits the positions of the records
handed out so far, with the current generation; the broker refuses a commit from an old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from raftmq.client import errors
from raftmq.client.buffering import Handover
from raftmq.client.client import Client
from raftmq.client.stream_wire import StreamRecord

__all__ = ["Assignment", "StreamConsumer"]

EARLIEST = "earliest"
LATEST = "latest"


@dataclass(frozen=True)
class Assignment:
    generation: int
    partitions: tuple[int, ...]
    members: tuple[str, ...]


class StreamConsumer:
    def __init__(
        self, client: Client, stream: str, *, group: str | None = None,
        member: str | None = None, partitions: tuple[int, ...] | None = None,
        start: str | int = EARLIEST, start_timestamp_ms: int | None = None,
        session_timeout_ms: int = 10_000, max_buffered_records: int = 10_000,
        fetch_max_messages: int = 1000, wait_ms: int = 5_000,
        on_rebalance: Callable[[Assignment], Awaitable[None] | None] | None = None,
    ) -> None:
        """`start` ("earliest", "latest" or an offset) applies where no committed offset does;
        `start_timestamp_ms` starts at the first record stamped at or after it instead.
        Without `group`, `partitions` (default: all) are read directly."""
        self._client = client
        self.stream = stream
        self.group = group
        self.member = member or (f"member-{secrets.token_hex(6)}" if group else None)
        self._fixed_partitions = partitions
        self._start = start
        self._start_timestamp_ms = start_timestamp_ms
        self._session_timeout_ms = session_timeout_ms
        self._fetch_max = fetch_max_messages
        self._wait_ms = wait_ms
        self._on_rebalance = on_rebalance
        self._buffer: Handover[StreamRecord] = Handover(max_buffered_records)
        self._positions: dict[int, int] = {}  # next offset to hand out, per partition
        self._fetchers: dict[int, asyncio.Task[None]] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self.assignment: Assignment | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> StreamConsumer:
        if self.group is None:
            partitions = self._fixed_partitions
            if partitions is None:
                info = await self._client.request(
                    "GET", f"/v1/streams/{self.stream}", write=False, idempotent=True)
                partitions = tuple(range(len(info["partitions"])))
            await self._assign(Assignment(0, partitions, ()), committed={})
        else:
            await self._apply_assignment(await self._group_call("join", {
                "session_timeout_ms": self._session_timeout_ms}))
            self._heartbeat = asyncio.create_task(self._heartbeat_loop())
        return self

    async def close(self) -> None:
        """Stop reading; a group member leaves its group (its partitions move at once)."""
        await self._stop_fetchers()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self.group is not None:
            with contextlib.suppress(errors.RaftMQError):
                await self._group_call("leave", {})

    async def __aenter__(self) -> StreamConsumer:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ reading

    async def next_batch(self, max_records: int = 1000, timeout_s: float | None = None
                         ) -> list[StreamRecord]:
        """Records in partition order (across partitions, as they arrive); empty on timeout."""
        records = await self._buffer.take(max_records, timeout_s)
        for record in records:
            self._positions[record.partition] = record.offset + 1
        return records

    def __aiter__(self) -> StreamConsumer:
        return self

    async def __anext__(self) -> StreamRecord:
        batch = await self.next_batch(1)
        return batch[0]

    async def commit(self) -> None:
        """Commit the next offset of every assigned partition something was read from."""
        if self.group is None:
            raise errors.error_for(errors.INVALID_ARGUMENT, "commit needs a group", definite=True)
        assignment = self.assignment
        assert assignment is not None, "start() first"
        offsets = {str(p): o for p, o in self._positions.items() if p in assignment.partitions}
        if offsets:
            await self._group_call("commit", {"generation": assignment.generation,
                                              "offsets": offsets})

    # ------------------------------------------------------------ assignment

    async def _group_call(self, action: str, body: dict[str, object]) -> dict[str, Any]:
        return await self._client.request(
            "POST", f"/v1/streams/{self.stream}/groups/{self.group}/{action}",
            body={"member": self.member, **body}, write=True, idempotent=True)

    async def _heartbeat_loop(self) -> None:
        try:
            await self._heartbeats()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._fail(error)

    async def _heartbeats(self) -> None:
        period_s = self._session_timeout_ms / 3000.0
        while True:
            await asyncio.sleep(period_s)
            try:
                answer = await self._group_call("heartbeat", {})
            except errors.RaftMQError as error:
                if error.code != errors.UNKNOWN_MEMBER:
                    continue  # the next beat retries; the session outlasts two misses
                answer = await self._group_call("join", {
                    "session_timeout_ms": self._session_timeout_ms})
            if self.assignment is None or answer["generation"] != self.assignment.generation:
                await self._apply_assignment(answer)

    async def _apply_assignment(self, answer: dict[str, Any]) -> None:
        assignment = Assignment(answer["generation"], tuple(answer["partitions"]),
                                tuple(answer["members"]))
        committed = {int(p): o for p, o in answer["committed"].items()}
        await self._assign(assignment, committed)

    async def _assign(self, assignment: Assignment, committed: dict[int, int]) -> None:
        await self._stop_fetchers()
        # Buffered records are dropped and fetched again: for a partition kept across the
        # rebalance, reading resumes after the last record handed out; a partition that is new
        # here starts at the group's committed offset (its previous owner's progress).
        previous = set(self.assignment.partitions) if self.assignment is not None else set()
        self._buffer.drop_all()
        handed_out, self._positions = self._positions, {}
        self.assignment = assignment
        for partition in assignment.partitions:
            if partition in previous and partition in handed_out:
                position = handed_out[partition]
            elif partition in committed:
                position = committed[partition]
            else:
                position = await self._start_position(partition)
            self._positions[partition] = position
            self._fetchers[partition] = asyncio.create_task(self._fetch_loop(partition, position))
        if self._on_rebalance is not None:
            maybe = self._on_rebalance(assignment)
            if maybe is not None:
                await maybe

    async def _start_position(self, partition: int) -> int:
        params: dict[str, str] = {"max_messages": "1"}
        if self._start_timestamp_ms is not None:
            params["timestamp_ms"] = str(self._start_timestamp_ms)
        else:
            params["offset"] = str(self._start)
        answer = await self._fetch(partition, params)
        return int(answer["offset"])

    async def _stop_fetchers(self) -> None:
        fetchers, self._fetchers = self._fetchers, {}
        for task in fetchers.values():
            task.cancel()
        for task in fetchers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ------------------------------------------------------------ fetching

    async def _fetch(self, partition: int, params: dict[str, str]) -> dict[str, Any]:
        return await self._client.request(
            "GET", f"/v1/streams/{self.stream}/partitions/{partition}/messages",
            params=params, write=False, idempotent=True)

    async def _fetch_loop(self, partition: int, offset: int) -> None:
        try:
            while True:
                answer = await self._fetch(partition, {
                    "offset": str(offset), "max_messages": str(self._fetch_max),
                    "wait_ms": str(self._wait_ms)})
                for document in answer["messages"]:
                    await self._buffer.queue.put(StreamRecord.from_wire(partition, document))
                offset = int(answer["next_fetch_offset"])
        except asyncio.CancelledError:
            raise
        except Exception as error:  # out of range, stream deleted, deadline: the caller decides
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        self._buffer.fail(error)

