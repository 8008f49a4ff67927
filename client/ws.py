"""Pipelined publishing over one WebSocket (`GET /v1/ws`, msgpack frames; see docs/websocket.md).

    async with WsPublisher("http://127.0.0.1:8080") as publisher:
        confirms = [await publisher.publish("", [OutgoingMessage(b"hi", "jobs")]) for _ in range(100)]
        receipts = await asyncio.gather(*confirms)

`publish` returns once the frame is handed to the socket (waiting first while `window`
publishes are unanswered); its future resolves with the PublishReceipt or fails with the
RaftMQError subclass of the server's error. Publishes in flight when the connection is lost fail
with IndefiniteError (they may have been stored): retry them only with producer_id/sequence.
No failover or reconnection: a lost connection makes the publisher unusable.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import aiohttp

from raftmq.client import errors
from raftmq.client.wire import (
    OutgoingMessage,
    PublishReceipt,
    WireFormat,
    WireValueError,
    decode_document,
    encode_document,
    parse_error_document,
)

__all__ = ["DEFAULT_WINDOW", "WS_PATH", "WsPublisher"]

WS_PATH = "/v1/ws"
DEFAULT_WINDOW = 512
# The server refuses larger frames (its max_request_bytes, 8 MiB by default).
_MAX_REPLY_BYTES = 1 << 20


class WsPublisher:
    def __init__(
        self,
        url: str,
        *,
        window: int = DEFAULT_WINDOW,
        heartbeat_s: float = 30.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._url = url.rstrip("/") + WS_PATH
        self._heartbeat_s = heartbeat_s
        self._connect_timeout_s = connect_timeout_s
        self._window = asyncio.Semaphore(window)
        self._pending: dict[int, asyncio.Future[PublishReceipt]] = {}
        self._ids = itertools.count()
        self._idle = asyncio.Event()
        self._idle.set()
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        # Why the connection is unusable (None while it is usable).
        self._lost: str | None = "not connected"

    async def __aenter__(self) -> WsPublisher:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                await self.flush()
        finally:
            await self.close()

    @property
    def in_flight(self) -> int:
        """Publishes sent and not yet answered."""
        return len(self._pending)

    async def connect(self) -> None:
        if self._session is not None:
            raise RuntimeError("WsPublisher.connect() was already called")
        timeout = aiohttp.ClientTimeout(total=None, connect=self._connect_timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout)
        try:
            self._ws = await self._session.ws_connect(
                self._url, heartbeat=self._heartbeat_s, compress=0, max_msg_size=_MAX_REPLY_BYTES,
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            session, self._session = self._session, None
            await session.close()
            raise errors.error_for(errors.CONNECTION_ERROR, str(exc) or type(exc).__name__,
                                   definite=True) from exc
        self._lost = None
        self._reader = asyncio.create_task(self._read_replies(self._ws), name="raftmq-ws-replies")

    async def publish(
        self,
        exchange: str,
        messages: Sequence[OutgoingMessage],
        producer_id: str | None = None,
        sequence: int | None = None,
    ) -> asyncio.Future[PublishReceipt]:
        """Send one publish; raises UnavailableError (definite) if it could not be sent at all."""
        document: dict[str, object] = {
            "op": "publish", "id": 0, "exchange": exchange,
            "messages": [message.to_wire(WireFormat.MSGPACK) for message in messages],
        }
        if producer_id is not None:
            document["producer_id"] = producer_id
        if sequence is not None:
            document["sequence"] = sequence
        await self._window.acquire()
        ws = self._ws
        if self._lost is not None or ws is None:
            self._window.release()
            raise errors.error_for(errors.CONNECTION_ERROR, self._lost or "not connected",
                                   definite=True)
        request_id = next(self._ids)
        document["id"] = request_id
        future: asyncio.Future[PublishReceipt] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._idle.clear()
        try:
            await ws.send_bytes(encode_document(document, WireFormat.MSGPACK))
        except (ConnectionError, aiohttp.ClientError) as exc:
            # Part of the frame may have left: its outcome is unknown.
            self._settle(request_id, errors.error_for(
                errors.CONNECTION_ERROR, f"sending failed: {exc}", definite=False))
        return future

    async def flush(self) -> None:
        """Wait until every publish sent so far is answered (or failed)."""
        await self._idle.wait()

    async def close(self) -> None:
        """Close the connection; publishes still in flight fail with IndefiniteError."""
        if self._lost is None:
            self._lost = "the publisher was closed"
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader
        self._fail_all(self._lost)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- replies --------------------------------------------------------------------------------

    async def _read_replies(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type is aiohttp.WSMsgType.ERROR:
                # A dead peer (no pong) or broken framing: aiohttp has closed the connection.
                self._lost = f"connection failed: {message.data!r}"
                break
            if message.type is aiohttp.WSMsgType.BINARY:
                problem = self._on_reply(message.data)
            else:
                # Only a broken server answers a binary frame in any other way.
                problem = f"unexpected {message.type.name} frame"
            if problem is not None:
                await self._abort(ws, problem)
                return
        if self._lost is None:
            reason = f" ({ws.close_code})" if ws.close_code is not None else ""
            self._lost = f"connection closed by the server{reason}"
        self._fail_all(self._lost)

    def _on_reply(self, data: bytes) -> str | None:
        """Settle the publish a reply answers; a description of the reply if it is unusable."""
        try:
            document = decode_document(data, WireFormat.MSGPACK)
        except WireValueError as exc:
            return str(exc)
        if not isinstance(document, dict):
            return "a reply is not a map"
        request_id = document.get("id")
        if type(request_id) is not int or request_id not in self._pending:
            # An answer to a frame the server could not read: the publisher's bug, or not ours.
            return f"a reply for an unknown request id {request_id!r}: {document.get('error')!r}"
        self._settle(request_id, _outcome(document))
        return None

    def _settle(self, request_id: int, outcome: PublishReceipt | errors.RaftMQError) -> None:
        future = self._pending.pop(request_id, None)
        if future is None:
            return
        self._window.release()
        if not self._pending:
            self._idle.set()
        if future.done():  # cancelled by its owner; the server's slot is free all the same
            return
        if isinstance(outcome, PublishReceipt):
            future.set_result(outcome)
        else:
            future.set_exception(outcome)

    async def _abort(self, ws: aiohttp.ClientWebSocketResponse, problem: str) -> None:
        self._lost = f"unusable reply from the server: {problem}"[:300]
        await ws.close(code=aiohttp.WSCloseCode.PROTOCOL_ERROR, message=b"unusable reply")
        self._fail_all(self._lost)

    def _fail_all(self, reason: str) -> None:
        for request_id in list(self._pending):
            self._settle(request_id, errors.error_for(
                errors.CONNECTION_ERROR, f"{reason}; the publish may or may not have been stored",
                definite=False))


def _outcome(document: dict[str, Any]) -> PublishReceipt | errors.RaftMQError:
    if "ok" in document:
        try:
            return PublishReceipt.from_wire(document["ok"])
        except WireValueError as exc:
            return errors.error_for(errors.UNEXPECTED_RESPONSE, str(exc), definite=False)
    error = parse_error_document(document)
    if error is None:
        return errors.error_for(errors.UNEXPECTED_RESPONSE, "a reply with neither ok nor error",
                                definite=False)
    return errors.error_for(error.code, error.message, definite=error.definite,
                            leader=error.leader)
