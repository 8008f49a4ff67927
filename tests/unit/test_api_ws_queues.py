"""Queue push consumers over `GET /v1/ws` on a real single-node broker: prefetch, ack/nack/extend,
lease expiry and redelivery, competing consumers, cancel, bad requests, the hub's wake-ups and
back-pressure from a client that does not read."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
import pytest_asyncio

from raftmq.broker.api import ApiLimits, ws_queues
from raftmq.broker.api.ws_queues import MAX_PREFETCH, QueueSubscription
from raftmq.broker.api.ws_streams import MAX_SUBSCRIPTIONS
from raftmq.broker.commands import Tick
from raftmq.broker.results import OkResult
from raftmq.broker.stream_commands import DeclareStream, StreamArgs
from tests.unit.test_api_fixtures import (
    MAX_WAITERS,
    MODULE_LOOP,
    TEST_LIMITS,
    Broker,
    broker,
    start_broker,
    stop_broker,
    unique,
    wait_for,
)
from tests.unit.test_api_ws_streams import (
    connect,
    ctx_of,
    hub_of,
    nothing_pushed,
    receive,
    request,
    send,
)

__all__ = ["broker"]

pytestmark = MODULE_LOOP

Socket = aiohttp.ClientWebSocketResponse
TIMEOUT_S = 10.0


# -- helpers --------------------------------------------------------------------------------------


async def new_queue(broker: Broker) -> str:
    name = unique("q")
    response, body = await broker.call("PUT", f"/v1/queues/{name}", {})
    assert response.status == 201, body
    return name


async def publish(broker: Broker, queue: str, bodies: list[bytes]) -> None:
    response, body = await broker.call(
        "POST", f"/v1/queues/{queue}/publish", {"messages": [{"body": b} for b in bodies]},
        fmt="msgpack",
    )
    assert response.status == 200 and body["accepted"] == len(bodies), body


async def queue_info(broker: Broker, queue: str) -> dict[str, Any]:
    response, body = await broker.call("GET", f"/v1/queues/{queue}")
    assert response.status == 200, body
    info: dict[str, Any] = body
    return info


async def consume(ws: Socket, queue: str, **fields: object) -> int:
    reply = await request(ws, {"op": "consume", "id": 1, "queue": queue, **fields})
    assert set(reply) == {"id", "ok"} and set(reply["ok"]) == {"subscription"}, reply
    sid: int = reply["ok"]["subscription"]
    return sid


def subscription(connection: Any, sid: int) -> QueueSubscription:
    found = connection.subscriptions.get(sid)
    assert isinstance(found, QueueSubscription), found
    return found


async def pushed(ws: Socket, sid: int, count: int) -> list[dict[str, Any]]:
    """The next `count` messages pushed for `sid` (no other frame may come in between)."""
    messages: list[dict[str, Any]] = []
    while len(messages) < count:
        frame = await receive(ws)
        assert frame.get("subscription") == sid and "messages" in frame, frame
        assert set(frame) == {"subscription", "messages"} and frame["messages"], frame
        messages += frame["messages"]
    assert len(messages) == count, messages
    return messages


async def settle(
    ws: Socket, op: str, sid: int, messages: list[dict[str, Any]], expect_pushed: int = 0,
    request_id: int = 7, **extra: object,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Ack/nack/extend `messages`; the reply and the `expect_pushed` messages pushed after it,
    in either order."""
    leases = [[m["message_id"], m["lease_id"]] for m in messages]
    await send(ws, {"op": op, "id": request_id, "subscription": sid, "leases": leases, **extra})
    reply: dict[str, Any] | None = None
    more: list[dict[str, Any]] = []
    while reply is None or len(more) < expect_pushed:
        frame = await receive(ws)
        if frame.get("id") == request_id:
            reply = frame
        else:
            assert frame.get("subscription") == sid and "messages" in frame, frame
            more += frame["messages"]
    assert len(more) == expect_pushed, more
    return reply, more


def ids(messages: list[dict[str, Any]]) -> list[int]:
    return [m["message_id"] for m in messages]


@pytest_asyncio.fixture(loop_scope="module")
async def quiet(broker: Broker) -> AsyncIterator[None]:
    """Every test starts with no connection, subscription or waiter left by another."""
    ctx, hub = ctx_of(broker), hub_of(broker)
    await wait_for(lambda: not hub.connections and hub.in_flight == 0
                   and ctx.hub.waiter_count == 0, TIMEOUT_S, "earlier connections to end")
    yield


