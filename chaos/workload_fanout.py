"""The fan-out workload: every message published to fanout exchange `{prefix}.fan` must land
in each of its three bound queues `{prefix}.fan.0..2` (the checker follows each target
separately). One consumer per queue (pushed and pulled alternately) acks everything."""

from __future__ import annotations

from typing import Any

from raftmq.chaos.history import HistoryWriter
from raftmq.chaos.workload_base import QueueWorkloadBase
from raftmq.chaos.workload_common import WorkloadSettings, component_rng
from raftmq.chaos.workload_consume import ACK_ALL, QueueConsumerRunner
from raftmq.chaos.workload_publish import Item, PacedPublisher, Plan
from raftmq.client import Client, OutgoingMessage

__all__ = ["FANOUT_QUEUES", "FanoutWorkload"]

FANOUT_QUEUES = 3


class FanoutWorkload(QueueWorkloadBase):
    name = "fanout"

    def __init__(self, settings: WorkloadSettings, writer: HistoryWriter) -> None:
        super().__init__(settings, writer)
        self.exchange = settings.named("fan")
        self.queues = [settings.named(f"fan.{index}") for index in range(FANOUT_QUEUES)]

    async def setup(self, client: Client) -> None:
        await client.declare_exchange(self.exchange, "fanout")
        for queue in self.queues:
            await client.declare_queue(queue)
            await client.bind(self.exchange, queue)
        await self.require_empty(client)
        self.workload_event({
            "queues": {queue: {"dead_letter_queue": None, "delivery_limit": None, "message_ttl_ms": None}
                       for queue in self.queues},
            "streams": {},
            "exchanges": {self.exchange: {"type": "fanout", "queues": list(self.queues)}},
        })

    def drained_queues(self) -> list[str]:
        return list(self.queues)

    def make_publishers(self, client: Client) -> list[PacedPublisher]:
        settings = self.settings
        return [PacedPublisher(client=client, writer=self.writer, workload=self.name, index=index,
                               rate_per_s=settings.rate_per_producer_s,
                               message_bytes=settings.message_bytes, plan=self._plan(),
                               counters=self.counters, exchange=self.exchange)
                for index in range(settings.producers)]

    def _plan(self) -> Plan:
        routing: dict[str, Any] = {"exchange": self.exchange, "routing_key": "", "key": None,
                                   "targets": list(self.queues)}

        def plan(_publish_id: str, body: bytes) -> tuple[Item, dict[str, Any]]:
            return OutgoingMessage(body, routing_key=""), routing

        return plan

    def make_consumers(self, client: Client) -> list[QueueConsumerRunner]:
        return [QueueConsumerRunner(
                    client=client, writer=self.writer, queue=queue,
                    process=f"{self.name}-consumer-{index}", mode="push" if index % 2 == 0 else "pull",
                    mix=ACK_ALL, rng=component_rng(self.settings.seed, self.name, f"consumer-{index}"),
                    counters=self.counters)
                for index, queue in enumerate(self.queues)]
