"""Validation of publish requests, the hot path: a tight check of each message in its common
shape, falling back to the general parser (same answers, same errors) for anything unusual."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from raftmq.broker.api.codec import (
    MAX_HEADERS,
    MAX_KEY_CHARS,
    MAX_NAME_FIELD_CHARS,
    MAX_SEQUENCE,
    Fields,
    check_exchange_name,
    check_name,
)
from raftmq.broker.api.errors import bad_request
from raftmq.broker.api.limits import ApiLimits
from raftmq.broker.queue_validation import MAX_DURATION_MS, MAX_PUBLISH_MESSAGES
from raftmq.client import errors as codes
from raftmq.client.wire import WireValueError, body_from_wire, headers_from_wire

__all__ = ["PublishRequest", "headers_size", "parse_publish", "plain_headers_size"]

_MIN_HEADER_INT = -(2**63)
_MAX_HEADER_INT = 2**64 - 1


@dataclass(frozen=True)
class PublishRequest:
    exchange: str
    # The command's wire form, [routing_key, body, headers, ttl_ms, delay_ms] per message: it is
    # encoded as is, so no per-message record is built and walked again.
    messages: list[list[Any]]
    producer_id: str | None
    sequence: int | None


_MESSAGE_FIELDS = frozenset({"routing_key", "body", "body_b64", "headers", "ttl_ms", "delay_ms"})


def parse_publish(
    document: object, limits: ApiLimits, *, queue: str | None = None
) -> PublishRequest:
    """A publish batch; with `queue` it is the per-queue convenience form (default exchange)."""
    allowed = {"messages", "producer_id", "sequence"} | ({"exchange"} if queue is None else set())
    fields = Fields(document, frozenset(allowed))
    exchange = ""
    if queue is None:
        exchange = check_exchange_name(fields.str_("exchange", MAX_NAME_FIELD_CHARS, default=""))
    max_messages = min(limits.max_batch_messages, MAX_PUBLISH_MESSAGES)
    raw_messages = fields.list_("messages", max_messages, codes.BATCH_TOO_LARGE)
    messages = _parse_messages(raw_messages, limits, queue)
    producer_id = fields.optional_str("producer_id", MAX_NAME_FIELD_CHARS)
    sequence = fields.optional_int("sequence", 0, MAX_SEQUENCE)
    if (producer_id is None) != (sequence is None):
        raise bad_request("'producer_id' and 'sequence' must be given together")
    if producer_id is not None:
        check_name("producer", producer_id)
    return PublishRequest(exchange, messages, producer_id, sequence)


def _parse_messages(
    raw_messages: list[object], limits: ApiLimits, queue: str | None
) -> list[list[Any]]:
    default_key = "" if queue is None else queue
    max_message_bytes = limits.max_message_bytes
    messages: list[list[Any]] = []
    append = messages.append
    for index, raw in enumerate(raw_messages):
        message = _plain_message(raw, default_key, queue, max_message_bytes)
        append(message if message is not None else _parse_message(raw, index, limits, queue))
    return messages


def _plain_message(
    raw: object, default_key: str, queue: str | None, max_message_bytes: int
) -> list[Any] | None:
    """The common message shape, checked inline with exact types; None for anything else (out
    of range, unusual or wrong), which `_parse_message` then takes: it accepts or refuses it
    with its own error, so this path changes speed only, never an answer."""
    if type(raw) is not dict:
        return None
    # Counts down the fields taken here: any other (`body_b64`, a typo, an explicit null)
    # leaves it above 1. Cheaper than a set comparison of the keys.
    unseen_fields = len(raw)
    body = raw.get("body")
    if type(body) is str and body.isascii():
        body = body.encode()
    elif type(body) is not bytes:
        return None
    routing_key = raw.get("routing_key")
    if routing_key is None:
        routing_key = default_key
    elif type(routing_key) is not str or len(routing_key) > MAX_KEY_CHARS or (
        queue is not None and routing_key != queue
    ):
        return None
    else:
        unseen_fields -= 1
    headers = raw.get("headers")
    size = len(body)
    if headers is None:
        headers = {}
    elif type(headers) is not dict:
        return None
    else:
        unseen_fields -= 1
        if headers:
            headers_size = plain_headers_size(headers)
            if headers_size < 0:
                return None
            size += headers_size
    ttl_ms = raw.get("ttl_ms")
    if ttl_ms is not None:
        if type(ttl_ms) is not int or not 0 <= ttl_ms <= MAX_DURATION_MS:
            return None
        unseen_fields -= 1
    delay_ms = raw.get("delay_ms")
    if delay_ms is not None:
        if type(delay_ms) is not int or not 0 <= delay_ms <= MAX_DURATION_MS:
            return None
        unseen_fields -= 1
    if unseen_fields != 1 or size > max_message_bytes:
        return None
    return [routing_key, body, headers, ttl_ms, delay_ms]


def plain_headers_size(headers: dict[Any, Any]) -> int:
    """`headers_size` of headers that need no conversion (no `{"b64": ...}` values), or -1."""
    if len(headers) > MAX_HEADERS:
        return -1
    total = 0
    for key, value in headers.items():
        if type(key) is not str or not key.isascii() or not 0 < len(key) <= MAX_KEY_CHARS:
            return -1
        total += len(key)
        value_type = type(value)
        if value_type is bytes:
            total += len(value)
        elif value_type is str:
            if not value.isascii():
                return -1
            total += len(value)
        elif value_type is int:
            if not _MIN_HEADER_INT <= value <= _MAX_HEADER_INT:
                return -1
            total += 9
        elif value is None or value_type is bool or (
            value_type is float and math.isfinite(value)
        ):
            total += 9
        else:
            return -1
    return total


def _parse_message(raw: object, index: int, limits: ApiLimits, queue: str | None) -> list[Any]:
    where = f"messages[{index}]"
    fields = Fields(raw, _MESSAGE_FIELDS, where)
    if fields.has("body") and fields.has("body_b64"):
        raise bad_request(f"{where}: give only one of 'body' and 'body_b64'")
    routing_key = fields.str_("routing_key", MAX_KEY_CHARS, default=queue or "")
    if queue is not None and routing_key != queue:
        raise bad_request(f"{where}: routing_key must be omitted or equal the queue name")
    try:
        body = body_from_wire({k: fields.raw(k) for k in ("body", "body_b64") if fields.has(k)})
        headers = headers_from_wire(fields.raw("headers"))
    except WireValueError as exc:
        raise bad_request(f"{where}: {exc}") from None
    if len(headers) > MAX_HEADERS:
        raise bad_request(f"{where}: more than {MAX_HEADERS} headers")
    size = len(body) + headers_size(headers, where)
    if size > limits.max_message_bytes:
        raise bad_request(
            f"{where}: {size} bytes exceeds the limit of {limits.max_message_bytes}",
            codes.MESSAGE_TOO_LARGE,
        )
    ttl_ms = fields.optional_int("ttl_ms", 0, MAX_DURATION_MS)
    delay_ms = fields.optional_int("delay_ms", 0, MAX_DURATION_MS)
    return [routing_key, body, headers, ttl_ms, delay_ms]


def headers_size(headers: Mapping[str, object], where: str) -> int:
    """Approximate stored size of headers; they count towards the message size limit."""
    total = 0
    for key, value in headers.items():
        if not 0 < len(key) <= MAX_KEY_CHARS:
            raise bad_request(f"{where}: header names must have 1..{MAX_KEY_CHARS} characters")
        total += len(key.encode())
        if isinstance(value, str):
            total += len(value.encode())
        elif isinstance(value, bytes):
            total += len(value)
        else:
            total += 9
    return total
