"""`WorkloadBase`: the life cycle every workload shares, and `QueueWorkloadBase` for the
workloads whose consumers read queues (queue, fan-out).

`run` starts the consumers as background tasks, then publishes until `stop`; the consumers go
on after `run` returns (faults are healed between `run` and `drain`), and `drain` settles every
publish, lets the consumers finish the work, stops them and records how complete it was.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

from raftmq.chaos.history import HistoryWriter
from raftmq.chaos.workload_common import (
    Counters,
    TaskSet,
    WorkloadError,
    WorkloadSettings,
    queue_depth,
)
from raftmq.chaos.workload_consume import QueueConsumerRunner
from raftmq.chaos.workload_publish import PacedPublisher
from raftmq.client import Client

__all__ = ["STOP_GRACE_S", "QueueWorkloadBase", "WorkloadBase"]

# Consumers asked to stop finish the settle calls they are in (each bounded by the client's
# deadline); past this grace they are cancelled and their open calls recorded unknown.
STOP_GRACE_S = 15.0
_EMPTY_POLL_S = 0.25
# A drain ends only after this many empty answers in a row (every count read from the leader).
_EMPTY_CONFIRMATIONS = 2
_MIN_POLL_BUDGET_S = 1.0


class WorkloadBase:
    name = "base"

    def __init__(self, settings: WorkloadSettings, writer: HistoryWriter) -> None:
        self.settings = settings
        self.writer = writer
        self.counters: Counters = Counter()
        self._publishers: list[PacedPublisher] = []
        self._consumer_stop = asyncio.Event()
        self._consumers = TaskSet()
        # False once a drain gave up waiting for publish outcomes: a publish still in flight
        # may land after the consumers stopped, so no drain can be called complete.
        self._publishes_settled = True

    # ------------------------------------------------------------ to provide

    def make_publishers(self, client: Client) -> list[PacedPublisher]:
        raise NotImplementedError

    def start_consumers(self, client: Client, stop: asyncio.Event) -> None:
        """Spawn the consumer tasks (in `self._consumers`), running until `stop`."""
        raise NotImplementedError

    async def drain_consumers(self, client: Client, deadline_s: float) -> bool:
        """Consume until everything is read (by the loop time `deadline_s`), stop the
        consumers, write the `final` drain events; True when complete."""
        raise NotImplementedError

    # ------------------------------------------------------------ the protocol

    def workload_event(self, value: dict[str, Any]) -> None:
        self.writer.event(f"{self.name}-setup", "workload", {"idempotent": True, **value})

    async def run(self, client: Client, stop: asyncio.Event) -> None:
        try:
            self.start_consumers(client, self._consumer_stop)
            self._publishers = self.make_publishers(client)
            await asyncio.gather(*(publisher.run(stop) for publisher in self._publishers))
        except BaseException:
            await self.close()
            raise

    async def drain(self, client: Client, deadline_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        try:
            self._publishes_settled = await self._finish_publishers(deadline - loop.time())
            complete = await self.drain_consumers(client, deadline) and self._publishes_settled
        finally:
            await self.close()
        self._consumers.raise_failures()
        return complete

    async def close(self) -> None:
        self._consumer_stop.set()
        await self._consumers.cancel()

    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    # ------------------------------------------------------------ helpers

    async def _finish_publishers(self, timeout_s: float) -> bool:
        """Every publish has its outcome (True), or the time ran out first."""
        finishing = asyncio.gather(*(publisher.finish() for publisher in self._publishers))
        try:
            await asyncio.wait_for(finishing, max(0.0, timeout_s))
        except TimeoutError:
            self.counters["drain_publish_timeout"] += 1
            for publisher in self._publishers:
                publisher.detach()
            return False
        return True

    async def stop_consumers(self, grace_s: float = STOP_GRACE_S) -> None:
        self._consumer_stop.set()
        if not await self._consumers.wait(grace_s):
            await self._consumers.cancel()

    def write_drain(self, kind: str, name: str, complete: bool) -> None:
        self.writer.event(f"{self.name}-drain", "final",
                          {"kind": "drain", kind: name, "complete": complete and self._publishes_settled})


class QueueWorkloadBase(WorkloadBase):
    """Consumers are `QueueConsumerRunner`s; the drain acks everything until every queue is
    empty (ready, delayed and leased all 0, asked of the leader)."""

    def __init__(self, settings: WorkloadSettings, writer: HistoryWriter) -> None:
        super().__init__(settings, writer)
        self._runners: list[QueueConsumerRunner] = []

    def make_consumers(self, client: Client) -> list[QueueConsumerRunner]:
        raise NotImplementedError

    def drained_queues(self) -> Sequence[str]:
        raise NotImplementedError

    async def require_empty(self, client: Client) -> None:
        """Leftovers of an earlier run would read as unexpected deliveries: refuse them."""
        for queue in self.drained_queues():
            depth = await queue_depth(client, queue)
            if depth:
                raise WorkloadError(f"queue {queue} already holds {depth} messages; "
                                    f"use another prefix or a fresh cluster")

    def start_consumers(self, client: Client, stop: asyncio.Event) -> None:
        self._runners = self.make_consumers(client)
        for runner in self._runners:
            self._consumers.spawn(runner.run(stop), name=runner.process)

    async def drain_consumers(self, client: Client, deadline_s: float) -> bool:
        for runner in self._runners:
            runner.draining = True
        empty = await self._wait_empty(client, deadline_s)
        await self.stop_consumers()
        for queue in self.drained_queues():
            self.write_drain("queue", queue, empty)
        return empty

    async def _wait_empty(self, client: Client, deadline_s: float) -> bool:
        loop = asyncio.get_running_loop()
        confirmations = 0
        while loop.time() < deadline_s and confirmations < _EMPTY_CONFIRMATIONS:
            try:
                empty = await asyncio.wait_for(self._all_empty(client),
                                               max(_MIN_POLL_BUDGET_S, deadline_s - loop.time()))
            except TimeoutError:
                self.counters["drain_poll_failed"] += 1
                empty = False
            confirmations = confirmations + 1 if empty else 0
            if confirmations < _EMPTY_CONFIRMATIONS:
                # A poll with a deadline: the queues empty as the consumers ack.
                await asyncio.sleep(min(_EMPTY_POLL_S, max(0.0, deadline_s - loop.time())))
        return confirmations >= _EMPTY_CONFIRMATIONS

    async def _all_empty(self, client: Client) -> bool:
        try:
            await client.cluster_status()  # learn the current leader first
            for queue in self.drained_queues():
                if await queue_depth(client, queue):
                    return False
        except Exception:
            self.counters["drain_poll_failed"] += 1
            return False
        return True
