"""Publish, claim (with long-poll) and settle against a real single-node broker."""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from raftmq.broker.api.context import CONTEXT_KEY
from raftmq.broker.api.longpoll import LongPollHub
from tests.unit.test_api_fixtures import (
    MAX_WAITERS,
    MODULE_LOOP,
    Broker,
    broker,
    start_broker,
    stop_broker,
    unique,
    wait_for,
)

__all__ = ["broker"]

pytestmark = MODULE_LOOP


def hub_of(broker: Broker) -> LongPollHub:
    return broker.app[CONTEXT_KEY].hub


async def new_queue(broker: Broker, **args: object) -> str:
    name = unique("q")
    response, _ = await broker.call("PUT", f"/v1/queues/{name}", dict(args))
    assert response.status == 201
    return name


async def claim(broker: Broker, queue: str, **request: object) -> list[dict[str, Any]]:
    response, body = await broker.call("POST", f"/v1/queues/{queue}/claim", dict(request))
    assert response.status == 200, body
    messages: list[dict[str, Any]] = body["messages"]
    return messages


async def claim_proposals(broker: Broker) -> float:
    """How many Claim commands this node proposed so far (from its own metrics)."""
    _, text = await broker.call("GET", "/metrics")
    match = re.search(r'raftmq_propose_seconds_count\{command="Claim"\} ([0-9.e+]+)', text)
    return float(match.group(1)) if match else 0.0


async def test_publish_through_exchange_and_claim_in_json(broker: Broker) -> None:
    exchange, first, second = unique("ex"), await new_queue(broker), await new_queue(broker)
    await broker.call("PUT", f"/v1/exchanges/{exchange}", {"type": "direct"})
    for queue in (first, second):
        await broker.call("POST", "/v1/bindings",
                          {"exchange": exchange, "queue": queue, "binding_key": "k"})
    response, receipt = await broker.call("POST", "/v1/publish", {
        "exchange": exchange,
        "messages": [
            {"routing_key": "k", "body": "héllo", "headers": {"a": 1, "b": {"b64": "AAE="}}},
            {"routing_key": "nobody", "body": "lost"},
            {"routing_key": "k", "body_b64": base64.b64encode(b"\xff\x00").decode()},
        ],
    })
    assert response.status == 200
    assert receipt["accepted"] == 2 and receipt["unroutable"] == [1]
    assert receipt["rejected"] == [] and receipt["duplicate"] is False and receipt["index"] > 0

    for queue in (first, second):
        messages = await claim(broker, queue, max_messages=10, consumer="c1")
        assert [m["body_b64"] for m in messages] == [
            base64.b64encode("héllo".encode()).decode(), "/wA="]
        text, binary = messages
        assert text["body"] == "héllo" and "body" not in binary
        assert text["headers"] == {"a": 1, "b": {"b64": "AAE="}}
        assert text["routing_key"] == "k" and text["exchange"] == exchange
        assert text["delivery_count"] == 1
        assert text["lease_expires_ms"] >= text["published_ms"] + 30_000


async def test_msgpack_publish_and_claim_keep_binary_bodies(broker: Broker) -> None:
    queue = await new_queue(broker)
    body = bytes(range(256))
    response, receipt = await broker.call(
        "POST", f"/v1/queues/{queue}/publish",
        {"messages": [{"body": body, "headers": {"raw": b"\x00"}}]}, fmt="msgpack")
    assert response.status == 200 and receipt["accepted"] == 1
    response, result = await broker.call("POST", f"/v1/queues/{queue}/claim", {}, fmt="msgpack")
    assert response.headers["Content-Type"] == "application/msgpack"
    (message,) = result["messages"]
    assert message["body"] == body and message["headers"] == {"raw": b"\x00"}


async def test_ack_nack_extend(broker: Broker) -> None:
    queue = await new_queue(broker)
    await broker.call("POST", f"/v1/queues/{queue}/publish",
                      {"messages": [{"body": "one"}, {"body": "two"}]})
    first, second = await claim(broker, queue, max_messages=2, lease_ms=10_000)

    response, extended = await broker.call("POST", f"/v1/queues/{queue}/extend", {
        "leases": [[first["message_id"], first["lease_id"]]], "lease_ms": 60_000})
    assert response.status == 200 and extended == {"settled": 1, "failures": []}
    _, info = await broker.call("GET", f"/v1/queues/{queue}")
    assert info["leased"] == 2

    response, acked = await broker.call("POST", f"/v1/queues/{queue}/ack",
                                        {"leases": [[first["message_id"], first["lease_id"]]]})
    assert acked == {"settled": 1, "failures": []}
    _, again = await broker.call("POST", f"/v1/queues/{queue}/ack",
                                 {"leases": [[first["message_id"], first["lease_id"]]]})
    assert again["settled"] == 0
    assert again["failures"] == [[first["message_id"], "unknown_message"]]

    _, nacked = await broker.call("POST", f"/v1/queues/{queue}/nack", {
        "leases": [[second["message_id"], second["lease_id"]]], "requeue": True})
    assert nacked == {"settled": 1, "failures": []}
    (redelivered,) = await claim(broker, queue)
    assert redelivered["message_id"] == second["message_id"]
    assert redelivered["delivery_count"] == 2 and redelivered["lease_id"] != second["lease_id"]
    _, stale = await broker.call("POST", f"/v1/queues/{queue}/ack",
                                 {"leases": [[second["message_id"], second["lease_id"]]]})
    assert stale["failures"] == [[second["message_id"], "lease_expired"]]

    _, dropped = await broker.call("POST", f"/v1/queues/{queue}/nack", {
        "leases": [[redelivered["message_id"], redelivered["lease_id"]]], "requeue": False})
    assert dropped["settled"] == 1
    _, info = await broker.call("GET", f"/v1/queues/{queue}")
    assert (info["ready"], info["leased"], info["counters"]["acked"]) == (0, 0, 1)


