"""A minimal asyncio client for one raftmq node (msgpack on the wire, no failover yet).

    async with RaftMQ("http://127.0.0.1:8080") as mq:
        await mq.declare_queue("jobs")
        await mq.publish_to_queue("jobs", [OutgoingMessage(b"hello")])
        for message in await mq.claim("jobs", wait_ms=5_000):
            await mq.ack("jobs", [message])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp

from raftmq.client import errors
from raftmq.client.wire import (
    MSGPACK_CONTENT_TYPE,
    Message,
    OutgoingMessage,
    PublishReceipt,
    SettleReceipt,
    WireFormat,
    WireValueError,
    decode_document,
    encode_document,
    format_for_content_type,
    parse_error_document,
)

__all__ = ["LeaseLike", "RaftMQ"]

LeaseLike = Message | tuple[int, int]
ResultT = TypeVar("ResultT")

_HEADERS = {"Accept": MSGPACK_CONTENT_TYPE}


def _segment(name: str) -> str:
    return quote(name, safe="")


def _lease_pairs(leases: Iterable[LeaseLike]) -> list[list[int]]:
    return [list(lease.lease if isinstance(lease, Message) else lease) for lease in leases]


class RaftMQ:
    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self._base_url = url.rstrip("/")
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RaftMQ:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=_HEADERS)
        return self._session

    # -- transport ------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, object] | None = None,
        params: Mapping[str, str] | None = None,
        write: bool,
        extra_timeout_s: float = 0.0,
    ) -> dict[str, Any]:
        """One request; raises a RaftMQError subclass on any failure."""
        data = None if body is None else encode_document(dict(body), WireFormat.MSGPACK)
        headers = {} if body is None else {"Content-Type": MSGPACK_CONTENT_TYPE}
        timeout = aiohttp.ClientTimeout(total=self._timeout_s + extra_timeout_s)
        try:
            async with self._http().request(
                method, self._base_url + path, data=data, params=params, headers=headers,
                timeout=timeout,
            ) as response:
                payload = await response.read()
                content_type = response.headers.get("Content-Type", "")
                status = response.status
        except aiohttp.ClientConnectorError as exc:
            # Never connected, so nothing was sent: definitely not executed.
            raise errors.error_for(errors.CONNECTION_ERROR, str(exc), definite=True) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            # The request may have reached the node: a write's outcome is unknown.
            raise errors.error_for(
                errors.TIMEOUT if isinstance(exc, TimeoutError) else errors.CONNECTION_ERROR,
                str(exc) or type(exc).__name__, definite=not write,
            ) from exc
        return _decode_response(status, content_type, payload, write=write)

    # -- topology ------------------------------------------------------------------------------

    async def declare_exchange(
        self, name: str, exchange_type: str = "direct", *, alternate_exchange: str | None = None
    ) -> bool:
        """Declare an exchange; True if it was created, False if it already existed."""
        body: dict[str, object] = {"type": exchange_type}
        if alternate_exchange is not None:
            body["alternate_exchange"] = alternate_exchange
        result = await self._call("PUT", f"/v1/exchanges/{_segment(name)}", body=body, write=True)
        return bool(result.get("created"))

    async def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        params = {"if_unused": "true"} if if_unused else None
        await self._call("DELETE", f"/v1/exchanges/{_segment(name)}", params=params, write=True)

    async def declare_queue(
        self,
        name: str,
        *,
        max_length: int | None = None,
        max_length_bytes: int | None = None,
        overflow: str | None = None,
        message_ttl_ms: int | None = None,
        delivery_limit: int | None = None,
        dead_letter_exchange: str | None = None,
        dead_letter_routing_key: str | None = None,
    ) -> bool:
        """Declare a queue; True if it was created, False if it already existed as asked."""
        args = {
            "max_length": max_length, "max_length_bytes": max_length_bytes, "overflow": overflow,
            "message_ttl_ms": message_ttl_ms, "delivery_limit": delivery_limit,
            "dead_letter_exchange": dead_letter_exchange,
            "dead_letter_routing_key": dead_letter_routing_key,
        }
        body = {key: value for key, value in args.items() if value is not None}
        result = await self._call("PUT", f"/v1/queues/{_segment(name)}", body=body, write=True)
        return bool(result.get("created"))

    async def delete_queue(self, name: str, *, if_empty: bool = False) -> None:
        params = {"if_empty": "true"} if if_empty else None
        await self._call("DELETE", f"/v1/queues/{_segment(name)}", params=params, write=True)

    async def purge_queue(self, name: str) -> int:
        """Remove every ready message; returns how many were removed."""
        result = await self._call("POST", f"/v1/queues/{_segment(name)}/purge", write=True)
        return _int(result, "purged")

    async def queue_info(self, name: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/queues/{_segment(name)}", write=False)

    async def list_queues(self) -> list[dict[str, Any]]:
        result = await self._call("GET", "/v1/queues", write=False)
        queues = result.get("queues")
        if not isinstance(queues, list):
            raise _unexpected("'queues' missing from the response")
        return queues

    async def declare_stream(
        self,
        name: str,
        *,
        partitions: int = 1,
        max_age_ms: int | None = None,
        max_bytes: int | None = None,
        max_messages: int | None = None,
        max_message_bytes: int | None = None,
    ) -> bool:
        """Declare a stream; True if it was created, False if it already existed as asked."""
        args = {"partitions": partitions, "max_age_ms": max_age_ms, "max_bytes": max_bytes,
                "max_messages": max_messages, "max_message_bytes": max_message_bytes}
        body = {key: value for key, value in args.items() if value is not None}
        result = await self._call("PUT", f"/v1/streams/{_segment(name)}", body=body, write=True)
        return bool(result.get("created"))

    async def stream_info(self, name: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/streams/{_segment(name)}", write=False)

    async def bind(self, exchange: str, queue: str, binding_key: str = "") -> bool:
        body = {"exchange": exchange, "queue": queue, "binding_key": binding_key}
        result = await self._call("POST", "/v1/bindings", body=body, write=True)
        return bool(result.get("created"))

    async def unbind(self, exchange: str, queue: str, binding_key: str = "") -> None:
        body = {"exchange": exchange, "queue": queue, "binding_key": binding_key}
        await self._call("DELETE", "/v1/bindings", body=body, write=True)

    async def cluster(self) -> dict[str, Any]:
        return await self._call("GET", "/v1/cluster", write=False)

    # -- messages ------------------------------------------------------------------------------

    async def publish(
        self,
        exchange: str,
        messages: Sequence[OutgoingMessage],
        producer_id: str | None = None,
        sequence: int | None = None,
    ) -> PublishReceipt:
        body = _publish_body(messages, producer_id, sequence, with_routing_key=True)
        body["exchange"] = exchange
        result = await self._call("POST", "/v1/publish", body=body, write=True)
        return _parsed(PublishReceipt.from_wire, result)

    async def publish_to_queue(
        self,
        queue: str,
        messages: Sequence[OutgoingMessage],
        producer_id: str | None = None,
        sequence: int | None = None,
    ) -> PublishReceipt:
        """Publish through the default exchange to `queue` (routing keys are ignored)."""
        body = _publish_body(messages, producer_id, sequence, with_routing_key=False)
        path = f"/v1/queues/{_segment(queue)}/publish"
        result = await self._call("POST", path, body=body, write=True)
        return _parsed(PublishReceipt.from_wire, result)

    async def claim(
        self,
        queue: str,
        max_messages: int = 1,
        lease_ms: int = 30_000,
        wait_ms: int = 0,
        consumer: str = "",
    ) -> list[Message]:
        body: dict[str, object] = {
            "max_messages": max_messages, "lease_ms": lease_ms, "wait_ms": wait_ms,
        }
        if consumer:
            body["consumer"] = consumer
        result = await self._call(
            "POST", f"/v1/queues/{_segment(queue)}/claim", body=body, write=True,
            extra_timeout_s=wait_ms / 1000.0,
        )
        messages = result.get("messages")
        if not isinstance(messages, list):
            raise _unexpected("'messages' missing from the response")
        return [_parsed(Message.from_wire, message) for message in messages]

    async def ack(self, queue: str, leases: Iterable[LeaseLike]) -> SettleReceipt:
        return await self._settle(queue, "ack", {"leases": _lease_pairs(leases)})

    async def nack(
        self, queue: str, leases: Iterable[LeaseLike], *, requeue: bool = True, delay_ms: int = 0
    ) -> SettleReceipt:
        body = {"leases": _lease_pairs(leases), "requeue": requeue, "delay_ms": delay_ms}
        return await self._settle(queue, "nack", body)

    async def extend(
        self, queue: str, leases: Iterable[LeaseLike], *, lease_ms: int
    ) -> SettleReceipt:
        return await self._settle(queue, "extend", {"leases": _lease_pairs(leases),
                                                    "lease_ms": lease_ms})

    async def _settle(self, queue: str, action: str, body: dict[str, object]) -> SettleReceipt:
        path = f"/v1/queues/{_segment(queue)}/{action}"
        result = await self._call("POST", path, body=body, write=True)
        return _parsed(SettleReceipt.from_wire, result)


def _publish_body(
    messages: Sequence[OutgoingMessage],
    producer_id: str | None,
    sequence: int | None,
    *,
    with_routing_key: bool,
) -> dict[str, object]:
    body: dict[str, object] = {
        "messages": [
            m.to_wire(WireFormat.MSGPACK, with_routing_key=with_routing_key) for m in messages
        ],
    }
    if producer_id is not None:
        body["producer_id"] = producer_id
    if sequence is not None:
        body["sequence"] = sequence
    return body


def _decode_response(
    status: int, content_type: str, payload: bytes, *, write: bool
) -> dict[str, Any]:
    wire_format = format_for_content_type(content_type)
    document: object = None
    if wire_format is not None and payload:
        try:
            document = decode_document(payload, wire_format)
        except WireValueError:
            document = None
    if status >= 400:
        error = parse_error_document(document)
        if error is None:
            # Not our error format (a proxy's page?): a failed write's outcome is unknown.
            raise errors.error_for(
                errors.UNEXPECTED_RESPONSE, f"HTTP {status} without a raftmq error body",
                definite=not write or status < 500, status=status,
            )
        raise errors.error_for(error.code, error.message, definite=error.definite,
                               leader=error.leader, status=status)
    if not isinstance(document, dict):
        raise _unexpected(f"HTTP {status} with an undecodable body ({content_type!r})")
    return document


def _unexpected(message: str) -> errors.RaftMQError:
    # The request succeeded (2xx) but its answer is unreadable: the outcome is unknown.
    return errors.error_for(errors.UNEXPECTED_RESPONSE, message, definite=False)


def _parsed(parse: Callable[[object], ResultT], document: object) -> ResultT:
    try:
        return parse(document)
    except WireValueError as exc:
        raise _unexpected(str(exc)) from None


def _int(document: Mapping[str, Any], name: str) -> int:
    value = document.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _unexpected(f"'{name}' missing from the response")
    return value
