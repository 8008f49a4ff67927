"""Stream records pushed over `GET /v1/ws` by a real single-node broker: plain subscriptions with
credits, retention, bad requests, back-pressure; consumer-group members with rebalances,
commits and heartbeats."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgpack
import pytest
import pytest_asyncio

from raftmq.broker.api.context import CONTEXT_KEY, ApiContext
from raftmq.broker.api.ws import WS_HUB_KEY, WsHub
from raftmq.broker.api.ws_streams import MAX_SUBSCRIPTIONS, Subscription
from raftmq.broker.results import OkResult
from raftmq.broker.stream_commands import (
    DeclareStream,
    DeleteStream,
    JoinGroup,
    LeaveGroup,
    StreamArgs,
    StreamMessage,
    StreamPublish,
)
from raftmq.broker.stream_results import FetchResult, GroupAssignment, GroupInfo, StreamPublishResult
from tests.unit.test_api_fixtures import MAX_WAITERS, MODULE_LOOP, Broker, broker, unique, wait_for

__all__ = ["broker"]

pytestmark = MODULE_LOOP

Socket = aiohttp.ClientWebSocketResponse
TIMEOUT_S = 10.0


# -- helpers --------------------------------------------------------------------------------------


def ctx_of(broker: Broker) -> ApiContext:
    return broker.app[CONTEXT_KEY]


def hub_of(broker: Broker) -> WsHub:
    return broker.app[WS_HUB_KEY]


async def declare(broker: Broker, partitions: int = 1, **retention: int) -> str:
    ctx, name = ctx_of(broker), unique("stream")
    args = StreamArgs(partitions=partitions, **retention)
    await ctx.propose(DeclareStream(ctx.clock_ms(), name, args), OkResult)
    return name


async def publish(broker: Broker, stream: str, bodies: list[bytes], partition: int | None = None,
                  key: str | None = None) -> StreamPublishResult:
    ctx = ctx_of(broker)
    messages = tuple(StreamMessage(body, key, partition, {"n": i}) for i, body in enumerate(bodies))
    result, _ = await ctx.propose(StreamPublish(ctx.clock_ms(), stream, messages), StreamPublishResult)
    return result


def group_info(broker: Broker, stream: str, group: str) -> GroupInfo | None:
    return ctx_of(broker).read(lambda s: s.streams().group(stream, group))


def member_names(broker: Broker, stream: str, group: str) -> list[str]:
    info = group_info(broker, stream, group)
    return [] if info is None else [m.member for m in info.members]


async def send(ws: Socket, document: object) -> None:
    await ws.send_bytes(msgpack.packb(document, use_bin_type=True))


async def receive(ws: Socket) -> dict[str, Any]:
    message = await ws.receive(timeout=TIMEOUT_S)
    if message.type is aiohttp.WSMsgType.BINARY:
        document: dict[str, Any] = msgpack.unpackb(message.data, raw=False)
        return document
    if message.type is aiohttp.WSMsgType.TEXT:
        text_document: dict[str, Any] = json.loads(message.data)
        text_document["_text"] = True
        return text_document
    raise AssertionError(f"expected a frame, got {message!r}")


async def request(ws: Socket, document: dict[str, Any]) -> dict[str, Any]:
    """Send a request and return its reply (no pushes may come in between)."""
    await send(ws, document)
    reply = await receive(ws)
    assert reply.get("id") == document["id"], reply
    return reply


async def subscribe(ws: Socket, **fields: object) -> dict[str, Any]:
    reply = await request(ws, {"op": "stream_subscribe", "id": 1, **fields})
    assert "ok" in reply, reply
    ok: dict[str, Any] = reply["ok"]
    return ok


async def gather(
    ws: Socket, wanted: dict[int, int], ok_replies: int = 0
) -> dict[int, list[dict[str, Any]]]:
    """Pushed records per subscription until each has its count, and `ok_replies` successful
    replies in between; assignment frames are skipped (tests that expect one read it with
    `next_assignment`)."""
    records: dict[int, list[dict[str, Any]]] = {sid: [] for sid in wanted}
    while ok_replies or any(len(records[sid]) < count for sid, count in wanted.items()):
        frame = await receive(ws)
        if "id" in frame:
            assert "ok" in frame and ok_replies, frame
            ok_replies -= 1
            continue
        sid = frame.get("subscription")
        assert sid in wanted and "error" not in frame, frame
        if "assignment" in frame:
            continue
        batch = frame["messages"]
        assert batch and frame["next_offset"] == batch[-1]["offset"] + 1, frame
        assert all(m["offset"] == batch[0]["offset"] + i for i, m in enumerate(batch)), frame
        records[sid] += [{**record, "partition": frame["partition"]} for record in batch]
    for sid, count in wanted.items():
        assert len(records[sid]) == count, (sid, records[sid])
    return records


async def collect(ws: Socket, sid: int, messages: int) -> list[dict[str, Any]]:
    return (await gather(ws, {sid: messages}))[sid]


async def grant(ws: Socket, sid: int, messages: int, expect: int) -> tuple[dict[str, Any], list[Any]]:
    """Add credit; the reply and the `expect` records pushed thereafter, in either order."""
    await send(ws, {"op": "credit", "id": 5, "subscription": sid, "messages": messages})
    credit_reply: dict[str, Any] | None = None
    pushed: list[Any] = []
    while credit_reply is None or len(pushed) < expect:
        frame = await receive(ws)
        if frame.get("id") == 5:
            credit_reply = frame
        else:
            assert frame["subscription"] == sid and "error" not in frame, frame
            pushed += frame["messages"]
    assert len(pushed) == expect, pushed
    return credit_reply, pushed


async def nothing_pushed(ws: Socket) -> None:
    """Every push the server made before this call precedes the ping's reply on the socket."""
    assert await request(ws, {"op": "ping", "id": 999}) == {"id": 999, "ok": {}}


