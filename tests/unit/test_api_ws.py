"""Pipelined publishing over `GET /v1/ws` against a real single-node broker: replies, bad frames,
the in-flight bound, connection loss; and the WsPublisher client."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgpack
import pytest
import pytest_asyncio

from raftmq.broker.api import handlers_messages
from raftmq.broker.api import ws as ws_module
from raftmq.broker.api.context import ApiContext
from raftmq.broker.api.publish_codec import PublishRequest
from raftmq.broker.api.ws import DEFAULT_MAX_IN_FLIGHT, WS_HUB_KEY, WsHub
from raftmq.broker.results import PublishResult
from raftmq.client import (
    IndefiniteError,
    InvalidRequestError,
    NotFoundError,
    OutgoingMessage,
    PublishReceipt,
    UnavailableError,
    WsPublisher,
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

Socket = aiohttp.ClientWebSocketResponse
TIMEOUT_S = 10.0


# -- helpers --------------------------------------------------------------------------------------


def hub_of(broker: Broker) -> WsHub:
    return broker.app[WS_HUB_KEY]


async def new_queue(broker: Broker) -> str:
    name = unique("q")
    response, _ = await broker.call("PUT", f"/v1/queues/{name}", {})
    assert response.status == 201
    return name


async def ready_count(broker: Broker, queue: str) -> int:
    response, body = await broker.call("GET", f"/v1/queues/{queue}")
    assert response.status == 200, body
    return int(body["ready"])


def publish_frame(request_id: int, queue: str, body: bytes = b"x", **extra: object) -> dict[str, Any]:
    return {"op": "publish", "id": request_id, "exchange": "",
            "messages": [{"routing_key": queue, "body": body}], **extra}


async def send(ws: Socket, document: object) -> None:
    await ws.send_bytes(msgpack.packb(document, use_bin_type=True))


async def receive(ws: Socket) -> dict[str, Any]:
    message = await ws.receive(timeout=TIMEOUT_S)
    if message.type is aiohttp.WSMsgType.BINARY:
        document: dict[str, Any] = msgpack.unpackb(message.data, raw=False)
    elif message.type is aiohttp.WSMsgType.TEXT:
        document = json.loads(message.data)
        document["_text"] = True
    else:
        raise AssertionError(f"expected a reply, got {message!r}")
    return document


async def replies_by_id(ws: Socket, count: int) -> dict[int, dict[str, Any]]:
    replies: dict[int, dict[str, Any]] = {}
    for _ in range(count):
        reply = await receive(ws)
        assert reply["id"] not in replies, "two replies for one request"
        replies[reply["id"]] = reply
    return replies


async def assert_alive(ws: Socket) -> None:
    await send(ws, {"op": "ping", "id": 424242})
    assert await receive(ws) == {"id": 424242, "ok": {}}


class Gate:
    """Holds every WebSocket publish before it is proposed, until opened: proposals that
    would otherwise complete in microseconds stay in flight for as long as a test needs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened = asyncio.Event()
        propose = handlers_messages.propose_publish

        async def gated(ctx: ApiContext, parsed: PublishRequest) -> tuple[PublishResult, int]:
            await self.opened.wait()
            return await propose(ctx, parsed)

        monkeypatch.setattr(ws_module, "propose_publish", gated)


@pytest_asyncio.fixture(loop_scope="module")
async def gate(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gate]:
    held = Gate(monkeypatch)
    try:
        yield held
    finally:
        held.opened.set()


@pytest_asyncio.fixture(loop_scope="module")
async def ws(broker: Broker) -> AsyncIterator[Socket]:
    # Every test starts with nothing left in flight by the ones before it.
    await wait_for(lambda: hub_of(broker).in_flight == 0, TIMEOUT_S, "earlier requests to settle")
    socket = await broker.client.ws_connect("/v1/ws")
    try:
        yield socket
    finally:
        await socket.close()


# -- the protocol ---------------------------------------------------------------------------------


async def test_pipelined_publishes_all_confirmed_with_their_ids(broker: Broker, ws: Socket) -> None:
    queue = await new_queue(broker)
    # Any 64-bit integers, in no particular order: the server echoes, never interprets them.
    ids = [-(2**63), 2**64 - 1, *range(-200, 298)]
    for request_id in ids:
        await send(ws, publish_frame(request_id, queue, body=str(request_id).encode()))
    replies = await replies_by_id(ws, len(ids))
    assert set(replies) == set(ids)
    for reply in replies.values():
        assert reply["ok"]["accepted"] == 1 and reply["ok"]["duplicate"] is False, reply
    assert await ready_count(broker, queue) == len(ids)


