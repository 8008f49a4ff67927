"""Pipelined publishing over one WebSocket: `GET /v1/ws`.

Per-message HTTP requests cost more CPU than the publish itself; a persistent connection with
pipelined confirms (as AMQP publisher confirms) does not. Full description: docs/websocket.md.

Frames: binary frames are msgpack, text frames JSON, each one document (a map). A reply goes in
the format of its request. Client -> server:

    {"op": "publish", "id": <int>, "exchange": "", "messages": [...], "producer_id"?, "sequence"?}
    {"op": "ping", "id": <int>}
    stream_subscribe, group_subscribe, credit, commit, unsubscribe: see ws_streams.py
    consume, ack, nack, extend, cancel (queue push consumers): see ws_queues.py

The fields besides `op` and `id` are exactly those of `POST /v1/publish`, validated by the same
code. Server -> client, exactly one reply per request frame, in completion order (not request
order); `id` is echoed:

    {"id": n, "ok": {<the receipt POST /v1/publish returns>}}      ping: {"id": n, "ok": {}}
    {"id": n, "error": {"code", "message", "definite", "leader"}}   codes/definite as in HTTP

A frame that is not a map, has no integer `id` (the reply then has `"id": null`), no string
`op`, or an unknown `op` gets an error reply and the connection stays open. Only protocol abuse
closes it: a frame above `ApiLimits.max_request_bytes` is closed with 1009 (message too big),
broken WebSocket framing by aiohttp with 1002; server shutdown closes with 1001.

Bounds: each request frame holds one of `max_in_flight` slots from when it is read until its
reply is written to the socket; with all slots taken the server stops reading, so TCP
back-pressure reaches the client and nothing is buffered beyond aiohttp's fixed read buffer.
The reply queue therefore never holds more than `max_in_flight` replies. aiohttp's heartbeat
(a ping after `heartbeat_s` without incoming data, closed if no pong within half that) notices
dead peers; it is longer than the propose timeout, so a full window (which stops reading, pongs
included) frees slots before it could be mistaken for a dead peer.

New ops (consume with credits, stream fetch) are one function each in `_OPS`: it validates its
request, then replies exactly once through `_Connection.reply`/`reply_error`, now or later.

Stream and queue subscriptions (ws_streams.py, ws_queues.py) also push frames that answer no
request. They hold no slot; instead each push awaits its socket write (`push`, one at a time per
connection), so a client that stops reading stops the pushes too, and credit (prefetch, for
queues) bounds what it may be sent. A subscription replies to its request from its own task
(`send_reply`), so that its pushes can never overtake that reply. Its tasks end with the
connection (`subscriptions.close()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web

from raftmq.broker.api.codec import Fields
from raftmq.broker.api.context import ApiContext, context_of
from raftmq.broker.api.errors import ApiError, bad_request

# The HTTP path's own helpers: one definition of how a publish is proposed and answered.
from raftmq.broker.api.handlers_messages import propose_publish, publish_receipt
from raftmq.broker.api.publish_codec import parse_publish
from raftmq.broker.api.ws_queues import QUEUE_OPS
from raftmq.broker.api.ws_stream_group import GROUP_OPS
from raftmq.broker.api.ws_streams import STREAM_OPS, StreamSubscriptions
from raftmq.broker.results import PublishResult
from raftmq.client import errors as codes
from raftmq.client.wire import WireFormat, WireValueError, decode_document, encode_document

__all__ = [
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_MAX_IN_FLIGHT",
    "WS_HUB_KEY",
    "WS_PATH",
    "WsHub",
    "WsSettings",
    "install",
]

WS_PATH = "/v1/ws"
DEFAULT_MAX_IN_FLIGHT = 1024
DEFAULT_HEARTBEAT_S = 30.0
# What msgpack can carry, so that every id can be echoed in either format.
_MIN_ID = -(2**63)
_MAX_ID = 2**64 - 1
_FORMAT_BY_OPCODE = {WSMsgType.BINARY: WireFormat.MSGPACK, WSMsgType.TEXT: WireFormat.JSON}

log = logging.getLogger(__name__)
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class WsSettings:
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    heartbeat_s: float = DEFAULT_HEARTBEAT_S


class WsHub:
    """The WebSocket connections of one app: closed at shutdown; counters for tests and metrics."""

    def __init__(self, settings: WsSettings) -> None:
        if settings.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.settings = settings
        self.connections: set[_Connection] = set()
        self.frames_read = 0
        # Requests read and not yet answered, over all connections (closed ones included, until
        # their proposals settle).
        self.in_flight = 0
        # The most any one connection ever held at once: never above settings.max_in_flight.
        self.peak_connection_in_flight = 0

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY, reason: str = "") -> None:
        for connection in list(self.connections):
            await connection.close(code, reason)


WS_HUB_KEY = web.AppKey("raftmq_ws_hub", WsHub)


class _Socket(web.WebSocketResponse[Literal[False]]):
    """aiohttp closes an oversized frame's connection itself, without a reason; this adds one."""

    def __init__(self, max_frame_bytes: int, heartbeat_s: float) -> None:
        # No compression: this endpoint exists to save CPU. Text frames stay bytes: the JSON
        # decoder checks UTF-8 itself.
        # aiohttp refuses a frame of exactly max_msg_size; the limit itself is allowed here.
        super().__init__(heartbeat=heartbeat_s, max_msg_size=max_frame_bytes + 1, compress=False,
                         decode_text=False)
        self._too_big_reason = f"frame exceeds the limit of {max_frame_bytes} bytes".encode()

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message:
            message = self._too_big_reason
        return await super().close(code=code, message=message, drain=drain)


