"""The minimal msgpack client against a real node, and its error tree (definite or not)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from raftmq.broker.api.context import CONTEXT_KEY
from raftmq.client import (
    ConflictError,
    IndefiniteError,
    InvalidRequestError,
    NotFoundError,
    OutgoingMessage,
    RaftMQ,
    RaftMQError,
    TooLargeError,
    UnavailableError,
)
from tests.unit.test_api_fixtures import (
    MODULE_LOOP,
    TEST_LIMITS,
    Broker,
    broker,
    free_port,
    unique,
    wait_for,
)

__all__ = ["broker"]

pytestmark = MODULE_LOOP


async def test_topology_round_trip(broker: Broker) -> None:
    exchange, queue = unique("ex"), unique("q")
    async with RaftMQ(broker.url) as mq:
        assert await mq.declare_exchange(exchange, "topic") is True
        assert await mq.declare_exchange(exchange, "topic") is False
        assert await mq.declare_queue(queue, max_length=100, delivery_limit=5) is True
        assert await mq.bind(exchange, queue, "a.*") is True
        info = await mq.queue_info(queue)
        assert info["args"]["max_length"] == 100 and info["args"]["delivery_limit"] == 5
        assert queue in [q["name"] for q in await mq.list_queues()]
        cluster = await mq.cluster()
        assert cluster["leader_id"] == "n1" and cluster["leader_url"] == broker.url
        await mq.unbind(exchange, queue, "a.*")
        await mq.delete_exchange(exchange, if_unused=True)
        await mq.delete_queue(queue, if_empty=True)
        with pytest.raises(NotFoundError):
            await mq.queue_info(queue)


async def test_publish_claim_settle(broker: Broker) -> None:
    exchange, queue = unique("ex"), unique("q")
    async with RaftMQ(broker.url) as mq:
        await mq.declare_exchange(exchange, "fanout")
        await mq.declare_queue(queue)
        await mq.bind(exchange, queue)
        receipt = await mq.publish(exchange, [
            OutgoingMessage(b"\x00binary", routing_key="any", headers={"k": b"v", "n": 1}),
            OutgoingMessage(b"second", ttl_ms=60_000),
        ], producer_id=unique("producer"), sequence=1)
        assert (receipt.accepted, receipt.unroutable, receipt.duplicate) == (2, (), False)
        assert receipt.index > 0

        first, second = await mq.claim(queue, max_messages=5, lease_ms=20_000, consumer="c-1")
        assert (first.body, first.headers, first.routing_key) == (
            b"\x00binary", {"k": b"v", "n": 1}, "any")
        assert first.exchange == exchange and first.delivery_count == 1
        extended = await mq.extend(queue, [first], lease_ms=40_000)
        assert (extended.settled, extended.failures) == (1, ())
        acked = await mq.ack(queue, [first, (second.message_id, second.lease_id + 1000)])
        assert acked.settled == 1
        assert acked.failures == ((second.message_id, "lease_expired"),)
        nacked = await mq.nack(queue, [second], requeue=True)
        assert nacked.settled == 1
        (again,) = await mq.claim(queue)
        assert again.message_id == second.message_id and again.delivery_count == 2
        assert await mq.purge_queue(queue) == 0


async def test_publish_to_queue_and_long_poll(broker: Broker) -> None:
    queue = unique("q")
    async with RaftMQ(broker.url, timeout_s=2.0) as mq:
        await mq.declare_queue(queue)
        # The claim waits longer than the client's base timeout: the wait must extend it.
        waiting = asyncio.create_task(mq.claim(queue, wait_ms=3_000))
        hub = broker.app[CONTEXT_KEY].hub
        await wait_for(lambda: hub.waiter_count == 1, 5.0, "the claim to wait")
        receipt = await mq.publish_to_queue(queue, [OutgoingMessage(b"polled")])
        assert receipt.accepted == 1
        (message,) = await asyncio.wait_for(waiting, 5.0)
        assert message.body == b"polled"
        assert await mq.claim(queue, wait_ms=2_500) == []


async def test_server_errors_map_to_typed_exceptions(broker: Broker) -> None:
    queue = unique("q")
    async with RaftMQ(broker.url) as mq:
        await mq.declare_queue(queue, max_length=1)
        with pytest.raises(ConflictError) as conflict:
            await mq.declare_queue(queue, max_length=2)
        assert conflict.value.code == "precondition_failed" and conflict.value.status == 409
        assert conflict.value.definite is True and conflict.value.leader == broker.url
        with pytest.raises(InvalidRequestError) as invalid:
            await mq.declare_queue("bad name")
        assert invalid.value.code == "invalid_name"
        with pytest.raises(NotFoundError):
            await mq.publish_to_queue(unique("absent"), [OutgoingMessage(b"x")])
        with pytest.raises(TooLargeError) as too_large:
            await mq.publish_to_queue(
                queue, [OutgoingMessage(b"x" * (TEST_LIMITS.max_message_bytes + 1))])
        assert too_large.value.code == "message_too_large"


async def test_connection_refused_is_definite() -> None:
    async with RaftMQ(f"http://127.0.0.1:{free_port()}", timeout_s=2.0) as mq:
        with pytest.raises(RaftMQError) as refused:
            await mq.declare_queue("q")
    assert refused.value.code == "connection_error" and refused.value.definite is True
    assert isinstance(refused.value, UnavailableError)


async def _hang_up(request: web.Request) -> web.StreamResponse:
    await request.read()
    assert request.transport is not None
    request.transport.close()  # the node "crashed" after receiving the write
    await asyncio.sleep(0.1)
    return web.Response()


async def _proxy_error(_request: web.Request) -> web.StreamResponse:
    return web.Response(status=502, text="<html>bad gateway</html>", content_type="text/html")


@pytest.fixture
async def flaky_server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/v1/queues/hangup", _hang_up)
    app.router.add_route("*", "/v1/queues/proxied", _proxy_error)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.mark.asyncio(loop_scope="function")
async def test_dropped_connection_during_write_is_indefinite(flaky_server: str) -> None:
    async with RaftMQ(flaky_server, timeout_s=2.0) as mq:
        with pytest.raises(IndefiniteError) as write_error:
            await mq.declare_queue("hangup")
        assert write_error.value.definite is False
        with pytest.raises(RaftMQError) as read_error:
            await mq.queue_info("hangup")
        assert read_error.value.definite is True


@pytest.mark.asyncio(loop_scope="function")
async def test_foreign_error_page_is_unexpected_response(flaky_server: str) -> None:
    async with RaftMQ(flaky_server) as mq:
        with pytest.raises(IndefiniteError) as write_error:
            await mq.declare_queue("proxied")
        assert (write_error.value.code, write_error.value.status) == ("unexpected_response", 502)
        with pytest.raises(RaftMQError) as read_error:
            await mq.queue_info("proxied")
        assert read_error.value.definite is True