async def connect(broker: Broker) -> tuple[Socket, Any]:
    """A WebSocket and the server's connection object for it."""
    hub = hub_of(broker)
    before = set(hub.connections)
    ws = await broker.client.ws_connect("/v1/ws")
    await wait_for(lambda: hub.connections - before, TIMEOUT_S, "the server to accept")
    (connection,) = hub.connections - before
    return ws, connection


def subscription(connection: Any, sid: int) -> Subscription:
    found = connection.subscriptions.get(sid)
    assert found is not None, f"no subscription {sid}"
    assert isinstance(found, Subscription)
    return found


@pytest_asyncio.fixture(loop_scope="module")
async def quiet(broker: Broker) -> AsyncIterator[None]:
    """Every test starts with no connection, subscription or stream wait left by another."""
    ctx, hub = ctx_of(broker), hub_of(broker)
    await wait_for(lambda: not hub.connections and ctx.stream_waits.waiter_count == 0
                   and hub.in_flight == 0, TIMEOUT_S, "earlier connections to end")
    yield


@pytest_asyncio.fixture(loop_scope="module")
async def conn(broker: Broker, quiet: None) -> AsyncIterator[tuple[Socket, Any]]:
    ws, connection = await connect(broker)
    try:
        yield ws, connection
    finally:
        await ws.close()


# -- plain subscriptions --------------------------------------------------------------------------


async def test_earliest_gets_existing_records_then_new_ones(
    broker: Broker, conn: tuple[Socket, Any]
) -> None:
    ws, _ = conn
    stream = await declare(broker)
    await publish(broker, stream, [b"a", b"b", b"c"])
    ok = await subscribe(ws, stream=stream, offset="earliest", credit=100)
    assert ok["offset"] == 0
    sid = ok["subscription"]
    records = await collect(ws, sid, 3)
    assert [(r["offset"], r["body"], r["headers"]) for r in records] == [
        (0, b"a", {"n": 0}), (1, b"b", {"n": 1}), (2, b"c", {"n": 2})]
    assert all(r["key"] is None and r["partition"] == 0 and r["timestamp_ms"] > 0 for r in records)
    await publish(broker, stream, [b"d"])
    await publish(broker, stream, [b"e", b"f"])
    records = await collect(ws, sid, 3)
    assert [(r["offset"], r["body"]) for r in records] == [(3, b"d"), (4, b"e"), (5, b"f")]


