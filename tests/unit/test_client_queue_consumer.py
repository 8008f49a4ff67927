"""The queue consumer (push over the WebSocket and pull) against a real single-node broker."""

from __future__ import annotations

import time

import aiohttp
import pytest

from raftmq.client import errors
from raftmq.client.client import Client
from raftmq.client.queue_consumer import QueueConsumer
from raftmq.client.wire import Message
from tests.unit.test_api_fixtures import Broker, broker, unique

pytestmark = pytest.mark.asyncio(loop_scope="module")
__all__ = ["broker"]


async def fill(broker: Broker, queue: str, count: int) -> None:
    await broker.call("PUT", f"/v1/queues/{queue}", {})
    for start in range(0, count, 50):
        response, answer = await broker.call("POST", f"/v1/queues/{queue}/publish", {
            "messages": [{"body": f"m{i:04d}"} for i in range(start, min(count, start + 50))]})
        assert response.status == 200, answer


async def take(consumer: QueueConsumer, count: int, timeout_s: float = 10.0) -> list[Message]:
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(messages) < count:
        assert time.monotonic() < deadline, f"got {len(messages)} of {count}"
        messages += await consumer.next_batch(count - len(messages), timeout_s=0.5)
    return messages


async def depth(broker: Broker, queue: str) -> tuple[int, int]:
    _, info = await broker.call("GET", f"/v1/queues/{queue}")
    return info["ready"], info["leased"]


@pytest.mark.parametrize("mode", ["push", "pull"])
async def test_every_message_arrives_once_and_acks_empty_the_queue(broker: Broker, mode: str) -> None:
    queue = unique("q")
    await fill(broker, queue, 120)
    async with await Client.connect(broker.url) as client, QueueConsumer(
        client, queue, prefetch=20, mode=mode
    ) as consumer:
        received: list[Message] = []
        while len(received) < 120:
            batch = await take(consumer, 1)
            batch += await consumer.next_batch(20, timeout_s=0)
            receipt = await consumer.ack(batch)
            assert receipt.settled == len(batch) and not receipt.failures
            received += batch
    assert sorted(m.body for m in received) == sorted(b"m%04d" % i for i in range(120))
    assert await depth(broker, queue) == (0, 0)


async def test_push_never_holds_more_than_prefetch_unacked(broker: Broker) -> None:
    queue = unique("q")
    await fill(broker, queue, 50)
    async with await Client.connect(broker.url) as client, QueueConsumer(
        client, queue, prefetch=7
    ) as consumer:
        held = await take(consumer, 7)
        assert await consumer.next_batch(10, timeout_s=0.5) == []  # nothing beyond prefetch
        assert await depth(broker, queue) == (43, 7)
        await consumer.ack(held[:3])
        more = await take(consumer, 3)
        assert {m.message_id for m in more}.isdisjoint(m.message_id for m in held)


async def test_nack_with_requeue_redelivers(broker: Broker) -> None:
    queue = unique("q")
    await fill(broker, queue, 1)
    async with await Client.connect(broker.url) as client, QueueConsumer(
        client, queue, prefetch=1
    ) as consumer:
        first = await take(consumer, 1)
        await consumer.nack(first, requeue=True)
        again = await take(consumer, 1)
        assert again[0].body == first[0].body and again[0].delivery_count == 2
        await consumer.ack(again)


async def test_extend_keeps_a_message_past_its_lease(broker: Broker) -> None:
    queue = unique("q")
    await fill(broker, queue, 1)
    async with await Client.connect(broker.url) as client, QueueConsumer(
        client, queue, prefetch=1, lease_ms=400
    ) as consumer:
        held = await take(consumer, 1)
        receipt = await consumer.extend(held, 10_000)
        assert receipt.settled == 1
        assert await consumer.next_batch(1, timeout_s=1.0) == []  # not redelivered
        assert (await consumer.ack(held)).settled == 1


async def test_a_missing_queue_is_reported(broker: Broker) -> None:
    async with await Client.connect(broker.url) as client:
        consumer = await QueueConsumer(client, unique("missing"), mode="pull").start()
        try:
            with pytest.raises(errors.NotFoundError):
                await consumer.next_batch(1, timeout_s=5.0)
        finally:
            await consumer.close()


async def test_bad_settings_are_refused(broker: Broker) -> None:
    async with await Client.connect(broker.url) as client:
        with pytest.raises(ValueError):
            QueueConsumer(client, "q", prefetch=0)
        with pytest.raises(ValueError):
            QueueConsumer(client, "q", mode="sideways")


async def test_an_ack_the_websocket_cannot_send_goes_over_http(broker: Broker) -> None:
    """A connection that breaks under an ack must not surface as a raw aiohttp error: the ack
    is settled through the client's failover path instead."""
    queue = unique("q")
    await fill(broker, queue, 5)
    async with await Client.connect(broker.url) as client, QueueConsumer(
        client, queue, prefetch=5
    ) as consumer:
        messages = await take(consumer, 5)
        ws = consumer._ws
        assert ws is not None

        async def broken_send(_data: bytes, _compress: int | None = None) -> None:
            raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")

        ws.send_bytes = broken_send  # type: ignore[method-assign,assignment]  # the fault
        receipt = await consumer.ack(messages)
    assert receipt.settled == 5 and not receipt.failures
    assert await depth(broker, queue) == (0, 0)
