"""The client library keeps working while nodes die (3 real processes, fsync=always).

1. An idempotent producer sends 20,000 messages while the leader is `kill -9`ed twice (and
   restarted): nothing lost, nothing stored twice, and every message's reported outcome is
   true: a success is stored exactly once, a definite failure not at all, an unknown outcome
   at most once.
2. A push consumer whose node is killed resumes on another node within 3 s, and the run ends
   with every message acked.
3. A stream group consumer survives the loss of the node it reads from.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from raftmq.client import errors
from raftmq.client.client import Client
from raftmq.client.producer import AppendedRecord, Producer, ProducerSettings, PublishedMessage
from raftmq.client.queue_consumer import QueueConsumer
from raftmq.client.retry import RetryPolicy
from raftmq.client.stream_consumer import StreamConsumer
from raftmq.client.stream_wire import OutgoingRecord, StreamRecord
from raftmq.client.wire import OutgoingMessage
from tests.integration.cluster_harness import ClusterHarness
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

RETRY = RetryPolicy(initial_backoff_s=0.02, max_backoff_s=0.5, deadline_s=30.0)


def _node_of(harness: ClusterHarness, url: str) -> str:
    return next(node_id for node_id, node in harness.nodes.items() if node.url == url)


async def _kill_leader_and_restart(harness: ClusterHarness) -> None:
    leader = await asyncio.to_thread(harness.wait_for_leader)
    await asyncio.to_thread(harness.kill, leader)
    await asyncio.to_thread(harness.start_node, leader)


async def _drain(client: Client, queue: str) -> Counter[bytes]:
    """Every body in the queue, claimed with a long lease (nothing comes back meanwhile)."""
    bodies: Counter[bytes] = Counter()
    while True:
        answer = await client.request("POST", f"/v1/queues/{queue}/claim",
                                      body={"max_messages": 1000, "lease_ms": 600_000},
                                      write=True, idempotent=True)
        if not answer["messages"]:
            return bodies
        bodies.update(message["body"] for message in answer["messages"])


async def test_idempotent_producer_through_two_leader_kills(
    cluster_factory: ClusterFactory,
) -> None:
    harness = cluster_factory(3, fsync="always")
    harness.start()
    harness.wait_for_leader()
    total = 20_000
    seeds = [node.url for node in harness.nodes.values()]
    async with await Client.connect(seeds, retry=RETRY) as client:
        await client.declare_queue("orders")
        settings = ProducerSettings(linger_ms=2, max_batch_messages=200, deadline_s=30.0)
        outcomes: dict[bytes, object] = {}
        async with Producer(client, exchange="", settings=settings) as producer:
            futures = []
            for i in range(total):
                body = b"m%06d" % i
                futures.append((body, await producer.send(OutgoingMessage(body, "orders"))))
                if i in (total // 3, 2 * total // 3):
                    await _kill_leader_and_restart(harness)
            for body, future in futures:
                try:
                    outcomes[body] = await future
                except errors.RaftMQError as error:
                    outcomes[body] = error
        stored = await _drain(client, "orders")
    succeeded = [b for b, o in outcomes.items() if isinstance(o, PublishedMessage)]
    definite = [b for b, o in outcomes.items() if isinstance(o, errors.RaftMQError) and o.definite]
    unknown = [b for b, o in outcomes.items()
               if isinstance(o, errors.RaftMQError) and not o.definite]
    assert all(o.status == "accepted" for o in outcomes.values()
               if isinstance(o, PublishedMessage))
    assert all(stored[b] == 1 for b in succeeded), "a confirmed message was lost or duplicated"
    assert all(stored[b] == 0 for b in definite), "a definite failure was stored"
    assert all(stored[b] <= 1 for b in unknown), "an unknown outcome was stored twice"
    assert set(stored) <= set(outcomes), "the queue holds a message nobody sent"
    # With idempotent retries inside a 30 s deadline, two elections cost no message.
    assert len(succeeded) == total, (len(definite), len(unknown))


async def test_push_consumer_resumes_on_another_node(cluster_factory: ClusterFactory) -> None:
    harness = cluster_factory(3, fsync="always")
    harness.start()
    harness.wait_for_leader()
    total = 2_000
    seeds = [node.url for node in harness.nodes.values()]
    async with await Client.connect(seeds, retry=RETRY) as client:
        await client.declare_queue("jobs")
        async with Producer(client, exchange="") as producer:
            futures = [await producer.send(OutgoingMessage(b"j%05d" % i, "jobs"))
                       for i in range(total)]
            await asyncio.gather(*futures)
        acked: set[bytes] = set()
        gaps: list[float] = []
        killed_at: float | None = None
        async with QueueConsumer(client, "jobs", prefetch=50, lease_ms=3_000) as consumer:
            deadline = time.monotonic() + 90
            while len(acked) < total:
                assert time.monotonic() < deadline, f"acked {len(acked)} of {total}"
                batch = await consumer.next_batch(50, timeout_s=1.0)
                if batch and killed_at is not None:
                    gaps.append(time.monotonic() - killed_at)
                    killed_at = None
                if batch:
                    receipt = await consumer.ack(batch)
                    failed = {message_id for message_id, _ in receipt.failures}
                    acked |= {m.body for m in batch if m.message_id not in failed}
                if len(acked) >= total // 3 and not gaps and killed_at is None:
                    assert consumer.node_url is not None
                    await asyncio.to_thread(harness.kill, _node_of(harness, consumer.node_url))
                    killed_at = time.monotonic()
            assert consumer.reconnects >= 1
        assert gaps and gaps[0] < 3.0, f"the consumer resumed after {gaps} s"
        info = await client.queue_info("jobs")
        assert (info["ready"], info["leased"]) == (0, 0)


async def test_stream_group_consumer_survives_loss_of_its_node(
    cluster_factory: ClusterFactory,
) -> None:
    harness = cluster_factory(3, fsync="always")
    harness.start()
    leader = harness.wait_for_leader()
    follower = next(node_id for node_id in harness.nodes if node_id != leader)
    # The follower first: reads go to the first healthy node, so that is the one it reads from.
    seeds = [harness.nodes[follower].url,
             *(node.url for node_id, node in harness.nodes.items() if node_id != follower)]
    async with await Client.connect(seeds, retry=RETRY) as client:
        await client.declare_stream("clicks", partitions=3)
        async with Producer(client, stream="clicks") as producer:
            first = [await producer.send(OutgoingRecord(b"a%04d" % i, key=f"u{i % 7}"))
                     for i in range(600)]
            await asyncio.gather(*first)
            consumer = await StreamConsumer(client, "clicks", group="billing", member="m1",
                                            wait_ms=500, session_timeout_ms=6_000).start()
            try:
                read = await _read(consumer, 300)
                await consumer.commit()
                await asyncio.to_thread(harness.kill, follower)
                second = [await producer.send(OutgoingRecord(b"b%04d" % i, key=f"u{i % 7}"))
                          for i in range(300)]
                outcomes = await asyncio.gather(*second)
                assert all(isinstance(o, AppendedRecord) for o in outcomes)
                read += await _read(consumer, 900 - len(read))
                await consumer.commit()
            finally:
                await consumer.close()
    bodies = Counter(record.body for record in read)
    assert set(bodies) == {b"a%04d" % i for i in range(600)} | {b"b%04d" % i for i in range(300)}
    assert max(bodies.values()) == 1


async def _read(consumer: StreamConsumer, count: int) -> list[StreamRecord]:
    records: list[StreamRecord] = []
    deadline = time.monotonic() + 60
    while len(records) < count:
        assert time.monotonic() < deadline, f"read {len(records)} of {count}"
        records += await consumer.next_batch(timeout_s=1.0)
    return records