async def test_json_subscription_pushes_json_frames(broker: Broker, conn: tuple[Socket, Any]) -> None:
    ws, _ = conn
    stream = await declare(broker)
    await publish(broker, stream, ["caf\u00e9".encode(), b"\xff"])
    await ws.send_str(json.dumps({"op": "stream_subscribe", "id": 3, "stream": stream,
                                  "offset": 0, "credit": 10}))
    reply = await receive(ws)
    assert reply["_text"] and reply["ok"]["offset"] == 0
    push = await receive(ws)
    assert push["_text"] and push["next_offset"] == 2
    first, second = push["messages"]
    assert first["body"] == "caf\u00e9" and base64.b64decode(second["body_b64"]) == b"\xff"
    assert "body" not in second


async def test_credit_bounds_what_is_pushed(broker: Broker, conn: tuple[Socket, Any]) -> None:
    ws, connection = conn
    stream = await declare(broker)
    await publish(broker, stream, [b"m%d" % i for i in range(10)])
    ok = await subscribe(ws, stream=stream, offset="earliest", credit=0)
    sid = ok["subscription"]
    sub = subscription(connection, sid)
    await wait_for(lambda: sub.waiting == "credit", TIMEOUT_S, "the subscription to want credit")
    await nothing_pushed(ws)

    credit_reply, pushed = await grant(ws, sid, 3, expect=3)
    assert credit_reply["ok"]["credit"] in (0, 3)  # before or after the push took it
    assert [m["offset"] for m in pushed] == [0, 1, 2]
    await wait_for(lambda: sub.waiting == "credit", TIMEOUT_S, "the credit to run out")
    assert sub.pushed_messages == 3 and sub.credit.available == 0
    await nothing_pushed(ws)

    credit_reply, pushed = await grant(ws, sid, 100, expect=7)
    assert "ok" in credit_reply
    assert [m["offset"] for m in pushed] == list(range(3, 10))
    await wait_for(lambda: sub.waiting == "data", TIMEOUT_S, "the subscription to wait for data")
    assert sub.credit.available == 93


async def test_latest_and_timestamp_starts(broker: Broker, conn: tuple[Socket, Any]) -> None:
    ws, _ = conn
    ctx = ctx_of(broker)
    stream = await declare(broker)
    await publish(broker, stream, [b"old1", b"old2"])
    first_batch = ctx.read(lambda s: s.streams().fetch(stream, 0, 0, 10, 1 << 20))
    assert isinstance(first_batch, FetchResult)
    old_ms = first_batch.records[-1][0]
    await wait_for(lambda: ctx.clock_ms() > old_ms, TIMEOUT_S, "the clock to move on")
    await publish(broker, stream, [b"new3", b"new4"])

    latest = await subscribe(ws, stream=stream, offset="latest")
    assert latest["offset"] == 4
    at_time = await subscribe(ws, stream=stream, timestamp_ms=old_ms + 1)
    assert at_time["offset"] == 2
    future = await subscribe(ws, stream=stream, timestamp_ms=ctx.clock_ms() + 3_600_000)
    assert future["offset"] == 4
    by_offset = await subscribe(ws, stream=stream, offset=3)
    assert by_offset["offset"] == 3

    subscriptions = [latest, at_time, future, by_offset]
    for request_id, sub in enumerate(subscriptions, 60):
        await send(ws, {"op": "credit", "id": request_id, "subscription": sub["subscription"],
                        "messages": 10})
    early = await gather(ws, {at_time["subscription"]: 2, by_offset["subscription"]: 1},
                         ok_replies=4)
    from_time, from_three = early[at_time["subscription"]], early[by_offset["subscription"]]
    assert [r["body"] for r in from_time] == [b"new3", b"new4"]
    assert [r["body"] for r in from_three] == [b"new4"]
    await nothing_pushed(ws)  # latest and the future timestamp have nothing yet
    await publish(broker, stream, [b"five"])
    seen = {}
    for _ in range(4):
        frame = await receive(ws)
        seen[frame["subscription"]] = [m["offset"] for m in frame["messages"]]
    assert seen == {sub["subscription"]: [4] for sub in subscriptions}