async def test_idempotent_publish_is_answered_as_duplicate(broker: Broker) -> None:
    queue = await new_queue(broker)
    batch = {"messages": [{"body": "once"}], "producer_id": unique("producer"), "sequence": 7}
    _, first = await broker.call("POST", f"/v1/queues/{queue}/publish", batch)
    _, second = await broker.call("POST", f"/v1/queues/{queue}/publish", batch)
    assert first["duplicate"] is False and second["duplicate"] is True
    assert second["accepted"] == first["accepted"] == 1
    _, info = await broker.call("GET", f"/v1/queues/{queue}")
    assert info["ready"] == 1


async def test_publish_to_missing_queue_or_exchange_is_404(broker: Broker) -> None:
    response, body = await broker.call("POST", "/v1/queues/no-such-q/publish",
                                       {"messages": [{"body": "x"}]})
    assert response.status == 404 and body["error"]["code"] == "queue_not_found"
    response, body = await broker.call("POST", "/v1/publish",
                                       {"exchange": "no-such-ex", "messages": [{"body": "x"}]})
    assert response.status == 404 and body["error"]["code"] == "exchange_not_found"
    assert body["error"]["definite"] is True


async def test_claim_without_wait_on_empty_queue_proposes_nothing(broker: Broker) -> None:
    queue = await new_queue(broker)
    before = broker.node.applied_index
    assert await claim(broker, queue, wait_ms=0) == []
    assert broker.node.applied_index == before


async def test_long_poll_wakes_on_publish(broker: Broker) -> None:
    queue = await new_queue(broker)
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiting = asyncio.create_task(claim(broker, queue, wait_ms=4_000, max_messages=5))
    await wait_for(lambda: hub_of(broker).waiter_count == 1, 5.0, "the claim to wait")
    await broker.call("POST", f"/v1/queues/{queue}/publish", {"messages": [{"body": "wake"}]})
    messages = await asyncio.wait_for(waiting, 4.0)
    assert [m["body"] for m in messages] == ["wake"]
    assert loop.time() - started < 3.0
    assert hub_of(broker).waiter_count == 0


async def test_long_poll_times_out_empty_without_proposing(broker: Broker) -> None:
    queue = await new_queue(broker)
    loop = asyncio.get_running_loop()
    before = broker.node.applied_index
    started = loop.time()
    assert await claim(broker, queue, wait_ms=400) == []
    assert loop.time() - started >= 0.39
    assert broker.node.applied_index == before  # no claim against the empty queue


async def test_long_poll_wakes_for_delayed_message(broker: Broker) -> None:
    queue = await new_queue(broker)
    await broker.call("POST", f"/v1/queues/{queue}/publish",
                      {"messages": [{"body": "later", "delay_ms": 300}]})
    assert await claim(broker, queue) == []
    messages = await claim(broker, queue, wait_ms=4_000)
    assert [m["body"] for m in messages] == ["later"]


async def test_one_message_wakes_one_waiter(broker: Broker) -> None:
    queue = await new_queue(broker)
    waiters = [asyncio.create_task(claim(broker, queue, wait_ms=1_500)) for _ in range(3)]
    await wait_for(lambda: hub_of(broker).waiter_count == 3, 5.0, "three waiting claims")
    proposals_before = await claim_proposals(broker)
    await broker.call("POST", f"/v1/queues/{queue}/publish", {"messages": [{"body": "solo"}]})
    results = await asyncio.gather(*waiters)
    assert sorted(len(messages) for messages in results) == [0, 0, 1]
    assert await claim_proposals(broker) - proposals_before == 1


async def test_too_many_waiters_is_429_and_node_keeps_serving(broker: Broker) -> None:
    queue = await new_queue(broker)
    waiters = [asyncio.create_task(claim(broker, queue, wait_ms=5_000))
               for _ in range(MAX_WAITERS)]
    await wait_for(lambda: hub_of(broker).waiter_count == MAX_WAITERS, 5.0,
                   "every waiter slot taken")
    response, body = await broker.call("POST", f"/v1/queues/{queue}/claim", {"wait_ms": 1000})
    assert response.status == 429 and body["error"]["code"] == "too_many_waiters"
    assert response.headers["Retry-After"] == "1"
    bodies = [{"body": str(i)} for i in range(MAX_WAITERS)]
    await broker.call("POST", f"/v1/queues/{queue}/publish", {"messages": bodies})
    results = await asyncio.wait_for(asyncio.gather(*waiters), 5.0)
    delivered = sorted(m["body"] for messages in results for m in messages)
    assert delivered == sorted(b["body"] for b in bodies)
    assert hub_of(broker).waiter_count == 0


@pytest.mark.asyncio(loop_scope="function")
async def test_stopping_the_server_answers_long_polls_at_once(tmp_path: Path) -> None:
    own = await start_broker(tmp_path)
    try:
        queue = unique("q")
        await own.call("PUT", f"/v1/queues/{queue}", {})
        async with aiohttp.ClientSession() as session:
            waiting = asyncio.create_task(session.post(
                f"{own.url}/v1/queues/{queue}/claim", json={"wait_ms": 4_000}))
            await wait_for(lambda: hub_of(own).waiter_count == 1, 5.0, "the claim to wait")
            loop = asyncio.get_running_loop()
            started = loop.time()
            await own.client.server.close()
            response = await asyncio.wait_for(waiting, 2.0)
            assert response.status == 200 and (await response.json())["messages"] == []
            assert loop.time() - started < 2.0
    finally:
        await stop_broker(own)
