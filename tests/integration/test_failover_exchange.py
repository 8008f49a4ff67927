"""The foundation's end-to-end proof on 3 real processes (fsync=always).

A topic exchange feeds several queues; 10,000 messages are published through one follower with
confirms (idempotent producer: every retry reuses its sequence number) while a consumer drains
two of the queues through the other follower; the leader is `kill -9`ed in the middle of both.
Then every confirmed message must have been delivered, none stored twice; and after killing all
three nodes and restarting them from their data dirs, every unconsumed confirmed message and the
dead-letter queue are still there.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest

from raftmq.client import RaftMQ
from raftmq.client.errors import RaftMQError
from raftmq.client.wire import Message, OutgoingMessage
from tests.integration.cluster_harness import ClusterHarness
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TOTAL = 10_000
BATCH = 50
POISON = 20
EXCHANGE = "orders"


async def _retry(what: str, call, deadline_s: float = 60.0):  # type: ignore[no-untyped-def]
    """Retry an idempotent call until it succeeds; any error may be a failover in progress."""
    deadline = time.monotonic() + deadline_s
    delay = 0.02
    while True:
        try:
            return await call()
        except (TimeoutError, RaftMQError, OSError) as error:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} kept failing: {error!r}") from error
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


async def _declare_topology(client: RaftMQ) -> None:
    await client.declare_exchange(EXCHANGE, "topic")
    await client.declare_exchange("dlx", "fanout")
    await client.declare_queue("dead")
    await client.bind("dlx", "dead")
    await client.declare_queue("eu")
    await client.declare_queue("us")
    await client.declare_queue("audit")            # never consumed: must survive the restart
    await client.declare_queue("poison", delivery_limit=2, dead_letter_exchange="dlx")
    await client.bind(EXCHANGE, "eu", "order.eu.*")
    await client.bind(EXCHANGE, "us", "order.us.*")
    await client.bind(EXCHANGE, "audit", "order.#")
    await client.bind(EXCHANGE, "poison", "order.poison")


def _batch(sequence: int) -> list[OutgoingMessage]:
    first = sequence * BATCH
    return [OutgoingMessage(body=b"m-%06d" % n,
                            routing_key="order.eu.x" if n % 2 else "order.us.y")
            for n in range(first, first + BATCH)]


async def _publish_all(url: str, confirmed: set[bytes], kill_after: asyncio.Event) -> None:
    async with RaftMQ(url, timeout_s=5.0) as client:
        for sequence in range(TOTAL // BATCH):
            batch = _batch(sequence)

            async def send(batch: list[OutgoingMessage] = batch, sequence: int = sequence) -> object:
                return await client.publish(EXCHANGE, batch, producer_id="it-producer",
                                            sequence=sequence)

            receipt = await _retry(f"publish seq {sequence}", send)
            assert receipt.accepted == BATCH or receipt.duplicate, receipt
            confirmed.update(m.body for m in batch)
            if len(confirmed) >= TOTAL * 0.3:
                kill_after.set()
        poison = [OutgoingMessage(body=b"p-%02d" % i, routing_key="order.poison") for i in range(POISON)]
        await _retry("publish poison", lambda: client.publish(
            EXCHANGE, poison, producer_id="it-producer", sequence=TOTAL // BATCH))


async def _consume(url: str, deliveries: dict[bytes, set[int]], done: asyncio.Event) -> None:
    async with RaftMQ(url, timeout_s=5.0) as client:
        while not done.is_set() or not _drained(deliveries):
            for queue in ("eu", "us"):
                try:
                    messages: list[Message] = await client.claim(
                        queue, max_messages=200, lease_ms=3_000, wait_ms=200, consumer="it")
                except (TimeoutError, RaftMQError, OSError):
                    await asyncio.sleep(0.05)  # a lost claim's messages come back after the lease
                    continue
                for message in messages:
                    deliveries[message.body].add(message.message_id)
                if messages:
                    await _retry("ack", lambda m=messages, q=queue: client.ack(q, m))
            if done.is_set() and time.monotonic() > getattr(done, "deadline", float("inf")):
                return


def _drained(deliveries: dict[bytes, set[int]]) -> bool:
    return len(deliveries) >= TOTAL


async def _reject_poison(url: str) -> None:
    """Nack every poison message until the delivery limit dead-letters all of them."""
    async with RaftMQ(url, timeout_s=5.0) as client:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = await _retry("queue info", lambda: client.queue_info("dead"))
            if info["ready"] >= POISON:
                return
            messages = await _retry("claim poison", lambda: client.claim(
                "poison", max_messages=POISON, lease_ms=3_000, wait_ms=200))
            if messages:
                await _retry("nack", lambda m=messages: client.nack("poison", m, requeue=True))
        raise AssertionError("poison messages were not dead-lettered in time")


async def _drain_queue(url: str, queue: str) -> list[Message]:
    async with RaftMQ(url, timeout_s=5.0) as client:
        seen: list[Message] = []
        while True:
            batch = await _retry("claim", lambda: client.claim(queue, max_messages=1000, lease_ms=60_000))
            if not batch:
                return seen
            seen.extend(batch)


def test_publish_consume_through_followers_survives_leader_kill_and_full_restart(
        cluster_factory: ClusterFactory) -> None:
    harness: ClusterHarness = cluster_factory(3, fsync="always")
    harness.start()
    leader = harness.wait_for_leader(timeout_s=30.0)
    publisher_node, consumer_node = [n for n in harness.nodes if n != leader]
    urls = {node_id: node.url for node_id, node in harness.nodes.items()}
    confirmed: set[bytes] = set()
    deliveries: dict[bytes, set[int]] = defaultdict(set)

    async def scenario() -> None:
        async with RaftMQ(urls[publisher_node], timeout_s=5.0) as admin:
            await _retry("declare", lambda: _declare_topology(admin))
        kill_now = asyncio.Event()
        publishing_done = asyncio.Event()

        async def killer() -> None:
            await kill_now.wait()
            await asyncio.to_thread(harness.kill, leader)
            await asyncio.to_thread(harness.wait_for_leader, 30.0, [leader])
            await asyncio.to_thread(harness.start_node, leader)

        async def publisher() -> None:
            await _publish_all(urls[publisher_node], confirmed, kill_now)
            publishing_done.deadline = time.monotonic() + 60  # type: ignore[attr-defined]
            publishing_done.set()

        await asyncio.gather(publisher(), killer(),
                             _consume(urls[consumer_node], deliveries, publishing_done))
        await _reject_poison(urls[consumer_node])

    asyncio.run(scenario())

    assert len(confirmed) == TOTAL
    lost = confirmed - set(deliveries)
    assert not lost, f"{len(lost)} confirmed messages never delivered, e.g. {sorted(lost)[:5]}"
    assert set(deliveries) <= confirmed, "delivered a message that was never published"
    # A retried publish stored twice would show up as a second message id for the same body.
    stored_twice = {body: ids for body, ids in deliveries.items() if len(ids) > 1}
    assert not stored_twice, f"retried batches made duplicates: {list(stored_twice.items())[:5]}"

    # Crash the whole cluster and bring it back from the data dirs.
    for node_id in list(harness.nodes):
        harness.kill(node_id)
    for node_id in harness.nodes:
        harness.start_node(node_id)
    harness.wait_for_leader(timeout_s=30.0)
    harness.wait_ready(timeout_s=30.0)

    audit = asyncio.run(_drain_queue(urls[publisher_node], "audit"))
    audit_bodies = [m.body for m in audit]
    assert len(audit_bodies) == len(set(audit_bodies)), "a message was stored twice in audit"
    assert set(audit_bodies) == confirmed | {b"p-%02d" % i for i in range(POISON)}
    dead = asyncio.run(_drain_queue(urls[consumer_node], "dead"))
    assert sorted(m.body for m in dead) == [b"p-%02d" % i for i in range(POISON)]
    assert all(m.headers.get("x-death-reason") == "delivery_limit" for m in dead)
    assert all(m.headers.get("x-death-queue") == "poison" for m in dead)
