"""`QueueConsumer`: competing consumption of a queue, pushed over a WebSocket or pulled.

Push (the default): one WebSocket to one node, a `consume` subscription with `prefetch`
credits; the broker claims (a replicated command) and pushes up to `prefetch` unacked messages.
Acks, nacks and lease extensions of messages from the live connection go over it and free
credit. When the connection or its node dies, the consumer reconnects to the next node and
subscribes again; messages it held keep their leases (ack them as usual: they go over HTTP
through the client's failover path), and whatever is never acked is redelivered by the broker
when its lease runs out. Nothing is lost; a message may come twice (at-least-once).

Pull: long-poll claims through the client's failover path, `prefetch` at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import Sequence
from typing import Any

import aiohttp
import msgpack

from raftmq.client import errors
from raftmq.client.buffering import Handover
from raftmq.client.client import Client
from raftmq.client.wire import Message, SettleReceipt, parse_error_document

__all__ = ["QueueConsumer"]

PUSH = "push"
PULL = "pull"
_RECONNECT_PAUSE_S = (0.05, 0.1, 0.2, 0.5, 1.0)
_WS_REPLY_TIMEOUT_S = 10.0


class QueueConsumer:
    def __init__(
        self, client: Client, queue: str, *, consumer: str | None = None,
        prefetch: int = 100, lease_ms: int = 30_000, mode: str = PUSH, wait_ms: int = 5_000,
    ) -> None:
        if mode not in (PUSH, PULL):
            raise ValueError("mode is 'push' or 'pull'")
        if not 1 <= prefetch <= 10_000:
            raise ValueError("prefetch must be in 1..10000")
        self._client = client
        self.queue = queue
        self.consumer = consumer or f"consumer-{secrets.token_hex(6)}"
        self.prefetch = prefetch
        self.lease_ms = lease_ms
        self.mode = mode
        self._wait_ms = wait_ms
        # Pull bounds the buffer here; push is bounded by the broker's prefetch accounting.
        self._buffer: Handover[Message] = Handover(prefetch if mode == PULL else 0)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._subscription: int | None = None
        self._live: set[tuple[int, int]] = set()  # leases pushed on the current connection
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._runner: asyncio.Task[None] | None = None
        self.reconnects = 0
        self.subscriptions = 0  # consume subscriptions made, over all connections
        self.node_url: str | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> QueueConsumer:
        loop_body = self._push_loop() if self.mode == PUSH else self._pull_loop()
        self._runner = asyncio.create_task(loop_body, name=f"raftmq-consumer-{self.queue}")
        return self

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        await self._disconnect()

    async def __aenter__(self) -> QueueConsumer:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ receiving and settling

    async def next_batch(self, max_messages: int = 100, timeout_s: float | None = None
                         ) -> list[Message]:
        return await self._buffer.take(max_messages, timeout_s)

    def __aiter__(self) -> QueueConsumer:
        return self

    async def __anext__(self) -> Message:
        return (await self.next_batch(1))[0]

    async def ack(self, messages: Sequence[Message]) -> SettleReceipt:
        return await self._settle("ack", messages, {})

    async def nack(self, messages: Sequence[Message], *, requeue: bool = True,
                   delay_ms: int = 0) -> SettleReceipt:
        return await self._settle("nack", messages, {"requeue": requeue, "delay_ms": delay_ms})

    async def extend(self, messages: Sequence[Message], lease_ms: int) -> SettleReceipt:
        """Keep working on messages past their lease: the lease now ends lease_ms from now."""
        return await self._settle("extend", messages, {"lease_ms": lease_ms})

    async def _settle(self, action: str, messages: Sequence[Message],
                      extra: dict[str, object]) -> SettleReceipt:
        leases = [list(m.lease) for m in messages]
        live = [m.lease in self._live for m in messages]
        maybe_applied = False
        if all(live) and self._ws is not None and self._subscription is not None:
            try:
                answer = await self._ws_call({"op": action, "subscription": self._subscription,
                                              "leases": leases, **extra})
            except errors.RaftMQError as error:
                maybe_applied = not error.definite
            else:
                if action != "extend":
                    self._live.difference_update(m.lease for m in messages)
                return SettleReceipt.from_wire(answer)
        # Not from this connection (or it just failed): settle through any node.
        try:
            answer = await self._client.request(
                "POST", f"/v1/queues/{self.queue}/{action}", body={"leases": leases, **extra},
                write=True, idempotent=True)
        except errors.RaftMQError as error:
            if maybe_applied and error.definite:
                # E.g. "unknown lease" because the WebSocket attempt did ack it: not a failure.
                raise errors.error_for(
                    error.code, f"{error.message} (an earlier attempt over the WebSocket may "
                    "have applied)", definite=False, leader=error.leader, status=error.status,
                    details=error.details) from error
            raise
        if action != "extend":
            self._live.difference_update(m.lease for m in messages)
        return SettleReceipt.from_wire(answer)

    # ------------------------------------------------------------ pull

    async def _pull_loop(self) -> None:
        try:
            while True:
                room = max(1, self.prefetch - self._buffer.queue.qsize())
                answer = await self._client.request(
                    "POST", f"/v1/queues/{self.queue}/claim",
                    body={"max_messages": room, "lease_ms": self.lease_ms,
                          "wait_ms": self._wait_ms, "consumer": self.consumer},
                    write=True, idempotent=True)
                for document in answer["messages"]:
                    await self._buffer.queue.put(Message.from_wire(document))  # waits if full
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._buffer.fail(error)

    # ------------------------------------------------------------ push

    async def _push_loop(self) -> None:
        cluster = self._client.cluster_map
        attempt = 0  # failed connections in a row: the backoff grows with them only
        while True:
            # The cluster map knows which nodes failed lately (seeds included as a last
            # resort), so a dead node is passed over while any other may answer.
            url = cluster.pick(write=False)
            subscribed_before = self.subscriptions
            try:
                await self._connect_and_consume(url)
                if self._buffer.failure is not None:
                    return
            except asyncio.CancelledError:
                raise
            except errors.RaftMQError as error:
                if error.definite and error.code in (errors.QUEUE_NOT_FOUND, errors.INVALID_ARGUMENT):
                    self._buffer.fail(error)
                    return
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            await self._disconnect()
            cluster.note_failure(url)
            if attempt % 4 == 3:  # nodes the map does not know yet may have announced themselves
                with contextlib.suppress(errors.RaftMQError):
                    await self._client.refresh(deadline_s=2.0)
            self.reconnects += 1
            attempt = 0 if self.subscriptions > subscribed_before else attempt + 1
            await asyncio.sleep(_RECONNECT_PAUSE_S[min(attempt, len(_RECONNECT_PAUSE_S) - 1)])

    async def _connect_and_consume(self, url: str) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=3))
        self._ws = await self._session.ws_connect(url.rstrip("/") + "/v1/ws", heartbeat=2.0,
                                                  max_msg_size=16 * 2**20)
        self.node_url = url
        reader = asyncio.create_task(self._read(self._ws))
        try:
            answer = await self._ws_call({"op": "consume", "queue": self.queue,
                                          "consumer": self.consumer, "prefetch": self.prefetch,
                                          "lease_ms": self.lease_ms})
            self._subscription = int(answer["subscription"])
            self.subscriptions += 1
            await reader  # until the connection ends
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in ws:
            if frame.type != aiohttp.WSMsgType.BINARY:
                break
            document = msgpack.unpackb(frame.data, raw=False)
            request_id = document.get("id")
            if request_id is not None and request_id in self._replies:
                future = self._replies.pop(request_id)
                if not future.done():
                    future.set_result(document)
            elif document.get("subscription") != self._subscription:
                continue
            elif "messages" in document:
                for raw in document["messages"]:
                    message = Message.from_wire(raw)
                    self._live.add(message.lease)
                    self._buffer.queue.put_nowait(message)  # bounded by the broker's prefetch
            elif "error" in document:
                # The broker ended the subscription (e.g. a claim failed for want of a leader):
                # end the connection too, so the push loop subscribes again, here or elsewhere.
                payload = parse_error_document(document)
                if payload is not None and payload.code == errors.QUEUE_NOT_FOUND:
                    self._buffer.fail(errors.error_for(payload.code, payload.message,
                                                       definite=True))
                break
        self._fail_replies("the connection closed")

    async def _ws_call(self, document: dict[str, Any]) -> dict[str, Any]:
        ws = self._ws
        if ws is None or ws.closed:
            raise errors.error_for(errors.CONNECTION_ERROR, "not connected", definite=True)
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = future
        try:
            await ws.send_bytes(msgpack.packb({**document, "id": request_id}, use_bin_type=True))
            reply = await asyncio.wait_for(future, _WS_REPLY_TIMEOUT_S)
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as error:
            # Perhaps sent, perhaps applied: only the caller's fallback can settle it.
            raise errors.error_for(errors.CONNECTION_ERROR, f"WebSocket {document['op']}: "
                                   f"{type(error).__name__}: {error}", definite=False) from error
        finally:
            self._replies.pop(request_id, None)
        if "error" in reply:
            payload = parse_error_document(reply)
            code = payload.code if payload is not None else errors.UNEXPECTED_RESPONSE
            message = payload.message if payload is not None else str(reply["error"])
            definite = payload.definite if payload is not None else False
            raise errors.error_for(code, message, definite=definite)
        ok = reply.get("ok")
        return ok if isinstance(ok, dict) else {}

    def _fail_replies(self, reason: str) -> None:
        replies, self._replies = self._replies, {}
        for future in replies.values():
            if not future.done():
                future.set_exception(errors.error_for(errors.CONNECTION_ERROR, reason,
                                                      definite=False))

    async def _disconnect(self) -> None:
        self._subscription = None
        self._live.clear()  # their leases stay valid: settled over HTTP from now on
        ws, self._ws = self._ws, None
        session, self._session = self._session, None
        if ws is not None:
            await ws.close()
        if session is not None:
            await session.close()
        self._fail_replies("disconnected")