@pytest_asyncio.fixture(loop_scope="module")
async def conn(broker: Broker, quiet: None) -> AsyncIterator[tuple[Socket, Any]]:
    ws, connection = await connect(broker)
    try:
        yield ws, connection
    finally:
        await ws.close()


# -- prefetch and settling ------------------------------------------------------------------------


async def test_prefetch_bounds_unacked_and_each_ack_frees_a_slot(
    broker: Broker, conn: tuple[Socket, Any]
) -> None:
    ws, connection = conn
    queue = await new_queue(broker)
    bodies = [f"m{i}".encode() for i in range(10)]
    await publish(broker, queue, bodies)
    sid = await consume(ws, queue, prefetch=3, consumer="worker-1")
    sub = subscription(connection, sid)
    first = await pushed(ws, sid, 3)
    await wait_for(lambda: sub.waiting == "slot", TIMEOUT_S, "the subscription to run out of slots")
    await nothing_pushed(ws)
    info = await queue_info(broker, queue)
    assert (info["leased"], info["ready"], sub.unacked) == (3, 7, 3)
    assert [m["body"] for m in first] == bodies[:3]
    assert all(m["delivery_count"] == 1 for m in first)

    reply, more = await settle(ws, "ack", sid, first[:1], expect_pushed=1)
    assert reply == {"id": 7, "ok": {"settled": 1, "failures": []}}
    reply, more2 = await settle(ws, "ack", sid, first[1:], expect_pushed=2)
    assert reply["ok"]["settled"] == 2
    assert [m["body"] for m in more + more2] == bodies[3:6]  # in queue order
    await wait_for(lambda: sub.waiting == "slot", TIMEOUT_S, "the slots to fill again")
    assert (await queue_info(broker, queue))["leased"] == 3


async def test_nack_requeue_redelivers_and_nack_drop_does_not(
    broker: Broker, conn: tuple[Socket, Any]
) -> None:
    ws, connection = conn
    queue = await new_queue(broker)
    await publish(broker, queue, [b"again"])
    sid = await consume(ws, queue, prefetch=1)
    (first,) = await pushed(ws, sid, 1)
    reply, (second,) = await settle(ws, "nack", sid, [first], expect_pushed=1, requeue=True)
    assert reply["ok"] == {"settled": 1, "failures": []}
    assert second["message_id"] == first["message_id"] and second["body"] == b"again"
    assert (first["delivery_count"], second["delivery_count"]) == (1, 2)
    assert second["lease_id"] != first["lease_id"]
    reply, _ = await settle(ws, "nack", sid, [second], requeue=False)
    assert reply["ok"]["settled"] == 1
    sub = subscription(connection, sid)
    await wait_for(lambda: sub.waiting == "messages", TIMEOUT_S, "an idle subscription")
    await nothing_pushed(ws)
    info = await queue_info(broker, queue)
    assert (info["ready"], info["leased"]) == (0, 0)


async def test_a_late_settle_is_reported_not_accepted(broker: Broker, conn: tuple[Socket, Any]) -> None:
    ws, _ = conn
    queue = await new_queue(broker)
    await publish(broker, queue, [b"x"])
    sid = await consume(ws, queue, prefetch=1)
    (message,) = await pushed(ws, sid, 1)
    reply, _ = await settle(ws, "ack", sid, [message])
    assert reply["ok"]["settled"] == 1
    reply, _ = await settle(ws, "ack", sid, [message], request_id=8)
    assert reply["ok"]["settled"] == 0 and [f[0] for f in reply["ok"]["failures"]] == [
        message["message_id"]], reply


async def test_extend_keeps_the_lease_past_its_first_expiry(
    broker: Broker, conn: tuple[Socket, Any]
) -> None:
    ws, connection = conn
    ctx = ctx_of(broker)
    queue = await new_queue(broker)
    await publish(broker, queue, [b"long job"])
    sid = await consume(ws, queue, prefetch=1, lease_ms=1000)
    (message,) = await pushed(ws, sid, 1)
    reply, _ = await settle(ws, "extend", sid, [message], lease_ms=60_000)
    assert reply["ok"] == {"settled": 1, "failures": []}
    first_expiry_ms = message["lease_expires_ms"]
    await wait_for(lambda: ctx.clock_ms() > first_expiry_ms + 300, TIMEOUT_S,
                   "the first lease to have run out")
    # The state's clock moves with commands: past the first expiry, the lease still holds.
    await ctx.propose(Tick(ctx.clock_ms()), OkResult)
    info = await queue_info(broker, queue)
    assert (info["leased"], info["ready"]) == (1, 0), info
    sub = subscription(connection, sid)
    assert sub.unacked == 1 and sub.waiting == "slot"  # the slot is still taken
    await nothing_pushed(ws)
    reply, _ = await settle(ws, "ack", sid, [message], request_id=8)
    assert reply["ok"] == {"settled": 1, "failures": []}