async def test_unsubscribe_stops_pushes(broker: Broker, conn: tuple[Socket, Any]) -> None:
    ws, connection = conn
    ctx = ctx_of(broker)
    stream = await declare(broker)
    ok = await subscribe(ws, stream=stream, offset="earliest", credit=100)
    sid = ok["subscription"]
    await wait_for(lambda: ctx.stream_waits.waiter_count == 1, TIMEOUT_S, "a stream wait")
    assert await request(ws, {"op": "unsubscribe", "id": 7, "subscription": sid}) == {"id": 7, "ok": {}}
    await wait_for(lambda: len(connection.subscriptions) == 0 and ctx.stream_waits.waiter_count == 0,
                   TIMEOUT_S, "the subscription to end")
    await publish(broker, stream, [b"unseen"])
    await nothing_pushed(ws)
    again = await request(ws, {"op": "credit", "id": 8, "subscription": sid, "messages": 1})
    assert again["error"]["code"] == "not_found"


async def test_falling_behind_retention_ends_with_offset_out_of_range(
    broker: Broker, conn: tuple[Socket, Any]
) -> None:
    ws, connection = conn
    stream = await declare(broker, max_messages=5)
    await publish(broker, stream, [b"a", b"b", b"c"])
    ok = await subscribe(ws, stream=stream, offset="earliest", credit=0)
    sid = ok["subscription"]
    assert ok["offset"] == 0
    await publish(broker, stream, [b"x%d" % i for i in range(10)])  # offsets 0..7 are trimmed
    await send(ws, {"op": "credit", "id": 9, "subscription": sid, "messages": 10})
    frames = [await receive(ws), await receive(ws)]
    (error_frame,) = [f for f in frames if "error" in f]
    assert error_frame["subscription"] == sid
    error = error_frame["error"]
    assert {k: error[k] for k in ("code", "partition", "offset", "first_offset", "next_offset")} == {
        "code": "offset_out_of_range", "partition": 0, "offset": 0, "first_offset": 8,
        "next_offset": 13}
    assert error["message"]
    await wait_for(lambda: len(connection.subscriptions) == 0, TIMEOUT_S, "the subscription to end")
    resumed = await subscribe(ws, stream=stream, offset=error["first_offset"], credit=10)
    records = await collect(ws, resumed["subscription"], 5)
    assert [r["offset"] for r in records] == list(range(8, 13))


async def test_a_deleted_stream_ends_its_subscription(broker: Broker, conn: tuple[Socket, Any]) -> None:
    ws, connection = conn
    ctx = ctx_of(broker)
    stream = await declare(broker)
    sid = (await subscribe(ws, stream=stream, offset="earliest"))["subscription"]
    await ctx.propose(DeleteStream(ctx.clock_ms(), stream), OkResult)
    await send(ws, {"op": "credit", "id": 4, "subscription": sid, "messages": 1})
    frames = [await receive(ws), await receive(ws)]
    (ended,) = [f for f in frames if "error" in f]
    assert ended["subscription"] == sid and ended["error"]["code"] == "stream_not_found"
    await wait_for(lambda: len(connection.subscriptions) == 0, TIMEOUT_S, "the subscription to end")


