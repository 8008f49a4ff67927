"""Streams end to end on 3 real processes (fsync=always), through failures.

A keyed producer publishes through the leader with an idempotent producer id, retrying each
batch with the same sequence against the other nodes whenever an outcome is not a success.
Three members of one consumer group read from the two followers and commit after each fetch.
One member dies without leaving (its session runs out and its partitions move), and the
leader is `kill -9`ed in the middle of the run. At the end every confirmed message was read,
each (partition, offset) holds exactly one message (no duplicates from retries), order per
key held, the group committed everything, and all three replicas hold identical logs.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field

import aiohttp
import pytest

from tests.integration.cluster_harness import ClusterHarness
from tests.integration.conftest import ClusterFactory
from tests.integration.stream_http import CallFailed, StreamHttp

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

STREAM = "events"
GROUP = "billing"
PARTITIONS = 6
TOTAL = 3000
BATCH = 25
KEYS = 40
SESSION_MS = 1500
RETRYABLE = (CallFailed, aiohttp.ClientError, TimeoutError, OSError)


@dataclass
class Confirmed:
    # (partition, offset) -> body of every message whose publish was confirmed
    at: dict[tuple[int, int], bytes] = field(default_factory=dict)
    done: bool = False
    failovers: int = 0


def _body(key: str, number: int) -> bytes:
    return f"{key}:{number}".encode()


async def _produce(apis: list[StreamHttp], confirmed: Confirmed, halfway: asyncio.Event) -> None:
    """Batches in order; a batch is retried (same sequence) on any node until it succeeds."""
    counters: dict[str, int] = defaultdict(int)
    node = 0
    for sequence in range(1, TOTAL // BATCH + 1):
        bodies: list[bytes] = []
        batch: list[dict[str, object]] = []
        for index in range((sequence - 1) * BATCH, sequence * BATCH):
            key = f"k{index % KEYS}"
            bodies.append(_body(key, counters[key]))
            batch.append({"key": key, "body": bodies[-1]})
            counters[key] += 1
        deadline = time.monotonic() + 60.0
        while True:
            try:
                receipt = await apis[node].publish(STREAM, batch, "producer-1", sequence)
                break
            except RETRYABLE as error:
                assert time.monotonic() < deadline, f"batch {sequence} kept failing: {error!r}"
                node = (node + 1) % len(apis)
                confirmed.failovers += 1
                await asyncio.sleep(0.05)
        for body, partition, offset in zip(bodies, receipt["partitions"], receipt["offsets"],
                                            strict=True):
            confirmed.at[(partition, offset)] = body
        if sequence == TOTAL // BATCH // 2:
            halfway.set()
    confirmed.done = True


@dataclass
class Member:
    name: str
    api: StreamHttp
    # every record read: (partition, offset, body), duplicates included
    reads: list[tuple[int, int, bytes]]
    generation: int = -1
    positions: dict[int, int] = field(default_factory=dict)
    generations_seen: set[int] = field(default_factory=set)

    async def run(self) -> None:
        while True:
            try:
                await self._sync_assignment()
                read_any = False
                for partition in list(self.positions):
                    read_any |= await self._consume(partition)
                if not read_any:
                    await asyncio.sleep(0.05)
            except RETRYABLE:
                await asyncio.sleep(0.1)  # a failover or a rebalance: learn the state again

    async def _sync_assignment(self) -> None:
        body = {"member": self.name}
        try:
            assignment = await self.api.group_call(STREAM, GROUP, "heartbeat", body)
        except CallFailed as error:
            if error.code != "unknown_member":
                raise
            assignment = await self.api.group_call(
                STREAM, GROUP, "join", body | {"session_timeout_ms": SESSION_MS})
        if assignment["generation"] != self.generation:
            # A new generation: resume every assigned partition from its committed offset.
            self.generation = assignment["generation"]
            self.generations_seen.add(self.generation)
            committed = assignment["committed"]
            self.positions = {p: committed.get(str(p), 0) for p in assignment["partitions"]}

    async def _consume(self, partition: int) -> bool:
        fetched = await self.api.fetch(STREAM, partition, self.positions[partition],
                                       max_messages=200)
        messages = fetched["messages"]
        for message in messages:
            self.reads.append((partition, message["offset"], message["body"]))
        if not messages:
            return False
        next_offset = fetched["next_fetch_offset"]
        try:
            await self.api.group_call(STREAM, GROUP, "commit", {
                "member": self.name, "generation": self.generation,
                "offsets": {str(partition): next_offset}})
        except CallFailed as error:
            if error.code in ("stale_generation", "partition_not_assigned", "unknown_member"):
                self.generation = -1  # re-read the assignment; these reads may come again
                return True
            raise
        self.positions[partition] = next_offset
        return True


async def _wait(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _replica_logs(api: StreamHttp) -> dict[int, list[bytes]]:
    logs = {}
    for partition in range(PARTITIONS):
        bodies: list[bytes] = []
        while True:
            fetched = await api.fetch(STREAM, partition, len(bodies), max_messages=1000)
            if not fetched["messages"]:
                break
            bodies += [m["body"] for m in fetched["messages"]]
        logs[partition] = bodies
    return logs


async def test_group_reads_every_confirmed_message_once_through_failures(
    cluster_factory: ClusterFactory,
) -> None:
    harness: ClusterHarness = cluster_factory(3, fsync="always")
    harness.start()
    leader = harness.wait_for_leader()
    followers = [node_id for node_id in harness.nodes if node_id != leader]
    async with aiohttp.ClientSession() as session:
        apis = {node_id: StreamHttp(session, node.url) for node_id, node in harness.nodes.items()}
        await apis[leader].declare_stream(STREAM, partitions=PARTITIONS)
        confirmed = Confirmed()
        halfway = asyncio.Event()
        reads: list[tuple[int, int, bytes]] = []
        members = [Member(f"c{i}", apis[followers[i % 2]], reads) for i in range(3)]
        member_tasks = {m.name: asyncio.create_task(m.run()) for m in members}
        producer_order = [apis[leader], *(apis[f] for f in followers)]
        producer = asyncio.create_task(_produce(producer_order, confirmed, halfway))
        try:
            await _wait(lambda: len(confirmed.at) >= TOTAL // 4, 60, "a quarter published")
            member_tasks["c2"].cancel()  # dies without leaving: its session must run out
            await asyncio.wait_for(halfway.wait(), 60)
            await asyncio.to_thread(harness.kill, leader)
            await asyncio.wait_for(producer, 120)
            assert len(confirmed.at) == TOTAL
            expected = set(confirmed.at)
            await _wait(lambda: {(p, o) for p, o, _ in reads} >= expected, 90, "all read")
            survivors = [m for m in members if m.name != "c2"]
            committed = await _wait_committed(apis[followers[0]], confirmed)
        finally:
            for task in [*member_tasks.values(), producer]:
                task.cancel()
            await asyncio.gather(*member_tasks.values(), producer, return_exceptions=True)

        _check_reads(confirmed, reads)
        assert committed == _next_offsets(confirmed)
        assert all(len(m.generations_seen) >= 2 for m in survivors), "no rebalance was seen"
        assert confirmed.failovers > 0, "the producer never had to fail over"

        harness.start_node(leader)
        logs = [await _replica_logs(apis[f]) for f in followers]
        await _wait_replica(apis[leader], logs[0])
        assert logs[0] == logs[1] == await _replica_logs(apis[leader])


def _next_offsets(confirmed: Confirmed) -> dict[str, int]:
    ends: dict[str, int] = {}
    for partition, offset in confirmed.at:
        ends[str(partition)] = max(ends.get(str(partition), 0), offset + 1)
    return ends


async def _wait_committed(api: StreamHttp, confirmed: Confirmed) -> dict[str, int]:
    wanted = _next_offsets(confirmed)
    deadline = time.monotonic() + 60
    while True:
        group = await api.call("GET", f"/v1/streams/{STREAM}/groups/{GROUP}")
        if group["committed"] == wanted or time.monotonic() > deadline:
            return dict(group["committed"])
        await asyncio.sleep(0.1)


async def _wait_replica(api: StreamHttp, expected: dict[int, list[bytes]]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            info = await api.stream(STREAM)
            if [p["next_offset"] for p in info["partitions"]] == [len(expected[p])
                                                                   for p in range(PARTITIONS)]:
                return
        except RETRYABLE:
            pass
        assert time.monotonic() < deadline, "the restarted node never caught up"
        await asyncio.sleep(0.1)


def _check_reads(confirmed: Confirmed, reads: list[tuple[int, int, bytes]]) -> None:
    by_position: dict[tuple[int, int], bytes] = {}
    for partition, offset, body in reads:
        seen = by_position.setdefault((partition, offset), body)
        assert seen == body, f"({partition}, {offset}) read as {seen!r} and as {body!r}"
    assert by_position == confirmed.at, "reads differ from what was confirmed"
    # No duplicates from retried publishes: each message sits at exactly one position.
    assert len(set(by_position.values())) == len(by_position)
    per_key: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for (partition, offset), body in by_position.items():
        key, number = body.decode().split(":")
        per_key[key].append((partition, offset, int(number)))
    for key, positions in per_key.items():
        assert len({p for p, _, _ in positions}) == 1, f"key {key} spread over partitions"
        numbers = [n for _, _, n in sorted(positions)]
        assert numbers == sorted(numbers) == list(range(len(numbers))), f"order of {key} broken"
