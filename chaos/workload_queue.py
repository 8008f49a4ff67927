"""The queue workload: competing consumers on one queue with every way a message can leave it.

Topology: queue `{prefix}.q` (delivery limit 3, dead-letter exchange `{prefix}.dlx`, a fanout
bound to queue `{prefix}.dlq`). Producers publish through the default exchange; a seeded
fraction of messages carry a short TTL, so some expire into the dead-letter queue (reason
`expired`). Consumers, half pushed over the WebSocket and half pulling, ack most deliveries,
nack some with requeue (redelivered), reject some (dead-lettered, reason `rejected`) and
abandon some under a short lease (redelivered by the broker; three deliveries without an ack
dead-letter a message, reason `delivery_limit`). One consumer acks everything in the
dead-letter queue.
"""

from __future__ import annotations

from typing import Any

from raftmq.chaos.history import HistoryWriter
from raftmq.chaos.workload_base import QueueWorkloadBase
from raftmq.chaos.workload_common import WorkloadSettings, component_rng
from raftmq.chaos.workload_consume import ACK_ALL, QueueConsumerRunner, SettleMix
from raftmq.chaos.workload_publish import Item, PacedPublisher, Plan
from raftmq.client import Client, OutgoingMessage

__all__ = ["DEFAULT_MIX", "DELIVERY_LIMIT", "QueueWorkload"]

DELIVERY_LIMIT = 3
DEFAULT_MIX = SettleMix(requeue=0.08, reject=0.05, abandon=0.04, abandon_lease_ms=300)
TTL_FRACTION = 0.06
# Short enough that a message waiting its turn often expires before a claim.
TTL_RANGE_MS = (1, 20)


class QueueWorkload(QueueWorkloadBase):
    name = "queue"

    def __init__(self, settings: WorkloadSettings, writer: HistoryWriter, *,
                 mix: SettleMix = DEFAULT_MIX) -> None:
        super().__init__(settings, writer)
        self.queue = settings.named("q")
        self.dead_letter_exchange = settings.named("dlx")
        self.dead_letter_queue = settings.named("dlq")
        self.mix = mix

    async def setup(self, client: Client) -> None:
        await client.declare_exchange(self.dead_letter_exchange, "fanout")
        await client.declare_queue(self.dead_letter_queue)
        await client.bind(self.dead_letter_exchange, self.dead_letter_queue)
        await client.declare_queue(self.queue, delivery_limit=DELIVERY_LIMIT,
                                   dead_letter_exchange=self.dead_letter_exchange)
        await self.require_empty(client)
        self.workload_event({
            "queues": {
                self.queue: {"dead_letter_queue": self.dead_letter_queue,
                             "delivery_limit": DELIVERY_LIMIT, "message_ttl_ms": None},
                self.dead_letter_queue: {"dead_letter_queue": None, "delivery_limit": None,
                                         "message_ttl_ms": None},
            },
            "streams": {},
            "exchanges": {self.dead_letter_exchange: {"type": "fanout",
                                                      "queues": [self.dead_letter_queue]}},
        })

    def drained_queues(self) -> list[str]:
        return [self.queue, self.dead_letter_queue]

    def make_publishers(self, client: Client) -> list[PacedPublisher]:
        settings = self.settings
        return [PacedPublisher(client=client, writer=self.writer, workload=self.name, index=index,
                               rate_per_s=settings.rate_per_producer_s,
                               message_bytes=settings.message_bytes, plan=self._plan(index),
                               counters=self.counters, exchange="")
                for index in range(settings.producers)]

    def _plan(self, index: int) -> Plan:
        rng = component_rng(self.settings.seed, self.name, f"producer-{index}")
        routing: dict[str, Any] = {"exchange": "", "routing_key": self.queue, "key": None,
                                   "targets": [self.queue]}

        def plan(_publish_id: str, body: bytes) -> tuple[Item, dict[str, Any]]:
            if rng.random() < TTL_FRACTION:
                ttl_ms = rng.randint(*TTL_RANGE_MS)
                item = OutgoingMessage(body, routing_key=self.queue, ttl_ms=ttl_ms)
                return item, {**routing, "ttl_ms": ttl_ms}
            return OutgoingMessage(body, routing_key=self.queue), routing

        return plan

    def make_consumers(self, client: Client) -> list[QueueConsumerRunner]:
        settings = self.settings
        runners = [
            QueueConsumerRunner(
                client=client, writer=self.writer, queue=self.queue,
                process=f"{self.name}-consumer-{index}", mode="push" if index % 2 == 0 else "pull",
                mix=self.mix, rng=component_rng(settings.seed, self.name, f"consumer-{index}"),
                counters=self.counters)
            for index in range(settings.consumers)]
        runners.append(QueueConsumerRunner(
            client=client, writer=self.writer, queue=self.dead_letter_queue,
            process=f"{self.name}-dlq-consumer", mode="push", mix=ACK_ALL,
            rng=component_rng(settings.seed, self.name, "dlq-consumer"), counters=self.counters))
        return runners