async def test_waits_beyond_the_node_bound_end_with_too_many_waiters(
    broker: Broker, conn: tuple[Socket, Any]
) -> None:
    ws, connection = conn
    ctx = ctx_of(broker)
    stream = await declare(broker)
    sids = [(await subscribe(ws, stream=stream, credit=1))["subscription"]
            for _ in range(MAX_WAITERS)]
    await wait_for(lambda: ctx.stream_waits.waiter_count == MAX_WAITERS, TIMEOUT_S, "full waits")
    extra = (await subscribe(ws, stream=stream, credit=1))["subscription"]
    ended = await receive(ws)
    assert ended["subscription"] == extra and ended["error"]["code"] == "too_many_waiters", ended
    await publish(broker, stream, [b"for the waiting ones"])
    records = await gather(ws, {sid: 1 for sid in sids})
    assert all(r[0]["body"] == b"for the waiting ones" for r in records.values())
    assert len(connection.subscriptions) == MAX_WAITERS


def _bad_cases(stream: str) -> list[tuple[dict[str, Any], str]]:
    sub = {"op": "stream_subscribe", "stream": stream}
    group = {"op": "group_subscribe", "stream": stream, "group": "g", "member": "m"}
    return [
        ({"op": "stream_subscribe"}, "invalid_argument"),
        ({"op": "stream_subscribe", "stream": "bad name!"}, "invalid_name"),
        ({"op": "stream_subscribe", "stream": unique("missing")}, "stream_not_found"),
        ({**sub, "partition": 1}, "partition_not_found"),
        ({**sub, "partition": -1}, "invalid_argument"),
        ({**sub, "offset": "middle"}, "invalid_argument"),
        ({**sub, "offset": -1}, "invalid_argument"),
        ({**sub, "offset": True}, "invalid_argument"),
        ({**sub, "offset": 0, "timestamp_ms": 0}, "invalid_argument"),
        ({**sub, "offset": 3}, "offset_out_of_range"),
        ({**sub, "credit": 100_001}, "invalid_argument"),
        ({**sub, "credits": 1}, "invalid_argument"),
        ({"op": "credit", "subscription": 12345, "messages": 1}, "not_found"),
        ({"op": "credit", "subscription": "1", "messages": 1}, "invalid_argument"),
        ({"op": "unsubscribe", "subscription": 12345}, "not_found"),
        ({"op": "unsubscribe"}, "invalid_argument"),
        ({"op": "commit", "subscription": 12345, "offsets": {"0": 1}}, "not_found"),
        ({**group, "reset": "middle"}, "invalid_argument"),
        ({**group, "session_timeout_ms": 5}, "invalid_argument"),
        ({**group, "member": ""}, "invalid_name"),
        ({"op": "group_subscribe", "stream": stream, "group": "g"}, "invalid_argument"),
        ({**group, "stream": unique("missing")}, "stream_not_found"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases("s"))))
async def test_bad_requests_get_stable_codes(broker: Broker, conn: tuple[Socket, Any], case: int) -> None:
    ws, connection = conn
    stream = await declare(broker)
    frame, code = _bad_cases(stream)[case]
    reply = await request(ws, {**frame, "id": 40 + case})
    assert "error" in reply, reply
    assert reply["error"]["code"] == code, reply
    assert reply["error"]["message"] and reply["error"]["definite"] is True
    if code == "offset_out_of_range":
        assert (reply["error"]["first_offset"], reply["error"]["next_offset"]) == (0, 0)
    await wait_for(lambda: len(connection.subscriptions) == 0, TIMEOUT_S, "no subscription")
    await nothing_pushed(ws)


async def test_plain_subscription_cannot_commit(broker: Broker, conn: tuple[Socket, Any]) -> None:
    ws, _ = conn
    stream = await declare(broker)
    sid = (await subscribe(ws, stream=stream))["subscription"]
    reply = await request(ws, {"op": "commit", "id": 2, "subscription": sid, "offsets": {"0": 0}})
    assert reply["error"]["code"] == "invalid_argument"