async def test_receipt_is_the_http_receipt(broker: Broker, ws: Socket) -> None:
    queue = await new_queue(broker)
    http_body = {"exchange": "", "messages": [{"routing_key": queue, "body": "a"},
                                              {"routing_key": unique("nowhere"), "body": "b"}]}
    _, http_receipt = await broker.call("POST", "/v1/publish", http_body)
    await send(ws, {"op": "publish", "id": 1, **http_body})
    reply = await receive(ws)
    assert reply["ok"]["index"] > http_receipt["index"]
    assert {**reply["ok"], "index": 0} == {**http_receipt, "index": 0}
    assert reply["ok"]["unroutable"] == [1]


async def test_replies_come_in_completion_order(broker: Broker, ws: Socket, gate: Gate) -> None:
    queue = await new_queue(broker)
    await send(ws, publish_frame(1, queue))
    await send(ws, {"op": "ping", "id": 2})
    assert await receive(ws) == {"id": 2, "ok": {}}
    gate.opened.set()
    assert (await receive(ws))["ok"]["accepted"] == 1


async def test_json_text_frames_get_json_text_replies(broker: Broker, ws: Socket) -> None:
    queue = await new_queue(broker)
    body = "caf\u00e9"
    await ws.send_str(json.dumps({"op": "publish", "id": 7, "exchange": "",
                                  "messages": [{"routing_key": queue, "body": body}]}))
    reply = await receive(ws)
    assert reply["_text"] and reply["id"] == 7 and reply["ok"]["accepted"] == 1
    _, claimed = await broker.call("POST", f"/v1/queues/{queue}/claim", {})
    assert base64.b64decode(claimed["messages"][0]["body_b64"]) == body.encode()
    await ws.send_str('{"op": "ping", "id": 8}')
    assert await receive(ws) == {"id": 8, "ok": {}, "_text": True}


BAD_FRAMES: list[tuple[object, str, int | None]] = [
    # (frame: bytes are sent raw, str as a text frame, anything else msgpack-encoded), code, id
    (b"\xc1", "malformed_request", None),
    (b"", "malformed_request", None),
    ("{not json", "malformed_request", None),
    ('{"op": "ping", "id": NaN}', "malformed_request", None),
    ([1, 2], "malformed_request", None),
    ({"op": "ping"}, "malformed_request", None),
    ({"op": "ping", "id": "7"}, "malformed_request", None),
    ({"op": "ping", "id": True}, "malformed_request", None),
    ('{"op": "ping", "id": 100000000000000000000000}', "malformed_request", None),
    ({"id": 5}, "malformed_request", 5),
    ({"id": 6, "op": 3}, "malformed_request", 6),
    ({"id": 7, "op": "consume"}, "invalid_argument", 7),
    ({"id": 8, "op": "ping", "extra": 1}, "invalid_argument", 8),
    ({"id": 9, "op": "publish", "exchange": "", "messages": "x"}, "invalid_argument", 9),
    ({"id": 10, "op": "publish", "messages": [{"body": 1}]}, "invalid_argument", 10),
    ({"id": 11, "op": "publish", "messages": [{"body": "x"}], "typo": 1}, "invalid_argument", 11),
    ({"id": 12, "op": "publish", "messages": [{"body": "x"}] * 51}, "batch_too_large", 12),
    ({"id": 13, "op": "publish", "messages": [{"body": "x" * 5000}]}, "message_too_large", 13),
    ({"id": 14, "op": "publish", "exchange": "no-such-exchange", "messages": [{"body": "x"}]},
     "exchange_not_found", 14),
    ({"id": 15, "op": "publish", "messages": [{"body": "x"}], "producer_id": "p"},
     "invalid_argument", 15),
]


@pytest.mark.parametrize(("frame", "code", "request_id"), BAD_FRAMES)
async def test_bad_frames_get_stable_errors_and_the_connection_stays(
    broker: Broker, ws: Socket, frame: object, code: str, request_id: int | None
) -> None:
    if isinstance(frame, bytes):
        await ws.send_bytes(frame)
    elif isinstance(frame, str):
        await ws.send_str(frame)
    else:
        await send(ws, frame)
    reply = await receive(ws)
    assert reply["id"] == request_id, reply
    assert reply["_text"] if isinstance(frame, str) else "_text" not in reply
    error = reply["error"]
    assert error["code"] == code, error
    assert error["definite"] is True and error["message"]
    assert error["leader"] == broker.node.node_metadata()["n1"]["http_url"]
    await assert_alive(ws)