async def test_an_expired_lease_frees_its_slot_and_is_redelivered(
    broker: Broker, conn: tuple[Socket, Any]
) -> None:
    ws, _ = conn
    ctx = ctx_of(broker)
    queue = await new_queue(broker)
    await publish(broker, queue, [b"first", b"second"])
    sid = await consume(ws, queue, prefetch=1, lease_ms=300)
    (first,) = await pushed(ws, sid, 1)
    (again,) = await pushed(ws, sid, 1)  # not acked: the lease ran out
    assert ctx.clock_ms() >= first["lease_expires_ms"]
    assert again["message_id"] == first["message_id"] and again["delivery_count"] == 2


async def test_a_closed_sockets_messages_are_redelivered_after_their_lease(
    broker: Broker, quiet: None
) -> None:
    ctx = ctx_of(broker)
    queue = await new_queue(broker)
    await publish(broker, queue, [b"a", b"b", b"c"])
    ws, connection = await connect(broker)
    sid = await consume(ws, queue, prefetch=5, lease_ms=800)
    lost = await pushed(ws, sid, 3)
    await ws.close()
    await wait_for(lambda: len(connection.subscriptions) == 0, TIMEOUT_S, "the subscription to end")
    other, _ = await connect(broker)
    try:
        sid = await consume(other, queue, prefetch=5)
        redelivered = await pushed(other, sid, 3)
        # Not before the dead consumer's leases ran out.
        assert ctx.clock_ms() >= max(m["lease_expires_ms"] for m in lost)
        assert ids(redelivered) == ids(lost)
        assert all(m["delivery_count"] == 2 for m in redelivered)
    finally:
        await other.close()


async def test_two_consumers_compete_and_never_share_a_leased_message(
    broker: Broker, quiet: None
) -> None:
    queue = await new_queue(broker)
    (ws_a, conn_a), (ws_b, conn_b) = await connect(broker), await connect(broker)
    try:
        sid_a = await consume(ws_a, queue, prefetch=5, consumer="a")
        sid_b = await consume(ws_b, queue, prefetch=5, consumer="b")
        await publish(broker, queue, [f"{i}".encode() for i in range(10)])
        got_a, got_b = await pushed(ws_a, sid_a, 5), await pushed(ws_b, sid_b, 5)
        assert not set(ids(got_a)) & set(ids(got_b))
        everything = set(ids(got_a)) | set(ids(got_b))
        await settle(ws_a, "ack", sid_a, got_a)
        await settle(ws_b, "ack", sid_b, got_b)
        await publish(broker, queue, [f"{i}".encode() for i in range(10, 16)])
        await wait_for(lambda: subscription(conn_a, sid_a).pushed_messages
                       + subscription(conn_b, sid_b).pushed_messages == 16, TIMEOUT_S,
                       "the second round to be pushed")
        later_a = await pushed(ws_a, sid_a, subscription(conn_a, sid_a).pushed_messages - 5)
        later_b = await pushed(ws_b, sid_b, subscription(conn_b, sid_b).pushed_messages - 5)
        assert not set(ids(later_a)) & set(ids(later_b))
        everything |= set(ids(later_a)) | set(ids(later_b))
        assert len(everything) == 16
        assert all(m["delivery_count"] == 1 for m in got_a + got_b + later_a + later_b)
    finally:
        await ws_a.close()
        await ws_b.close()


# -- cancel, JSON, errors -------------------------------------------------------------------------