async def test_subscriptions_per_connection_are_bounded(broker: Broker, conn: tuple[Socket, Any]) -> None:
    ws, connection = conn
    stream = await declare(broker)
    for request_id in range(MAX_SUBSCRIPTIONS):
        await send(ws, {"op": "stream_subscribe", "id": request_id, "stream": stream})
    replies = [await receive(ws) for _ in range(MAX_SUBSCRIPTIONS)]
    assert all("ok" in reply for reply in replies)
    refused = await request(ws, {"op": "stream_subscribe", "id": 100, "stream": stream})
    assert refused["error"]["code"] == "resource_exhausted"
    assert len(connection.subscriptions) == MAX_SUBSCRIPTIONS


async def test_closing_the_connection_ends_its_subscriptions(broker: Broker, quiet: None) -> None:
    ctx = ctx_of(broker)
    stream = await declare(broker)
    ws, connection = await connect(broker)
    await subscribe(ws, stream=stream, credit=5)
    await wait_for(lambda: ctx.stream_waits.waiter_count == 1, TIMEOUT_S, "a stream wait")
    await ws.close()
    await wait_for(lambda: len(connection.subscriptions) == 0 and ctx.stream_waits.waiter_count == 0,
                   TIMEOUT_S, "the subscription to end with its connection")


def _client_frame(payload: bytes) -> bytes:
    """A masked binary WebSocket frame (a client's) of up to 64 KiB."""
    mask = os.urandom(4)
    size = len(payload)
    head = bytes([0x82, 0x80 | size]) if size < 126 else struct.pack("!BBH", 0x82, 0x80 | 126, size)
    return head + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