async def test_invalid_utf8_text_frame_is_an_error_reply(ws: Socket) -> None:
    await ws.send_frame(b'{"op": "ping", "id": 1, "x": "\xff"}', aiohttp.WSMsgType.TEXT)
    reply = await receive(ws)
    assert reply["id"] is None and reply["error"]["code"] == "malformed_request"
    await assert_alive(ws)


async def test_frame_at_the_limit_is_served_and_above_it_closes(broker: Broker, ws: Socket) -> None:
    queue = await new_queue(broker)
    limit = TEST_LIMITS.max_request_bytes

    def frame(filler_bytes: int) -> bytes:
        messages = [{"routing_key": queue, "body": b"m" * 4000}] * 16
        messages.append({"routing_key": queue, "body": b"f" * filler_bytes})
        return bytes(msgpack.packb({"op": "publish", "id": 1, "messages": messages}))

    # The filler's bin16 header is one byte longer than the empty body's bin8 one.
    at_limit = frame(limit - len(frame(0)) - 1)
    assert len(at_limit) == limit
    await ws.send_bytes(at_limit)
    assert (await receive(ws))["ok"]["accepted"] == 17

    await ws.send_bytes(b"\x00" * (TEST_LIMITS.max_request_bytes + 1))
    closing = await ws.receive(timeout=TIMEOUT_S)
    assert closing.type is aiohttp.WSMsgType.CLOSE
    assert closing.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    assert "exceeds the limit" in str(closing.extra)
    # Only that connection is gone.
    async with broker.client.session.ws_connect(broker.client.make_url("/v1/ws")) as other:
        await assert_alive(other)


async def test_plain_get_is_refused_with_an_error_document(broker: Broker) -> None:
    response, body = await broker.call("GET", "/v1/ws")
    assert response.status == 400 and body["error"]["code"] == "malformed_request"


async def test_in_flight_bound_stops_reading(broker: Broker, ws: Socket, gate: Gate) -> None:
    hub, queue = hub_of(broker), await new_queue(broker)
    frames_before = hub.frames_read
    total = DEFAULT_MAX_IN_FLIGHT + 100
    for request_id in range(total):
        await send(ws, publish_frame(request_id, queue))
    await wait_for(lambda: hub.in_flight == DEFAULT_MAX_IN_FLIGHT, TIMEOUT_S, "a full window")
    # Time for the server to read further if it wrongly would; the frames are all sent.
    await asyncio.sleep(0.3)
    assert hub.frames_read - frames_before == DEFAULT_MAX_IN_FLIGHT
    assert hub.in_flight == DEFAULT_MAX_IN_FLIGHT
    gate.opened.set()
    replies = await replies_by_id(ws, total)
    assert set(replies) == set(range(total))
    assert all(reply["ok"]["accepted"] == 1 for reply in replies.values())
    assert hub.peak_connection_in_flight == DEFAULT_MAX_IN_FLIGHT
    assert await ready_count(broker, queue) == total


async def test_idempotent_retry_is_a_duplicate(broker: Broker, ws: Socket) -> None:
    queue, producer = await new_queue(broker), unique("producer")
    for request_id in (1, 2):
        await send(ws, publish_frame(request_id, queue, producer_id=producer, sequence=1))
        reply = await receive(ws)
        assert reply["ok"]["duplicate"] is (request_id == 2), reply
    assert await ready_count(broker, queue) == 1