async def test_cancel_stops_pushes_and_leaves_settling_open(
    broker: Broker, conn: tuple[Socket, Any]
) -> None:
    ws, connection = conn
    queue = await new_queue(broker)
    await publish(broker, queue, [b"1", b"2", b"3"])
    sid = await consume(ws, queue, prefetch=2)
    held = await pushed(ws, sid, 2)
    assert await request(ws, {"op": "cancel", "id": 3, "subscription": sid}) == {
        "id": 3, "ok": {"unacked": 2}}
    sub = subscription(connection, sid)
    assert not sub.claiming
    reply, _ = await settle(ws, "ack", sid, held[:1])
    assert reply["ok"]["settled"] == 1
    await nothing_pushed(ws)  # the freed slot is not refilled
    assert await request(ws, {"op": "cancel", "id": 4, "subscription": sid}) == {
        "id": 4, "ok": {"unacked": 1}}
    reply, _ = await settle(ws, "nack", sid, held[1:], request_id=8)
    assert reply["ok"]["settled"] == 1
    await wait_for(lambda: connection.subscriptions.get(sid) is None, TIMEOUT_S,
                   "the subscription to end once nothing is held")
    reply = await request(ws, {"op": "ack", "id": 9, "subscription": sid, "leases": [[1, 1]]})
    assert reply["error"]["code"] == "not_found"
    info = await queue_info(broker, queue)
    assert (info["ready"], info["leased"]) == (2, 0)


async def test_cancel_with_nothing_held_ends_at_once(broker: Broker, conn: tuple[Socket, Any]) -> None:
    ws, connection = conn
    queue = await new_queue(broker)
    sid = await consume(ws, queue)
    assert await request(ws, {"op": "cancel", "id": 3, "subscription": sid}) == {
        "id": 3, "ok": {"unacked": 0}}
    await wait_for(lambda: connection.subscriptions.get(sid) is None, TIMEOUT_S, "the end")
    await publish(broker, queue, [b"for nobody"])
    await nothing_pushed(ws)
    assert (await queue_info(broker, queue))["ready"] == 1


async def test_json_consumers_get_json_frames(broker: Broker, conn: tuple[Socket, Any]) -> None:
    ws, _ = conn
    queue = await new_queue(broker)
    await publish(broker, queue, [b"text", b"\xff\x00"])
    await ws.send_str(f'{{"op": "consume", "id": 1, "queue": "{queue}", "prefetch": 2}}')
    reply = await receive(ws)
    assert reply["_text"] and "ok" in reply, reply
    frame = await receive(ws)
    assert frame["_text"] and frame["subscription"] == reply["ok"]["subscription"]
    text, binary = frame["messages"]
    assert text["body"] == "text" and base64.b64decode(text["body_b64"]) == b"text"
    assert base64.b64decode(binary["body_b64"]) == b"\xff\x00" and "body" not in binary


async def test_push_frames_are_bounded_in_size(broker: Broker, conn: tuple[Socket, Any]) -> None:
    ws, _ = conn
    queue = await new_queue(broker)
    body_bytes = TEST_LIMITS.max_message_bytes - 96
    for batch in range(4):
        await publish(broker, queue, [bytes([batch]) * body_bytes] * 10)
    sid = await consume(ws, queue, prefetch=100)
    frames: list[list[dict[str, Any]]] = []
    while sum(len(f) for f in frames) < 40:
        frame = await receive(ws)
        assert frame["subscription"] == sid
        frames.append(frame["messages"])
    assert len(frames) >= 3
    assert all(sum(len(m["body"]) for m in f) <= TEST_LIMITS.max_request_bytes for f in frames)
    everything = [m for f in frames for m in f]
    assert ids(everything) == sorted(ids(everything))
    await broker.call("DELETE", f"/v1/queues/{queue}")  # frees the broker's body budget


async def test_a_deleted_queue_ends_its_subscription(broker: Broker, conn: tuple[Socket, Any]) -> None:
    ws, connection = conn
    queue = await new_queue(broker)
    sid = await consume(ws, queue)
    response, _ = await broker.call("DELETE", f"/v1/queues/{queue}")
    assert response.status == 200
    frame = await receive(ws)
    assert frame["subscription"] == sid and frame["error"]["code"] == "queue_not_found", frame
    await wait_for(lambda: connection.subscriptions.get(sid) is None, TIMEOUT_S, "the end")


