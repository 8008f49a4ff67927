"""Demo traffic for `raftmq dev`: a topic exchange, three queues, a stream, a producer and
two consumers.

It exists so a fresh dev cluster's dashboard shows something moving: routed publishes,
acks, and a few rejected orders landing in a dead-letter queue. Every queue is bounded
(`max_length`, drop-head), so a demo left running for days cannot fill memory. It runs on
the failover client (`raftmq.client`), so a leader change or a node killed on purpose is
ridden out by the client; what still fails is reported at most every few seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Sequence

from raftmq.client import (
    Client,
    OutgoingMessage,
    Producer,
    ProducerSettings,
    QueueConsumer,
    RaftMQError,
    RetryPolicy,
)

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


async def _declare_topology(client: Client) -> None:
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


def _event() -> OutgoingMessage:
    body = json.dumps({"n": random.randrange(1_000_000), "at_ms": int(time.time() * 1000)})
    return OutgoingMessage(body.encode(), routing_key=random.choice(ROUTING_KEYS),
                           headers={"source": "raftmq-dev-demo"})


async def _produce(producer: Producer, reporter: _Reporter) -> None:
    """A few events at a time; the producer batches them (idempotently: a retry after a
    leader change is not stored twice) and reports each one's outcome."""
    while True:
        futures = await producer.send_many([_event() for _ in range(random.randint(1, MAX_BATCH))])
        for outcome in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(outcome, BaseException):
                reporter.problem("a publish", outcome)
        await asyncio.sleep(PUBLISH_INTERVAL_S)


async def _consume(consumer: QueueConsumer, *, reject_some: bool, reporter: _Reporter) -> None:
    while True:
        try:
            messages = await consumer.next_batch(20, timeout_s=CLAIM_WAIT_MS / 1000)
            rejected = [m for m in messages
                        if reject_some and random.randrange(REJECT_ONE_IN) == 0]
            accepted = [m for m in messages if m not in rejected]
            if accepted:
                await consumer.ack(accepted)
            if rejected:
                await consumer.nack(rejected, requeue=False)
        except RaftMQError as exc:
            reporter.problem(f"consuming {consumer.queue}", exc)
            await asyncio.sleep(RETRY_PAUSE_S)


async def _run(client: Client, reporter: _Reporter) -> None:
    await _declare_topology(client)
    settings = ProducerSettings(linger_ms=20)
    async with Producer(client, exchange=DEMO_EXCHANGE, settings=settings) as producer, \
            QueueConsumer(client, ORDERS_QUEUE, prefetch=20, lease_ms=10_000) as orders, \
            QueueConsumer(client, AUDIT_QUEUE, prefetch=20, lease_ms=10_000) as audit:
        await asyncio.gather(
            _produce(producer, reporter),
            _consume(orders, reject_some=True, reporter=reporter),
            _consume(audit, reject_some=False, reporter=reporter),
        )


async def run_demo(urls: Sequence[str]) -> None:
    """Run until cancelled; the client fails over between the nodes by itself."""
    print(f"demo: publishing to topic exchange {DEMO_EXCHANGE!r}; queues "
          f"{', '.join(DEMO_QUEUES)}, stream {ACTIVITY_STREAM} (stop with Ctrl-C)", flush=True)
    reporter = _Reporter()
    retry = RetryPolicy(max_backoff_s=1.0, deadline_s=30.0)
    while True:
        try:
            async with Client.connect(list(urls), retry=retry) as client:
                await _run(client, reporter)
        except (RaftMQError, OSError) as exc:
            reporter.problem("demo traffic", exc)
        except Exception as exc:  # a demo bug must not end the demo silently, nor the cluster
            log.exception("demo traffic failed")
            reporter.problem("demo traffic", exc)
        await asyncio.sleep(RETRY_PAUSE_S)