async def raw_upgrade(broker: Broker) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket opened by hand, so that it can be cut without a closing handshake."""
    url = broker.client.make_url("/v1/ws")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /v1/ws HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def masked_binary_frame(payload: bytes) -> bytes:
    assert len(payload) < 126
    mask = os.urandom(4)
    return bytes([0x82, 0x80 | len(payload)]) + mask + bytes(
        byte ^ mask[i % 4] for i, byte in enumerate(payload))


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_disconnect_with_publishes_in_flight(
    broker: Broker, gate: Gate, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    hub, queue = hub_of(broker), await new_queue(broker)
    await wait_for(lambda: hub.in_flight == 0, TIMEOUT_S, "earlier requests to settle")
    if how == "close":
        ws = await broker.client.ws_connect("/v1/ws")
        for request_id in range(50):
            await send(ws, publish_frame(request_id, queue))
        await wait_for(lambda: hub.in_flight == 50, TIMEOUT_S, "publishes in flight")
        await ws.close()
    else:
        _, writer = await raw_upgrade(broker)
        for request_id in range(50):
            writer.write(masked_binary_frame(msgpack.packb(publish_frame(request_id, queue))))
        await wait_for(lambda: hub.in_flight == 50, TIMEOUT_S, "publishes in flight")
        writer.transport.abort()
    await wait_for(lambda: not hub.connections, TIMEOUT_S, "the server to drop the connection")
    with caplog.at_level(logging.WARNING, logger="raftmq.broker.api"):
        gate.opened.set()
        await wait_for(lambda: hub.in_flight == 0, TIMEOUT_S, "orphaned publishes to settle")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # The publishes were made, only their replies had nowhere to go.
    assert await ready_count(broker, queue) == 50
    async with broker.client.session.ws_connect(broker.client.make_url("/v1/ws")) as other:
        await assert_alive(other)


# -- the client -----------------------------------------------------------------------------------


def message(queue: str, body: bytes = b"x") -> list[OutgoingMessage]:
    return [OutgoingMessage(body, routing_key=queue)]


async def test_publisher_confirms_everything(broker: Broker) -> None:
    queue = await new_queue(broker)
    async with WsPublisher(broker.url, window=16) as publisher:
        confirms = []
        for number in range(300):
            confirms.append(await publisher.publish("", message(queue, b"%d" % number)))
            assert publisher.in_flight <= 16
        receipts = await asyncio.gather(*confirms)
        await publisher.flush()
        assert publisher.in_flight == 0
    assert all(isinstance(r, PublishReceipt) and r.accepted == 1 for r in receipts)
    assert len({r.index for r in receipts}) > 1
    assert await ready_count(broker, queue) == 300


async def test_publisher_window_bounds_what_the_server_holds(broker: Broker, gate: Gate) -> None:
    hub, queue = hub_of(broker), await new_queue(broker)
    await wait_for(lambda: hub.in_flight == 0, TIMEOUT_S, "earlier requests to settle")
    async with WsPublisher(broker.url, window=8) as publisher:
        confirms: list[asyncio.Future[PublishReceipt]] = []

        async def publish_all() -> None:
            for _ in range(20):
                confirms.append(await publisher.publish("", message(queue)))

        sender = asyncio.create_task(publish_all())
        await wait_for(lambda: hub.in_flight == 8, TIMEOUT_S, "a full client window")
        await asyncio.sleep(0.2)  # room for a ninth frame if the window leaked
        assert hub.in_flight == 8 and len(confirms) == 8 and not sender.done()
        gate.opened.set()
        await sender
        assert all(r.accepted == 1 for r in await asyncio.gather(*confirms))


async def test_publisher_raises_the_server_errors(broker: Broker) -> None:
    queue = await new_queue(broker)
    async with WsPublisher(broker.url) as publisher:
        missing = await publisher.publish(unique("no-exchange"), message(queue))
        with pytest.raises(NotFoundError) as not_found:
            await missing
        assert not_found.value.code == "exchange_not_found" and not_found.value.definite
        invalid = await publisher.publish("", message("k" * 300))
        with pytest.raises(InvalidRequestError):
            await invalid
        producer = unique("producer")
        first = await (await publisher.publish("", message(queue), producer, 5))
        again = await (await publisher.publish("", message(queue), producer, 5))
        assert (first.duplicate, again.duplicate) == (False, True)


async def test_publisher_connection_loss_fails_in_flight_as_indefinite(
    broker: Broker, gate: Gate
) -> None:
    hub, queue = hub_of(broker), await new_queue(broker)
    await wait_for(lambda: hub.in_flight == 0, TIMEOUT_S, "earlier requests to settle")
    publisher = WsPublisher(broker.url)
    await publisher.connect()
    try:
        confirms = [await publisher.publish("", message(queue)) for _ in range(5)]
        await wait_for(lambda: hub.in_flight == 5, TIMEOUT_S, "publishes in flight")
        await hub.close_all()
        for confirm in confirms:
            with pytest.raises(IndefiniteError) as lost:
                await confirm
            assert lost.value.code == "connection_error" and not lost.value.definite
        with pytest.raises(UnavailableError):
            await publisher.publish("", message(queue))
    finally:
        await publisher.close()


async def test_publisher_to_a_closed_port_is_unavailable() -> None:
    publisher = WsPublisher(f"http://127.0.0.1:{free_port()}", connect_timeout_s=2.0)
    with pytest.raises(UnavailableError):
        await publisher.connect()
    await publisher.close()
