"""Demo traffic for `raftmq dev`: a topic exchange, three queues, a stream, a producer and
two consumers.

It exists so a fresh dev cluster's dashboard shows something moving: routed publishes,
acks, and a few rejected orders landing in a dead-letter queue. Every queue is bounded
(`max_length`, drop-head), so a demo left running for days cannot fill memory. Failures
(a leader change, a node killed on purpose) are reported at most every few seconds and
the demo moves on to the next node.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import secrets
import time
from collections.abc import Sequence

from raftmq.client import OutgoingMessage, RaftMQ, RaftMQError

__all__ = ["DEMO_EXCHANGE", "DEMO_QUEUES", "run_demo"]

DEMO_EXCHANGE = "demo.events"
DEMO_DLX = "demo.dlx"
ORDERS_QUEUE = "demo.orders"
AUDIT_QUEUE = "demo.audit"
DEAD_QUEUE = "demo.dead"
DEMO_QUEUES = (ORDERS_QUEUE, AUDIT_QUEUE, DEAD_QUEUE)
# Every event also lands in a stream, keyed by routing key, kept by count per partition.
ACTIVITY_STREAM = "demo.activity"
STREAM_MAX_MESSAGES = 10_000
QUEUE_MAX_LENGTH = 10_000
ROUTING_KEYS = ("orders.created", "orders.paid", "orders.shipped", "users.signup")
PUBLISH_INTERVAL_S = 0.25
MAX_BATCH = 5
CLAIM_WAIT_MS = 1_000
# One order in this many is rejected, to show dead-lettering on the dashboard.
REJECT_ONE_IN = 10
RETRY_PAUSE_S = 1.0
ERROR_REPORT_INTERVAL_S = 5.0

log = logging.getLogger(__name__)


class _Reporter:
    """Prints demo problems, at most one line per interval, so the terminal stays readable."""

    def __init__(self) -> None:
        self._last_report = 0.0
        self.suppressed = 0

    def problem(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_report < ERROR_REPORT_INTERVAL_S:
            self.suppressed += 1
            return
        more = f" (+{self.suppressed} more)" if self.suppressed else ""
        print(f"demo: {what} failed: {exc}{more}; retrying", flush=True)
        self._last_report, self.suppressed = now, 0


async def _declare_topology(client: RaftMQ) -> None:
    await client.declare_exchange(DEMO_EXCHANGE, "topic")
    await client.declare_exchange(DEMO_DLX, "fanout")
    await client.declare_queue(DEAD_QUEUE, max_length=QUEUE_MAX_LENGTH, overflow="drop-head")
    await client.declare_queue(ORDERS_QUEUE, max_length=QUEUE_MAX_LENGTH, overflow="drop-head",
                               delivery_limit=3, dead_letter_exchange=DEMO_DLX)
    await client.declare_queue(AUDIT_QUEUE, max_length=QUEUE_MAX_LENGTH, overflow="drop-head",
                               message_ttl_ms=60_000)
    await client.bind(DEMO_EXCHANGE, ORDERS_QUEUE, "orders.*")
    await client.bind(DEMO_EXCHANGE, AUDIT_QUEUE, "#")
    await client.bind(DEMO_DLX, DEAD_QUEUE)
    await client.declare_stream(ACTIVITY_STREAM, partitions=4, max_messages=STREAM_MAX_MESSAGES)
    await client.bind(DEMO_EXCHANGE, ACTIVITY_STREAM, "#")


async def _produce(client: RaftMQ, producer_id: str, sequence: itertools.count[int]) -> None:
    while True:
        batch = [
            OutgoingMessage(
                json.dumps({"n": random.randrange(1_000_000), "at_ms": int(time.time() * 1000)})
                .encode(),
                routing_key=random.choice(ROUTING_KEYS),
                headers={"source": "raftmq-dev-demo"},
            )
            for _ in range(random.randint(1, MAX_BATCH))
        ]
        # Idempotent: a retry of the same sequence after a leader change is not stored twice.
        await client.publish(DEMO_EXCHANGE, batch, producer_id=producer_id,
                             sequence=next(sequence))
        await asyncio.sleep(PUBLISH_INTERVAL_S)


async def _consume(client: RaftMQ, queue: str, *, reject_some: bool) -> None:
    while True:
        messages = await client.claim(queue, max_messages=20, lease_ms=10_000,
                                      wait_ms=CLAIM_WAIT_MS, consumer=f"demo-{queue}")
        rejected = [m for m in messages if reject_some and random.randrange(REJECT_ONE_IN) == 0]
        accepted = [m for m in messages if m not in rejected]
        if accepted:
            await client.ack(queue, accepted)
        if rejected:
            await client.nack(queue, rejected, requeue=False)


async def _run_against(url: str, producer_id: str, sequence: itertools.count[int]) -> None:
    async with RaftMQ(url) as client:
        await _declare_topology(client)
        await asyncio.gather(
            _produce(client, producer_id, sequence),
            _consume(client, ORDERS_QUEUE, reject_some=True),
            _consume(client, AUDIT_QUEUE, reject_some=False),
        )


async def run_demo(urls: Sequence[str]) -> None:
    """Run until cancelled, moving to the next node whenever the current one fails."""
    print(f"demo: publishing to topic exchange {DEMO_EXCHANGE!r}; queues "
          f"{', '.join(DEMO_QUEUES)}, stream {ACTIVITY_STREAM} (stop with Ctrl-C)", flush=True)
    reporter = _Reporter()
    producer_id = "dev-demo-" + secrets.token_hex(4)
    sequence = itertools.count(1)
    for url in itertools.cycle(urls):
        try:
            await _run_against(url, producer_id, sequence)
        except (RaftMQError, OSError) as exc:
            reporter.problem(f"traffic via {url}", exc)
        except Exception as exc:  # a demo bug must not end the demo silently, nor the cluster
            log.exception("demo traffic via %s failed", url)
            reporter.problem(f"traffic via {url}", exc)
        await asyncio.sleep(RETRY_PAUSE_S)