def _bad_cases(queue: str) -> list[tuple[dict[str, Any], str]]:
    consume = {"op": "consume", "queue": queue}
    ack = {"op": "ack", "subscription": "SID", "leases": [[1, 1]]}
    return [
        ({"op": "consume"}, "invalid_argument"),
        ({**consume, "queue": "bad name!"}, "invalid_name"),
        ({**consume, "queue": unique("missing")}, "queue_not_found"),
        ({**consume, "prefetch": 0}, "invalid_argument"),
        ({**consume, "prefetch": MAX_PREFETCH + 1}, "invalid_argument"),
        ({**consume, "prefetch": True}, "invalid_argument"),
        ({**consume, "lease_ms": 0}, "invalid_argument"),
        ({**consume, "consumer": ""}, "invalid_name"),
        ({**consume, "credit": 5}, "invalid_argument"),
        ({**ack, "subscription": 12345}, "not_found"),
        ({"op": "ack", "leases": [[1, 1]]}, "invalid_argument"),
        ({"op": "ack", "subscription": "SID"}, "invalid_argument"),
        ({**ack, "leases": []}, "invalid_argument"),
        ({**ack, "leases": [[1]]}, "invalid_argument"),
        ({**ack, "leases": [[-1, 1]]}, "invalid_argument"),
        ({**ack, "leases": [[1, 1]] * (TEST_LIMITS.max_batch_messages + 1)}, "batch_too_large"),
        ({**ack, "requeue": True}, "invalid_argument"),
        ({**ack, "op": "nack", "requeue": "yes"}, "invalid_argument"),
        ({**ack, "op": "nack", "delay_ms": -1}, "invalid_argument"),
        ({**ack, "op": "extend", "lease_ms": 0}, "invalid_argument"),
        ({"op": "cancel", "subscription": 12345}, "not_found"),
        ({"op": "cancel"}, "invalid_argument"),
        ({"op": "credit", "subscription": "SID", "messages": 5}, "invalid_argument"),
        ({"op": "ack", "subscription": "STREAM_SID", "leases": [[1, 1]]}, "invalid_argument"),
        ({"op": "cancel", "subscription": "STREAM_SID"}, "invalid_argument"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases("q"))))
async def test_bad_requests_get_stable_codes(broker: Broker, conn: tuple[Socket, Any], case: int) -> None:
    ws, connection = conn
    ctx = ctx_of(broker)
    queue, stream = await new_queue(broker), unique("stream")
    await ctx.propose(DeclareStream(ctx.clock_ms(), stream, StreamArgs(partitions=1)), OkResult)
    sid = await consume(ws, queue, prefetch=1)
    stream_reply = await request(ws, {"op": "stream_subscribe", "id": 2, "stream": stream})
    stream_sid = stream_reply["ok"]["subscription"]
    frame, code = _bad_cases(queue)[case]
    placeholders = {"SID": sid, "STREAM_SID": stream_sid}
    frame = {key: placeholders.get(value, value) if isinstance(value, str) else value
             for key, value in frame.items()}
    reply = await request(ws, {**frame, "id": 40 + case})
    assert "error" in reply, reply
    assert reply["error"]["code"] == code, reply
    assert reply["error"]["message"] and reply["error"]["definite"] is True
    # Nothing changed: the consumer still consumes.
    assert len(connection.subscriptions) == 2
    await publish(broker, queue, [b"still served"])
    (message,) = await pushed(ws, sid, 1)
    assert message["body"] == b"still served"


async def test_subscriptions_per_connection_are_bounded_and_all_consume(
    broker: Broker, conn: tuple[Socket, Any]
) -> None:
    ws, connection = conn
    queue = await new_queue(broker)
    for request_id in range(MAX_SUBSCRIPTIONS):
        await send(ws, {"op": "consume", "id": request_id, "queue": queue, "prefetch": 1})
    replies = [await receive(ws) for _ in range(MAX_SUBSCRIPTIONS)]
    assert all("ok" in reply for reply in replies), replies
    refused = await request(ws, {"op": "consume", "id": 100, "queue": queue})
    assert refused["error"]["code"] == "resource_exhausted"
    # Far more subscriptions than the node's long-poll bound: those beyond it still consume.
    hub = ctx_of(broker).hub
    await wait_for(lambda: hub.waiter_count == MAX_WAITERS, TIMEOUT_S, "the waiter bound")
    for start in range(0, MAX_SUBSCRIPTIONS, 32):
        await publish(broker, queue, [f"{i}".encode() for i in range(start, start + 32)])
    by_subscription: dict[int, int] = {}
    while sum(by_subscription.values()) < MAX_SUBSCRIPTIONS:
        frame = await receive(ws)
        by_subscription[frame["subscription"]] = (by_subscription.get(frame["subscription"], 0)
                                                  + len(frame["messages"]))
    assert len(by_subscription) == MAX_SUBSCRIPTIONS and set(by_subscription.values()) == {1}
    assert len(connection.subscriptions) == MAX_SUBSCRIPTIONS