@dataclass(frozen=True)
class _Request:
    request_id: int
    opcode: WSMsgType
    # The frame's document without `op` and `id`: exactly the op's own fields.
    document: dict[str, Any]


class _Connection:
    def __init__(self, ws: _Socket, ctx: ApiContext, hub: WsHub) -> None:
        self.ws = ws
        self.ctx = ctx
        self._hub = hub
        self._max_in_flight = hub.settings.max_in_flight
        self.in_flight = 0
        self._open = True
        self._slot_freed: asyncio.Future[None] | None = None
        # Bounded by the slots: a reply is queued only for a request that holds one.
        self._replies: asyncio.Queue[tuple[bytes, WSMsgType]] = asyncio.Queue(self._max_in_flight)
        # Strong references: the loop keeps only weak ones to tasks.
        self._tasks: set[asyncio.Task[Any]] = set()
        # Pushes take turns, so that each one waits for the socket to drain what came before.
        self._push_lock = asyncio.Lock()
        self.subscriptions = StreamSubscriptions()

    async def serve(self) -> None:
        writer = asyncio.create_task(self._write_replies(), name="raftmq-ws-writer")
        try:
            await self._read_frames()
        finally:
            self._stop_replying()
            self.subscriptions.close()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self._drop_queued_replies()

    async def close(self, code: int, reason: str) -> None:
        self._stop_replying()
        await self.ws.close(code=code, message=reason.encode()[:120])

    # -- reading --------------------------------------------------------------------------------

    async def _read_frames(self) -> None:
        ws = self.ws
        while True:
            if self.in_flight >= self._max_in_flight:
                await self._wait_for_slot()
            message = await ws.receive()
            opcode = message.type
            if opcode is WSMsgType.BINARY or opcode is WSMsgType.TEXT:
                self._on_frame(message.data, opcode)
            else:
                # CLOSE, CLOSED, CLOSING or ERROR: aiohttp has answered or closed already.
                return

    async def _wait_for_slot(self) -> None:
        loop = asyncio.get_running_loop()
        while self._open and self.in_flight >= self._max_in_flight:
            self._slot_freed = loop.create_future()
            await self._slot_freed

    def _on_frame(self, data: bytes, opcode: WSMsgType) -> None:
        self._take_slot()
        request_id: int | None = None
        try:
            document = decode_document(data, _FORMAT_BY_OPCODE[opcode])
            if not isinstance(document, dict):
                raise bad_request("a frame must be a map", codes.MALFORMED_REQUEST)
            request_id = _request_id(document)
            op = document.pop("op", None)
            if type(op) is not str:
                raise bad_request("'op' must be a string", codes.MALFORMED_REQUEST)
            handler = _OPS.get(op)
            if handler is None:
                known = ", ".join(sorted(_OPS))
                raise bad_request(f"unknown op {op[:64]!r}; known ops: {known}")
            handler(self, _Request(request_id, opcode, document))
        except WireValueError as exc:
            self.reply_error(None, opcode, bad_request(str(exc)[:300], codes.MALFORMED_REQUEST))
        except ApiError as exc:
            self.reply_error(request_id, opcode, exc)
        except Exception:
            log.exception("unexpected error serving a WebSocket frame")
            self.reply_error(request_id, opcode, _internal_error())

    # -- replying -------------------------------------------------------------------------------

    def reply(self, request_id: int | None, opcode: WSMsgType, ok: object) -> None:
        self._queue_reply({"id": request_id, "ok": ok}, opcode)

    def reply_error(self, request_id: int | None, opcode: WSMsgType, error: ApiError) -> None:
        leader = self.ctx.http_url_of(error.leader_id) or self.ctx.leader_url()
        # As over HTTP: the standard fields win over an extra one of the same name.
        document: dict[str, object] = {"id": request_id, "error": {
            **error.extra, "code": error.code, "message": error.message,
            "definite": error.definite, "leader": leader,
        }}
        self._queue_reply(document, opcode)

    async def send_reply(self, request_id: int, opcode: WSMsgType, ok: object) -> bool:
        """`reply` written from the op's own task before it goes on: what the task pushes
        afterwards follows the reply on the socket. False if the connection is gone."""
        try:
            return await self.push({"id": request_id, "ok": ok}, opcode)
        finally:
            self._release_slot()

    async def push(self, document: dict[str, object], opcode: WSMsgType) -> bool:
        """Write a frame that answers no request, and wait until the socket took it (aiohttp
        waits for the transport to drain once it holds more than its writer limit): the
        pusher's back-pressure. False once the connection is gone."""
        payload = encode_document(document, _FORMAT_BY_OPCODE[opcode])
        async with self._push_lock:
            if not self._open:
                return False
            try:
                await self.ws.send_frame(payload, opcode)
            except ConnectionError:
                self._stop_replying()
                return False
        return True

    def _queue_reply(self, document: dict[str, object], opcode: WSMsgType) -> None:
        if not self._open:
            self._release_slot()
            return
        wire_format = _FORMAT_BY_OPCODE[opcode]
        try:
            payload = encode_document(document, wire_format)
        except (ValueError, TypeError, OverflowError):
            # An error message quoting text that cannot be encoded; never lose the reply.
            log.exception("cannot encode a WebSocket reply")
            document = {"id": document["id"], "error": _internal_error_fields()}
            payload = encode_document(document, wire_format)
        self._replies.put_nowait((payload, opcode))

    async def _write_replies(self) -> None:
        replies, ws = self._replies, self.ws
        while True:
            payload, opcode = await replies.get()
            try:
                await ws.send_frame(payload, opcode)
            except ConnectionError:
                self._stop_replying()
                self._drop_queued_replies()
                return
            finally:
                self._release_slot()

    def _stop_replying(self) -> None:
        self._open = False
        self._wake_reader()

    def _drop_queued_replies(self) -> None:
        while not self._replies.empty():
            self._replies.get_nowait()
            self._release_slot()

    # -- slots ----------------------------------------------------------------------------------

    def _take_slot(self) -> None:
        self.in_flight += 1
        hub = self._hub
        hub.in_flight += 1
        hub.frames_read += 1
        if self.in_flight > hub.peak_connection_in_flight:
            hub.peak_connection_in_flight = self.in_flight

    def _release_slot(self) -> None:
        self.in_flight -= 1
        self._hub.in_flight -= 1
        self._wake_reader()

    def _wake_reader(self) -> None:
        waiter = self._slot_freed
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- ops ------------------------------------------------------------------------------------

    def start(
        self, coroutine: Coroutine[Any, Any, ResultT], on_done: Callable[[asyncio.Task[ResultT]], None]
    ) -> None:
        """Run an op's asynchronous part; `on_done` must reply (and call `finish`)."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(on_done)

    def finish(self, task: asyncio.Task[Any]) -> BaseException | None:
        """Forget a finished task; its exception (a CancelledError when cancelled), or None."""
        self._tasks.discard(task)
        if task.cancelled():
            return asyncio.CancelledError()
        return task.exception()


def _request_id(document: dict[str, Any]) -> int:
    """Take `id` out of a request document (what remains is `op` and the op's own fields)."""
    request_id = document.pop("id", None)
    # bool is an int subclass: `true` must not pass as 1.
    if type(request_id) is not int or not _MIN_ID <= request_id <= _MAX_ID:
        raise bad_request("'id' must be an integer of at most 64 bits", codes.MALFORMED_REQUEST)
    return request_id


def _internal_error() -> ApiError:
    return ApiError(codes.INTERNAL_ERROR, "internal error; see the node's log", definite=False)


def _internal_error_fields() -> dict[str, object]:
    error = _internal_error()
    return {"code": error.code, "message": error.message, "definite": False, "leader": None}


def _ping(connection: _Connection, request: _Request) -> None:
    Fields(request.document, frozenset())  # a ping has no fields of its own
    connection.reply(request.request_id, request.opcode, {})


def _publish(connection: _Connection, request: _Request) -> None:
    ctx = connection.ctx
    parsed = parse_publish(request.document, ctx.limits)
    request_id, opcode = request.request_id, request.opcode

    def on_done(task: asyncio.Task[tuple[PublishResult, int]]) -> None:
        error = connection.finish(task)
        if error is None:
            result, index = task.result()
            connection.reply(request_id, opcode, publish_receipt(result, index).to_wire())
        elif isinstance(error, ApiError):
            connection.reply_error(request_id, opcode, error)
        else:
            if not isinstance(error, asyncio.CancelledError):
                log.error("publish over WebSocket failed", exc_info=error)
            connection.reply_error(request_id, opcode, _internal_error())

    connection.start(propose_publish(ctx, parsed), on_done)


_OPS: dict[str, Callable[[_Connection, _Request], None]] = {
    "ping": _ping,
    "publish": _publish,
    **STREAM_OPS,
    **GROUP_OPS,
    **QUEUE_OPS,
}


async def websocket(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    hub = request.app[WS_HUB_KEY]
    ws = _Socket(ctx.limits.max_request_bytes, hub.settings.heartbeat_s)
    if not ws.can_prepare(request).ok:
        raise ApiError(codes.MALFORMED_REQUEST,
                       f"{WS_PATH} takes a WebSocket upgrade (Upgrade: websocket)")
    await ws.prepare(request)
    connection = _Connection(ws, ctx, hub)
    hub.connections.add(connection)
    try:
        await connection.serve()
    except Exception:
        # The response is already upgraded: the edge middleware could not answer this.
        log.exception("unexpected error serving a WebSocket connection")
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error")
    finally:
        hub.connections.discard(connection)
    return ws


async def _close_connections(app: web.Application) -> None:
    await app[WS_HUB_KEY].close_all(WSCloseCode.GOING_AWAY, "server shutting down")


def install(app: web.Application, settings: WsSettings | None = None) -> None:
    """Add the endpoint (and its shutdown hook) to the API app."""
    app[WS_HUB_KEY] = WsHub(settings or WsSettings())
    app.router.add_get(WS_PATH, websocket, allow_head=False)
    app.on_shutdown.append(_close_connections)
