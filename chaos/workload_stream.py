"""The stream workload: keyed records into stream `{prefix}.s` (4 partitions), read by a consumer
group `{prefix}.g` of 2-3 members that commit as they go.

Keys come from a small set, so every key carries many records and the checker can hold each
key to one partition and each producer's records to increasing offsets there. At drain the
members commit and leave, then a reader outside the group reads every partition from its
earliest offset to the end the leader reports, so every stored record is seen whatever the
group committed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import quote

from raftmq.chaos.history import HistoryWriter
from raftmq.chaos.workload_base import WorkloadBase
from raftmq.chaos.workload_common import WorkloadError, WorkloadSettings, component_rng, leader_read
from raftmq.chaos.workload_publish import Item, PacedPublisher, Plan
from raftmq.chaos.workload_stream_read import GroupMemberRunner, read_partition_to
from raftmq.client import Client, OutgoingRecord

__all__ = ["KEYS", "PARTITIONS", "StreamWorkload"]

PARTITIONS = 4
KEYS = tuple(f"key-{index}" for index in range(8))
MIN_MEMBERS, MAX_MEMBERS = 2, 3
_END_POLL_S = 0.25


class StreamWorkload(WorkloadBase):
    name = "stream"

    def __init__(self, settings: WorkloadSettings, writer: HistoryWriter) -> None:
        super().__init__(settings, writer)
        self.stream = settings.named("s")
        self.group = settings.named("g")

    async def setup(self, client: Client) -> None:
        await client.declare_stream(self.stream, partitions=PARTITIONS)
        stored = sum(end - first for first, end in await self._offsets(client))
        if stored:
            raise WorkloadError(f"stream {self.stream} already holds {stored} records; "
                                f"use another prefix or a fresh cluster")
        self.workload_event({"queues": {}, "streams": {self.stream: {"partitions": PARTITIONS}},
                             "exchanges": {}})

    def make_publishers(self, client: Client) -> list[PacedPublisher]:
        settings = self.settings
        return [PacedPublisher(client=client, writer=self.writer, workload=self.name, index=index,
                               rate_per_s=settings.rate_per_producer_s,
                               message_bytes=settings.message_bytes, plan=self._plan(index),
                               counters=self.counters, stream=self.stream)
                for index in range(settings.producers)]

    def _plan(self, index: int) -> Plan:
        rng = component_rng(self.settings.seed, self.name, f"producer-{index}")

        def plan(_publish_id: str, body: bytes) -> tuple[Item, dict[str, Any]]:
            key = rng.choice(KEYS)
            return OutgoingRecord(body, key=key), {"exchange": "", "routing_key": "", "key": key,
                                                   "targets": [self.stream]}

        return plan

    def start_consumers(self, client: Client, stop: asyncio.Event) -> None:
        members = min(MAX_MEMBERS, max(MIN_MEMBERS, self.settings.consumers))
        for index in range(members):
            runner = GroupMemberRunner(client=client, writer=self.writer, stream=self.stream,
                                       group=self.group, process=f"{self.name}-consumer-{index}",
                                       counters=self.counters)
            self._consumers.spawn(runner.run(stop), name=runner.process)

    async def drain_consumers(self, client: Client, deadline_s: float) -> bool:
        await self.stop_consumers()
        loop = asyncio.get_running_loop()
        complete = False
        with contextlib.suppress(TimeoutError):
            complete = await asyncio.wait_for(self._read_to_end(client),
                                              max(0.0, deadline_s - loop.time()))
        self.write_drain("stream", self.stream, complete)
        return complete

    async def _read_to_end(self, client: Client) -> bool:
        offsets = await self._offsets_until_known(client)
        await asyncio.gather(*(
            read_partition_to(client, self.writer, process=f"{self.name}-drain-reader",
                              stream=self.stream, partition=partition, first_offset=first,
                              end_offset=end, counters=self.counters)
            for partition, (first, end) in enumerate(offsets)))
        return True

    async def _offsets_until_known(self, client: Client) -> list[tuple[int, int]]:
        """The leader's (first_offset, next_offset) per partition, asked until it answers
        (the caller's deadline bounds this)."""
        while True:
            try:
                await client.cluster_status()  # learn the current leader first
                return await self._offsets(client)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.counters["drain_poll_failed"] += 1
            await asyncio.sleep(_END_POLL_S)

    async def _offsets(self, client: Client) -> list[tuple[int, int]]:
        info = await leader_read(client, f"/v1/streams/{quote(self.stream, safe='')}")
        partitions = sorted(info["partitions"], key=lambda partition: int(partition["partition"]))
        return [(int(partition["first_offset"]), int(partition["next_offset"]))
                for partition in partitions]