async def test_a_client_that_does_not_read_stalls_its_pushes(broker: Broker, quiet: None) -> None:
    stream = await declare(broker)
    body = b"r" * 4000
    for _ in range(20):
        await publish(broker, stream, [body] * 100)  # 8 MB in all
    hub = hub_of(broker)
    before = set(hub.connections)
    url = broker.client.make_url("/v1/ws")
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: small window
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, (url.host, url.port))
    reader, writer = await asyncio.open_connection(sock=raw)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(f"GET /v1/ws HTTP/1.1\r\nHost: {url.host}\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
        assert head.startswith(b"HTTP/1.1 101"), head
        await wait_for(lambda: hub.connections - before, TIMEOUT_S, "the server to accept")
        (connection,) = hub.connections - before
        subscribers = 6  # 48 MB to push: far beyond what socket buffers hold
        for request_id in range(subscribers):
            writer.write(_client_frame(msgpack.packb(
                {"op": "stream_subscribe", "id": request_id, "stream": stream,
                 "offset": "earliest", "credit": 100_000})))
        await wait_for(lambda: len(connection.subscriptions) == subscribers, TIMEOUT_S,
                       "the subscriptions")
        subs = [subscription(connection, sid) for sid in range(1, subscribers + 1)]
        socket_writer = connection.ws._writer
        assert socket_writer is not None
        transport = socket_writer.transport
        await wait_for(lambda: transport.get_write_buffer_size() > 0, TIMEOUT_S,
                       "the socket to fill up")
        # Time in which the subscriptions would go on buffering if they did not wait.
        await asyncio.sleep(0.5)
        pushed_bytes = sum(sub.pushed_messages for sub in subs) * len(body)
        assert pushed_bytes < 16_000_000, pushed_bytes
        # aiohttp's writer waits for a drain past 64 KiB; one push is at most a 64 KiB frame.
        assert transport.get_write_buffer_size() < 512 * 1024
        assert all(sub.waiting is None for sub in subs)  # stuck in a push, not waiting for data
    finally:
        writer.transport.abort()
    await wait_for(lambda: not hub.connections, TIMEOUT_S, "the connection to end")


# -- consumer groups ------------------------------------------------------------------------------


async def group_subscribe(
    ws: Socket, stream: str, group: str, member: str, **fields: object
) -> dict[str, Any]:
    reply = await request(ws, {"op": "group_subscribe", "id": 11, "stream": stream, "group": group,
                               "member": member, **fields})
    assert "ok" in reply, reply
    ok: dict[str, Any] = reply["ok"]
    return ok


async def next_assignment(ws: Socket, sid: int) -> dict[str, Any]:
    frame = await receive(ws)
    assert frame.get("subscription") == sid and "assignment" in frame, frame
    assignment: dict[str, Any] = frame["assignment"]
    return assignment


async def test_members_split_partitions_and_take_over_from_the_commit(
    broker: Broker, quiet: None
) -> None:
    stream, group = await declare(broker, partitions=4), unique("group")
    ws_a, connection_a = await connect(broker)
    ws_b, _ = await connect(broker)
    try:
        # Sessions far longer than the test: only a leave can move partitions.
        joined_a = await group_subscribe(ws_a, stream, group, "a", reset="earliest", credit=1000,
                                         session_timeout_ms=600_000)
        sid_a, first = joined_a["subscription"], joined_a["assignment"]
        assert (first["member"], first["partitions"], first["members"]) == ("a", [0, 1, 2, 3], ["a"])
        joined_b = await group_subscribe(ws_b, stream, group, "b", reset="earliest", credit=1000,
                                         session_timeout_ms=600_000)
        sid_b, second = joined_b["subscription"], joined_b["assignment"]
        assert second["generation"] == first["generation"] + 1
        assert (second["partitions"], second["members"]) == ([1, 3], ["a", "b"])
        rebalanced = await next_assignment(ws_a, sid_a)
        assert (rebalanced["generation"], rebalanced["partitions"]) == (second["generation"], [0, 2])

        for partition in range(4):
            await publish(broker, stream, [b"p%d-%d" % (partition, i) for i in range(3)], partition)
        got_a = await collect(ws_a, sid_a, 6)
        got_b = await collect(ws_b, sid_b, 6)
        assert sorted((r["partition"], r["offset"]) for r in got_a) == [
            (p, o) for p in (0, 2) for o in range(3)]
        assert sorted((r["partition"], r["offset"]) for r in got_b) == [
            (p, o) for p in (1, 3) for o in range(3)]
        assert all(r["body"] == b"p%d-%d" % (r["partition"], r["offset"]) for r in got_a + got_b)

        # b processed partition 1 up to offset 1 and partition 3 up to offset 0, then goes away.
        committed = await request(ws_b, {"op": "commit", "id": 12, "subscription": sid_b,
                                         "offsets": {"1": 2, "3": 1}})
        assert committed["ok"]["index"] > 0, committed
        await ws_b.close()
        taken_over = await next_assignment(ws_a, sid_a)
        assert (taken_over["partitions"], taken_over["members"]) == ([0, 1, 2, 3], ["a"])
        assert taken_over["committed"] == {"1": 2, "3": 1}
        assert taken_over["generation"] == second["generation"] + 1
        resumed = await collect(ws_a, sid_a, 3)
        assert sorted((r["partition"], r["offset"]) for r in resumed) == [(1, 2), (3, 1), (3, 2)]
        sub_a = subscription(connection_a, sid_a)
        await wait_for(lambda: sub_a.waiting == "data", TIMEOUT_S, "a to wait for data")
        await nothing_pushed(ws_a)
    finally:
        await ws_a.close()
        await ws_b.close()
    await wait_for(lambda: member_names(broker, stream, group) == [], TIMEOUT_S, "both to leave")


async def test_commits_use_the_current_generation(broker: Broker, conn: tuple[Socket, Any]) -> None:
    ws, _ = conn
    ctx = ctx_of(broker)
    stream, group = await declare(broker, partitions=2), unique("group")
    joined = await group_subscribe(ws, stream, group, "a", credit=0)
    sid, first_generation = joined["subscription"], joined["assignment"]["generation"]
    await publish(broker, stream, [b"x", b"y"], partition=0)
    other, _ = await ctx.propose(JoinGroup(ctx.clock_ms(), stream, group, "b", 60_000), GroupAssignment)
    try:
        moved = await next_assignment(ws, sid)
        assert (moved["generation"], moved["partitions"]) == (other.generation, [0])

        def commit(request_id: int, offsets: object, **extra: object) -> dict[str, Any]:
            return {"op": "commit", "id": request_id, "subscription": sid, "offsets": offsets, **extra}

        stale = await request(ws, commit(21, {"0": 2}, generation=first_generation))
        assert stale["error"]["code"] == "stale_generation", stale
        not_mine = await request(ws, commit(22, {"1": 0}))
        assert not_mine["error"]["code"] == "partition_not_assigned", not_mine
        for request_id, offsets in enumerate([{}, {"x": 1}, {"0": -1}, {"0": 3}, [0, 1]], 23):
            bad = await request(ws, commit(request_id, offsets))
            assert bad["error"]["code"] == "invalid_argument", (offsets, bad)
        accepted = await request(ws, commit(30, {"0": 2}))
        assert accepted["ok"]["index"] > 0, accepted
        info = group_info(broker, stream, group)
        assert info is not None and info.committed == ((0, 2),)
    finally:
        await ctx.propose(LeaveGroup(ctx.clock_ms(), stream, group, "b"), OkResult)


async def test_heartbeats_keep_a_member_past_its_session_timeout(broker: Broker, quiet: None) -> None:
    ctx = ctx_of(broker)
    stream, group = await declare(broker, partitions=2), unique("group")
    # A member nobody heartbeats for shows that sessions do run out.
    await ctx.propose(JoinGroup(ctx.clock_ms(), stream, group, "silent", 100), GroupAssignment)
    ws, connection = await connect(broker)
    try:
        joined = await group_subscribe(ws, stream, group, "live", session_timeout_ms=300, credit=10)
        first_expiry = joined["assignment"]["session_expires_ms"]

        def live_alone(generation: int | None = None) -> bool:
            info = group_info(broker, stream, group)
            assert info is not None
            names = [m.member for m in info.members]
            assert "live" in names, "the live member's session ran out"
            assert generation is None or info.generation == generation, "a rejoin"
            return names == ["live"]

        await wait_for(live_alone, TIMEOUT_S, "the silent member to expire")
        alone = joined["assignment"]
        if alone["members"] != ["live"]:  # else the silent one expired before live joined
            alone = await next_assignment(ws, joined["subscription"])
        assert alone["partitions"] == [0, 1]
        # Only the silent member's expiry moved the generation: live never had to rejoin.
        assert alone["generation"] == joined["assignment"]["generation"] + (alone is not joined["assignment"])

        def live_expiry() -> int:
            live_alone(alone["generation"])
            info = group_info(broker, stream, group)
            assert info is not None
            return info.members[0].session_expires_ms

        # Heartbeats carried the session through five more timeouts, in the same generation.
        await wait_for(lambda: live_expiry() > first_expiry + 1500, TIMEOUT_S, "heartbeats")
        await publish(broker, stream, [b"still here"], partition=1)
        records = await collect(ws, joined["subscription"], 1)
        assert records[0]["body"] == b"still here"
        assert len(connection.subscriptions) == 1
    finally:
        await ws.close()
    await wait_for(lambda: member_names(broker, stream, group) == [], TIMEOUT_S,
                   "the member to leave when its connection closes")


async def test_unsubscribe_leaves_the_group(broker: Broker, conn: tuple[Socket, Any]) -> None:
    ws, connection = conn
    stream, group = await declare(broker), unique("group")
    sid = (await group_subscribe(ws, stream, group, "m", session_timeout_ms=600_000))["subscription"]
    assert member_names(broker, stream, group) == ["m"]
    assert await request(ws, {"op": "unsubscribe", "id": 3, "subscription": sid}) == {"id": 3, "ok": {}}
    await wait_for(lambda: member_names(broker, stream, group) == [] and not connection.subscriptions,
                   TIMEOUT_S, "the member to leave")
