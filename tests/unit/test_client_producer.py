"""The batching, idempotent producer against a real single-node broker.

Faults are injected at the client's one I/O seam (the transport): the broker and the network
stay real, only some answers are lost after the broker acted on the request.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping

import pytest
import pytest_asyncio

from raftmq.broker.api import ApiLimits
from raftmq.client import errors
from raftmq.client.client import Client
from raftmq.client.producer import AppendedRecord, Producer, ProducerSettings, PublishedMessage
from raftmq.client.retry import RetryPolicy
from raftmq.client.stream_wire import OutgoingRecord
from raftmq.client.transport import AiohttpTransport, RawResponse
from raftmq.client.wire import OutgoingMessage
from tests.unit.test_api_fixtures import Broker, start_broker, stop_broker, unique

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIMITS = ApiLimits(max_batch_messages=1000, max_request_bytes=4 * 2**20, max_wait_ms=5_000,
                   propose_timeout_s=5.0)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Broker]:
    started = await start_broker(tmp_path_factory.mktemp("raft"), LIMITS)
    try:
        yield started
    finally:
        await stop_broker(started)


class AnswerLosingTransport(AiohttpTransport):
    """Delivers every request to the broker, but loses the answer of the chosen publishes
    (counted from 1), as a connection that breaks after the request was sent would: the
    outcome is unknown."""

    def __init__(self, lose: set[int]) -> None:
        super().__init__()
        self.lose = lose
        self.publishes = 0

    async def request(self, url: str, method: str, path: str, *, body: bytes | None,
                      headers: Mapping[str, str], params: Mapping[str, str] | None,
                      timeout_s: float) -> RawResponse:
        answer = await super().request(url, method, path, body=body, headers=headers,
                                       params=params, timeout_s=timeout_s)
        if not path.endswith("/publish"):
            return answer
        self.publishes += 1
        if self.publishes in self.lose:
            raise errors.error_for(errors.CONNECTION_ERROR, "answer lost", definite=False)
        return answer


async def queue_depth(broker: Broker, queue: str) -> int:
    _, info = await broker.call("GET", f"/v1/queues/{queue}")
    return int(info["ready"])


async def claim_bodies(broker: Broker, queue: str, count: int) -> list[bytes]:
    bodies: list[bytes] = []
    while len(bodies) < count:
        _, answer = await broker.call("POST", f"/v1/queues/{queue}/claim",
                                      {"max_messages": 100, "lease_ms": 60_000}, fmt="msgpack",
                                      headers={"Accept": "application/msgpack"})
        assert answer["messages"], f"only {len(bodies)} of {count} messages there"
        bodies += [m["body"] for m in answer["messages"]]
    return bodies


async def test_messages_go_in_batches_in_order(broker: Broker) -> None:
    queue = unique("q")
    client = await Client.connect(broker.url)
    async with client:
        await client.declare_queue(queue)
        settings = ProducerSettings(linger_ms=20, max_batch_messages=100)
        async with Producer(client, exchange="", settings=settings) as producer:
            futures = [await producer.send(OutgoingMessage(b"%d" % i, routing_key=queue))
                       for i in range(1000)]
            outcomes = await asyncio.gather(*futures)
        assert all(isinstance(o, PublishedMessage) and o.status == "accepted" for o in outcomes)
        # 1,000 messages with batches of at most 100 need at least 10 sequences, and lingering
        # keeps it close to that instead of one request per message.
        assert 10 <= producer.batches_sent <= 40
    assert await claim_bodies(broker, queue, 1000) == [b"%d" % i for i in range(1000)]


async def test_a_lost_answer_is_retried_with_the_same_sequence(broker: Broker) -> None:
    queue = unique("q")
    transport = AnswerLosingTransport(lose={1, 2})  # the first two publish answers vanish
    client = await Client.connect(broker.url, transport=transport,
                                  retry=RetryPolicy(initial_backoff_s=0.01, deadline_s=10.0))
    async with client:
        await client.declare_queue(queue)
        async with Producer(client, exchange="", settings=ProducerSettings(linger_ms=0)) as producer:
            outcome = await producer.publish(OutgoingMessage(b"once", routing_key=queue))
    assert isinstance(outcome, PublishedMessage) and outcome.status == "accepted"
    assert outcome.duplicate, "the retry must have been answered from the broker's memory"
    assert await queue_depth(broker, queue) == 1


async def test_without_idempotence_a_lost_answer_is_unknown_not_failed(broker: Broker) -> None:
    queue = unique("q")
    transport = AnswerLosingTransport(lose={1})
    client = await Client.connect(broker.url, transport=transport,
                                  retry=RetryPolicy(initial_backoff_s=0.01, deadline_s=5.0))
    async with client:
        await client.declare_queue(queue)
        settings = ProducerSettings(linger_ms=0, idempotent=False)
        async with Producer(client, exchange="", settings=settings) as producer:
            future = await producer.send(OutgoingMessage(b"maybe", routing_key=queue))
            with pytest.raises(errors.RaftMQError) as raised:
                await future
    assert raised.value.definite is False, "an answer lost in flight is an unknown outcome"
    assert await queue_depth(broker, queue) == 1  # it was in fact stored, once


async def test_a_definite_failure_fails_every_message_of_the_batch(broker: Broker) -> None:
    async with await Client.connect(broker.url) as client, Producer(
        client, exchange=unique("missing")
    ) as producer:
        futures = [await producer.send(OutgoingMessage(b"x")) for _ in range(3)]
        results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, errors.NotFoundError) and r.definite for r in results)


async def test_send_waits_while_the_buffer_is_full(broker: Broker) -> None:
    queue = unique("q")
    async with await Client.connect(broker.url) as client:
        await client.declare_queue(queue)
        settings = ProducerSettings(linger_ms=1, max_batch_messages=50, max_buffered_messages=100)
        async with Producer(client, exchange="", settings=settings) as producer:
            peak = 0
            for i in range(2000):
                await producer.send(OutgoingMessage(b"%d" % i, routing_key=queue))
                peak = max(peak, producer.unsettled)
            await producer.flush()
            assert producer.unsettled == 0
        assert peak <= 100
    assert await queue_depth(broker, queue) == 2000


async def test_large_batches_travel_compressed(broker: Broker) -> None:
    queue = unique("q")
    async with await Client.connect(broker.url) as client:
        await client.declare_queue(queue)
        body = b"compressible " * 100
        settings = ProducerSettings(linger_ms=10, compress_min_bytes=1024)
        async with Producer(client, exchange="", settings=settings) as producer:
            futures = [await producer.send(OutgoingMessage(body, routing_key=queue))
                       for _ in range(200)]
            await asyncio.gather(*futures)
        assert producer.compressed_batches >= 1
    assert set(await claim_bodies(broker, queue, 200)) == {body}


async def test_stream_records_keep_their_key_order(broker: Broker) -> None:
    stream = unique("s")
    async with await Client.connect(broker.url) as client:
        await client.declare_stream(stream, partitions=4)
        async with Producer(client, stream=stream) as producer:
            futures = [await producer.send(OutgoingRecord(b"%d" % i, key=f"k{i % 5}"))
                       for i in range(200)]
            outcomes = await asyncio.gather(*futures)
    assert all(isinstance(o, AppendedRecord) for o in outcomes)
    by_key: dict[str, list[AppendedRecord]] = {}
    for i, outcome in enumerate(outcomes):
        assert isinstance(outcome, AppendedRecord)
        by_key.setdefault(f"k{i % 5}", []).append(outcome)
    for records in by_key.values():
        assert len({r.partition for r in records}) == 1
        offsets = [r.offset for r in records]
        assert offsets == sorted(offsets)


async def test_the_wrong_item_type_is_refused_at_once(broker: Broker) -> None:
    async with await Client.connect(broker.url) as client, Producer(client, exchange="") as producer:
        with pytest.raises(TypeError):
            await producer.send(OutgoingRecord(b"x"))


async def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        ProducerSettings(max_in_flight_batches=0)
    with pytest.raises(ValueError):
        ProducerSettings(max_batch_messages=100, max_buffered_messages=10)



async def test_a_batch_the_broker_finds_too_large_is_split(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The broker's batch limit is configurable: a producer whose batches exceed it splits
    them (the refusal is definite, nothing was stored) and keeps the smaller size."""
    small = await start_broker(tmp_path_factory.mktemp("raft"),
                               dataclasses.replace(LIMITS, max_batch_messages=10))
    try:
        queue = unique("q")
        async with await Client.connect(small.url) as client:
            await client.declare_queue(queue)
            settings = ProducerSettings(linger_ms=50, max_batch_messages=1000)
            async with Producer(client, exchange="", settings=settings) as producer:
                futures = await producer.send_many(
                    [OutgoingMessage(b"%d" % i, routing_key=queue) for i in range(95)])
                outcomes = await asyncio.gather(*futures)
                sent_for_first_run = producer.batches_sent
                more = await producer.send_many(
                    [OutgoingMessage(b"%d" % i, routing_key=queue) for i in range(95, 105)])
                await asyncio.gather(*more)
        assert all(isinstance(o, PublishedMessage) and o.status == "accepted" for o in outcomes)
        # Halving 95 under a limit of 10 settles at 5: the next 10 messages went as two
        # batches of the learned size, neither refused.
        assert producer.batches_sent == sent_for_first_run + 2
        assert await queue_depth(small, queue) == 105
        assert await claim_bodies(small, queue, 105) == [b"%d" % i for i in range(105)]
    finally:
        await stop_broker(small)
