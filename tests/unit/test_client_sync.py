"""SyncClient's producer and consumers against a real broker: the same surface, blocking.

The broker runs on the test's event loop, so each blocking scenario runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

from raftmq.client import (
    Assignment,
    Message,
    NotFoundError,
    OutgoingMessage,
    OutgoingRecord,
    PublishedMessage,
    RetryPolicy,
    SyncClient,
)
from raftmq.client.producer import AppendedRecord, ProducerSettings
from tests.unit.test_api_fixtures import MODULE_LOOP, Broker, broker, unique

__all__ = ["broker"]

pytestmark = MODULE_LOOP

FAST = RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.05, deadline_s=5.0)


async def test_sync_producer_and_pull_consumer(broker: Broker) -> None:
    queue = unique("q")

    def use() -> tuple[list[str], list[int], int]:
        with SyncClient.connect(broker.url, retry=FAST) as client:
            client.declare_queue(queue)
            with client.producer(exchange="", settings=ProducerSettings(linger_ms=1)) as producer:
                futures = producer.send_many(
                    [OutgoingMessage(f"m{i}".encode(), routing_key=queue) for i in range(50)])
                one = producer.publish(OutgoingMessage(b"last", routing_key=queue))
                assert isinstance(one, PublishedMessage) and one.status == "accepted"
                outcomes = [future.result(timeout=10) for future in futures]
                assert all(isinstance(o, PublishedMessage) and o.status == "accepted"
                           for o in outcomes)
                assert producer.unsettled == 0
            with client.queue_consumer(queue, mode="pull", prefetch=100, wait_ms=200) as consumer:
                received: list[Message] = []
                while len(received) < 51:
                    received += consumer.next_batch(100, timeout_s=5)
                # Nack two for redelivery, ack the rest, then take the two again.
                consumer.ack(received[2:])
                consumer.nack(received[:2], requeue=True)
                again: list[Message] = []
                while len(again) < 2:
                    again += consumer.next_batch(10, timeout_s=5)
                consumer.extend(again, 60_000)
                consumer.ack(again)
            bodies = [m.body.decode() for m in received]
            return bodies, [m.delivery_count for m in again], client.queue_info(queue)["ready"]

    bodies, counts, ready = await asyncio.to_thread(use)
    assert bodies == [f"m{i}" for i in range(50)] + ["last"]
    assert counts == [2, 2]
    assert ready == 0


async def test_sync_push_consumer_iterates_and_acks(broker: Broker) -> None:
    queue = unique("q")

    def use() -> list[bytes]:
        with SyncClient.connect(broker.url, retry=FAST) as client:
            client.declare_queue(queue)
            producer = client.producer(exchange="")
            for future in producer.send_many(
                    [OutgoingMessage(bytes([i]), routing_key=queue) for i in range(20)]):
                future.result(timeout=10)
            producer.close()
            seen = []
            with client.queue_consumer(queue, prefetch=5) as consumer:
                for message in consumer:
                    consumer.ack([message])
                    seen.append(message.body)
                    if len(seen) == 20:
                        break
            return seen

    assert await asyncio.to_thread(use) == [bytes([i]) for i in range(20)]


async def test_sync_stream_producer_and_group_consumer(broker: Broker) -> None:
    stream = unique("s")
    rebalances: list[tuple[Assignment, str]] = []

    def use() -> tuple[list[tuple[int, int]], list[str], dict[str, object]]:
        with SyncClient.connect(broker.url, retry=FAST) as client:
            client.declare_stream(stream, partitions=2)
            with client.producer(stream=stream) as producer:
                futures = producer.send_many(
                    [OutgoingRecord(f"r{i}".encode(), key=f"k{i % 4}") for i in range(40)])
                appended = [future.result(timeout=10) for future in futures]
            assert all(isinstance(a, AppendedRecord) for a in appended)
            positions = [(a.partition, a.offset) for a in appended
                         if isinstance(a, AppendedRecord)]

            def on_rebalance(assignment: Assignment) -> None:
                rebalances.append((assignment, threading.current_thread().name))

            with client.stream_consumer(stream, group="g", member="m1",
                                        on_rebalance=on_rebalance) as reader:
                assert reader.assignment is not None
                assert reader.assignment.partitions == (0, 1)
                bodies: list[str] = []
                while len(bodies) < 40:
                    bodies += [r.body.decode() for r in reader.next_batch(100, timeout_s=5)]
                reader.commit()
                info = client.request("GET", f"/v1/streams/{stream}/groups/g", write=False,
                                      idempotent=True)
            return positions, bodies, info

    positions, bodies, info = await asyncio.to_thread(use)
    assert len(set(positions)) == 40
    assert sorted(bodies) == sorted(f"r{i}" for i in range(40))
    assert rebalances and rebalances[0][0].partitions == (0, 1)
    assert rebalances[0][1] == "raftmq-client-loop"  # documented: callbacks run on the loop
    committed = info["committed"]
    assert isinstance(committed, dict)
    ends: dict[int, int] = {}
    for partition, offset in positions:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    assert {int(p): o for p, o in committed.items()} == ends


async def test_sync_producer_future_carries_definite_error(broker: Broker) -> None:
    def use() -> BaseException | None:
        with SyncClient.connect(broker.url, retry=FAST) as client, \
                client.producer(stream=unique("missing")) as producer:
            future = producer.send(OutgoingRecord(b"x"))
            try:
                future.result(timeout=10)
            except NotFoundError as error:
                return error
            return None

    error = await asyncio.to_thread(use)
    assert isinstance(error, NotFoundError) and error.definite


async def test_sync_producer_rejects_wrong_item_type(broker: Broker) -> None:
    def use() -> None:
        with SyncClient.connect(broker.url, retry=FAST) as client, \
                client.producer(exchange="") as producer:
            producer.send(OutgoingRecord(b"x"))

    with pytest.raises(TypeError, match="OutgoingMessage"):
        await asyncio.to_thread(use)


async def test_thread_safe_future_copies_cancellation() -> None:
    from raftmq.client.sync_pubsub import _thread_safe

    future = asyncio.get_running_loop().create_future()
    twin = _thread_safe(future)
    future.cancel()
    await asyncio.sleep(0)  # done callbacks run on the next loop turn
    assert twin.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        twin.result(timeout=0)


async def test_the_sync_client_has_every_public_method_of_the_async_one() -> None:
    from raftmq.client import Client

    def public(cls: type) -> set[str]:
        return {name for name in dir(cls) if not name.startswith("_")}

    # The cluster map is the async client's live routing state, not safe from another thread.
    missing = public(Client) - public(SyncClient) - {"cluster_map"}
    assert not missing, f"SyncClient lacks {sorted(missing)}"