# -- wake-ups and back-pressure -------------------------------------------------------------------


async def test_idle_subscriptions_claim_nothing_and_are_woken_by_the_hub(
    broker: Broker, conn: tuple[Socket, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, connection = conn
    queue = await new_queue(broker)
    # A fast recheck: many idle looks, none of which may propose a claim.
    monkeypatch.setattr(ws_queues, "IDLE_RECHECK_S", 0.02)
    sid = await consume(ws, queue)
    sub = subscription(connection, sid)
    await wait_for(lambda: sub.idle_rechecks >= 5, TIMEOUT_S, "idle rechecks")
    assert sub.claims_proposed == 0
    # No recheck within the test's deadline: only the hub's wake-up can deliver in time.
    monkeypatch.setattr(ws_queues, "IDLE_RECHECK_S", 3600.0)
    rechecks = sub.idle_rechecks
    await wait_for(lambda: sub.waiting == "messages" and ctx_of(broker).hub.waiter_count == 1,
                   TIMEOUT_S, "a wait on the hub")
    await publish(broker, queue, [b"wake up"])
    (message,) = await pushed(ws, sid, 1)
    assert message["body"] == b"wake up"
    assert sub.claims_proposed == 1 and sub.idle_rechecks <= rechecks + 1


def _client_frame(payload: bytes) -> bytes:
    """A masked binary WebSocket frame (a client's) of up to 64 KiB."""
    mask = os.urandom(4)
    size = len(payload)
    head = bytes([0x82, 0x80 | size]) if size < 126 else struct.pack("!BBH", 0x82, 0x80 | 126, size)
    return head + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


BIG_LIMITS = ApiLimits(max_message_bytes=16_384, max_batch_messages=1000,
                       max_request_bytes=4 * 1024 * 1024, max_claim_messages=1000,
                       max_total_body_bytes=64 * 1024 * 1024, propose_timeout_s=5.0)


async def test_a_client_that_does_not_read_stalls_its_consumer(tmp_path: Path) -> None:
    big = await start_broker(tmp_path, BIG_LIMITS)
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    writer: asyncio.StreamWriter | None = None
    try:
        queue = await new_queue(big)
        body = b"r" * 16_000
        for _ in range(10):
            await publish(big, queue, [body] * 200)  # 32 MB in all
        hub = hub_of(big)
        url = big.client.make_url("/v1/ws")
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, (url.host, url.port))
        reader, writer = await asyncio.open_connection(sock=raw)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(f"GET /v1/ws HTTP/1.1\r\nHost: {url.host}\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
        assert head.startswith(b"HTTP/1.1 101"), head
        await wait_for(lambda: hub.connections, TIMEOUT_S, "the server to accept")
        (connection,) = hub.connections
        writer.write(_client_frame(msgpack.packb(
            {"op": "consume", "id": 1, "queue": queue, "prefetch": MAX_PREFETCH})))
        await wait_for(lambda: len(connection.subscriptions) == 1, TIMEOUT_S, "the subscription")
        sub = subscription(connection, 1)
        socket_writer = connection.ws._writer
        assert socket_writer is not None
        transport = socket_writer.transport
        await wait_for(lambda: transport.get_write_buffer_size() > 0 and sub.claims_proposed,
                       TIMEOUT_S, "the socket to fill up")
        # Time in which the subscription would go on claiming and buffering if it did not wait.
        await asyncio.sleep(0.5)
        pushed_bytes = sub.pushed_messages * len(body)
        assert pushed_bytes < 16_000_000, pushed_bytes
        assert transport.get_write_buffer_size() < 512 * 1024
        assert sub.waiting is None  # stuck in a push, not waiting for slots or messages
        # Claimed but not yet pushed: at most the one claim being pushed.
        leased = (await queue_info(big, queue))["leased"]
        assert leased <= sub.pushed_messages + BIG_LIMITS.max_claim_messages, leased
        assert sub.claims_proposed <= 1 + sub.pushed_messages // BIG_LIMITS.max_claim_messages
    finally:
        if writer is not None:
            writer.transport.abort()
        else:
            raw.close()
        await stop_broker(big)
