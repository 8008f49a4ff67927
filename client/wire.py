"""The HTTP wire format shared by the broker and the client: documents, bodies, headers, results.

A request or response is one document (a map) in JSON or msgpack. Message bodies are opaque
bytes: msgpack carries them as `bin`; JSON carries `"body"` (UTF-8 text) or `"body_b64"`, and
responses in JSON carry `body_b64` always plus `body` when the bytes are valid UTF-8.
Header values are str, int, float, bool, None or bytes; JSON has no bytes, so a bytes header
value travels as `{"b64": "<base64>"}` there.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

__all__ = [
    "JSON_CONTENT_TYPE",
    "MSGPACK_CONTENT_TYPE",
    "ErrorPayload",
    "HeaderValue",
    "Headers",
    "Message",
    "OutgoingMessage",
    "PublishReceipt",
    "SettleReceipt",
    "WireFormat",
    "WireValueError",
    "body_from_wire",
    "body_to_wire",
    "decode_document",
    "encode_document",
    "error_document",
    "format_for_content_type",
    "headers_from_wire",
    "headers_to_wire",
    "parse_error_document",
]

JSON_CONTENT_TYPE = "application/json"
MSGPACK_CONTENT_TYPE = "application/msgpack"
_MSGPACK_ALIASES = frozenset({MSGPACK_CONTENT_TYPE, "application/x-msgpack", "application/vnd.msgpack"})

# msgpack can carry integers in [-2**63, 2**64 - 1]; anything outside cannot be replicated.
_MIN_WIRE_INT = -(2**63)
_MAX_WIRE_INT = 2**64 - 1

HeaderValue = str | int | float | bool | bytes | None
Headers = dict[str, HeaderValue]


class WireValueError(ValueError):
    """A document does not have the shape the wire format requires."""


class WireFormat(enum.Enum):
    JSON = JSON_CONTENT_TYPE
    MSGPACK = MSGPACK_CONTENT_TYPE

    @property
    def content_type(self) -> str:
        return self.value


def format_for_content_type(content_type: str) -> WireFormat | None:
    """The wire format named by a media type (parameters such as charset ignored), or None."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == JSON_CONTENT_TYPE:
        return WireFormat.JSON
    if media_type in _MSGPACK_ALIASES:
        return WireFormat.MSGPACK
    return None


def _reject_json_constant(name: str) -> object:
    # NaN and Infinity are not JSON, and cannot be compared or replicated sensibly.
    raise WireValueError(f"non-standard JSON constant {name}")


def encode_document(document: object, wire_format: WireFormat) -> bytes:
    if wire_format is WireFormat.MSGPACK:
        packed: bytes = msgpack.packb(document, use_bin_type=True)
        return packed
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def decode_document(data: bytes, wire_format: WireFormat) -> object:
    """Decode one document; raises WireValueError for anything that is not exactly one value."""
    try:
        if wire_format is WireFormat.MSGPACK:
            return msgpack.unpackb(data, raw=False, strict_map_key=True)
        document = json.loads(data.decode("utf-8"), parse_constant=_reject_json_constant)
        _reject_lone_surrogates(document)
        return document
    except WireValueError:
        raise
    except (ValueError, TypeError, RecursionError) as exc:
        # ValueError covers msgpack's ExtraData/FormatError/StackError, JSONDecodeError,
        # UnicodeDecodeError and Python's limit on huge integer literals.
        raise WireValueError(f"cannot decode {wire_format.name.lower()} body: {exc}") from None


def _reject_lone_surrogates(document: object) -> None:
    """JSON's `\\ud800` escapes can smuggle in strings that are not valid Unicode (msgpack
    decoding already refuses them); they could never be encoded again, so refuse them here."""
    pending = [document]
    while pending:  # iterative: the document may be as deep as json.loads allowed
        value = pending.pop()
        if isinstance(value, str):
            _check_encodable(value)
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_encodable(key)
                pending.append(item)


def _check_encodable(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise WireValueError("JSON string is not valid Unicode (lone surrogate)") from None


def body_to_wire(body: bytes, wire_format: WireFormat) -> dict[str, object]:
    """The body fields of a message as they appear in a document."""
    if wire_format is WireFormat.MSGPACK:
        return {"body": body}
    fields: dict[str, object] = {"body_b64": base64.b64encode(body).decode("ascii")}
    with contextlib.suppress(UnicodeDecodeError):
        fields["body"] = body.decode("utf-8")
    return fields


def body_from_wire(document: Mapping[str, object]) -> bytes:
    """A message body from `body` (bytes, or text sent as UTF-8) or `body_b64`; exactly one."""
    has_body = "body" in document
    has_b64 = "body_b64" in document
    if has_body and has_b64:
        # In responses both are present; then the base64 form is the exact one.
        return _decode_b64(document["body_b64"], "body_b64")
    if has_b64:
        return _decode_b64(document["body_b64"], "body_b64")
    if not has_body:
        raise WireValueError("message needs 'body' or 'body_b64'")
    body = document["body"]
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8", errors="strict")
    raise WireValueError("'body' must be a string or bytes")


def _decode_b64(value: object, field_name: str) -> bytes:
    if not isinstance(value, str):
        raise WireValueError(f"'{field_name}' must be a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise WireValueError(f"'{field_name}' is not valid base64") from None


def headers_to_wire(headers: Mapping[str, object], wire_format: WireFormat) -> dict[str, object]:
    if wire_format is WireFormat.MSGPACK:
        return dict(headers)
    return {
        key: {"b64": base64.b64encode(value).decode("ascii")} if isinstance(value, bytes) else value
        for key, value in headers.items()
    }


def headers_from_wire(value: object) -> Headers:
    """Validated headers: a map of str keys to scalar values (`{"b64": ...}` means bytes)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WireValueError("'headers' must be a map")
    headers: Headers = {}
    for key, raw in value.items():
        if not isinstance(key, str):
            raise WireValueError("header names must be strings")
        headers[key] = _header_value(key, raw)
    return headers


def _header_value(key: str, raw: object) -> HeaderValue:
    if raw is None or isinstance(raw, str | bool | bytes):
        return raw
    if isinstance(raw, int):
        if not _MIN_WIRE_INT <= raw <= _MAX_WIRE_INT:
            raise WireValueError(f"header {key!r}: integer out of range")
        return raw
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise WireValueError(f"header {key!r}: float must be finite")
        return raw
    if isinstance(raw, dict) and len(raw) == 1 and "b64" in raw:
        return _decode_b64(raw["b64"], f"headers.{key}.b64")
    raise WireValueError(f"header {key!r}: value must be a string, number, boolean, null or bytes")


def error_document(code: str, message: str, *, definite: bool, leader: str | None) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "definite": definite, "leader": leader}}


@dataclass(frozen=True)
class ErrorPayload:
    code: str
    message: str
    definite: bool
    leader: str | None


def parse_error_document(document: object) -> ErrorPayload | None:
    """The error in a response document, or None if it is not a well-formed error document."""
    if not isinstance(document, dict):
        return None
    error = document.get("error")
    if not isinstance(error, dict):
        return None
    code, message = error.get("code"), error.get("message")
    definite, leader = error.get("definite"), error.get("leader")
    if not (isinstance(code, str) and isinstance(message, str) and isinstance(definite, bool)):
        return None
    if leader is not None and not isinstance(leader, str):
        return None
    return ErrorPayload(code=code, message=message, definite=definite, leader=leader)


def _field(document: Mapping[str, Any], name: str, kind: type[Any]) -> Any:
    value = document.get(name)
    # bool is an int subclass; an int field must not silently accept true/false.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise WireValueError(f"field {name!r} must be {kind.__name__}")
    return value


def _int_list(document: Mapping[str, Any], name: str) -> tuple[int, ...]:
    values = _field(document, name, list)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise WireValueError(f"field {name!r} must be a list of integers")
    return tuple(values)


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to publish."""

    body: bytes
    routing_key: str = ""
    headers: Headers = field(default_factory=dict)
    ttl_ms: int | None = None
    delay_ms: int | None = None

    def to_wire(self, wire_format: WireFormat, *, with_routing_key: bool = True) -> dict[str, object]:
        if (wire_format is WireFormat.MSGPACK and with_routing_key and not self.headers
                and self.ttl_ms is None and self.delay_ms is None):
            # The common case, on the producer's per-message path.
            return {"body": self.body, "routing_key": self.routing_key}
        document: dict[str, object] = body_to_wire(self.body, wire_format)
        if wire_format is WireFormat.JSON:
            # A request needs only one body form; the base64 one is exact.
            document.pop("body", None)
        if with_routing_key:
            document["routing_key"] = self.routing_key
        if self.headers:
            document["headers"] = headers_to_wire(self.headers, wire_format)
        if self.ttl_ms is not None:
            document["ttl_ms"] = self.ttl_ms
        if self.delay_ms is not None:
            document["delay_ms"] = self.delay_ms
        return document


@dataclass(frozen=True)
class Message:
    """A delivered message, held under a lease until acked, nacked or expired."""

    message_id: int
    lease_id: int
    body: bytes
    headers: Headers
    routing_key: str
    exchange: str
    delivery_count: int
    published_ms: int
    lease_expires_ms: int

    @property
    def lease(self) -> tuple[int, int]:
        return (self.message_id, self.lease_id)

    def to_wire(self, wire_format: WireFormat) -> dict[str, object]:
        document: dict[str, object] = {
            "message_id": self.message_id,
            "lease_id": self.lease_id,
            **body_to_wire(self.body, wire_format),
            "headers": headers_to_wire(self.headers, wire_format),
            "routing_key": self.routing_key,
            "exchange": self.exchange,
            "delivery_count": self.delivery_count,
            "published_ms": self.published_ms,
            "lease_expires_ms": self.lease_expires_ms,
        }
        return document

    @classmethod
    def from_wire(cls, document: object) -> Message:
        if not isinstance(document, dict):
            raise WireValueError("a message must be a map")
        return cls(
            message_id=_field(document, "message_id", int),
            lease_id=_field(document, "lease_id", int),
            body=body_from_wire(document),
            headers=headers_from_wire(document.get("headers")),
            routing_key=_field(document, "routing_key", str),
            exchange=_field(document, "exchange", str),
            delivery_count=_field(document, "delivery_count", int),
            published_ms=_field(document, "published_ms", int),
            lease_expires_ms=_field(document, "lease_expires_ms", int),
        )


@dataclass(frozen=True)
class PublishReceipt:
    """Outcome of a publish: indices refer to positions in the published batch."""

    accepted: int
    unroutable: tuple[int, ...]
    rejected: tuple[int, ...]
    duplicate: bool
    index: int

    def to_wire(self) -> dict[str, object]:
        return {
            "accepted": self.accepted,
            "unroutable": list(self.unroutable),
            "rejected": list(self.rejected),
            "duplicate": self.duplicate,
            "index": self.index,
        }

    @classmethod
    def from_wire(cls, document: object) -> PublishReceipt:
        if not isinstance(document, dict):
            raise WireValueError("a publish receipt must be a map")
        return cls(
            accepted=_field(document, "accepted", int),
            unroutable=_int_list(document, "unroutable"),
            rejected=_int_list(document, "rejected"),
            duplicate=_field(document, "duplicate", bool),
            index=_field(document, "index", int),
        )


@dataclass(frozen=True)
class SettleReceipt:
    """Outcome of ack/nack/extend: failures are (message_id, code) pairs."""

    settled: int
    failures: tuple[tuple[int, str], ...]

    def to_wire(self) -> dict[str, object]:
        return {"settled": self.settled, "failures": [[mid, code] for mid, code in self.failures]}

    @classmethod
    def from_wire(cls, document: object) -> SettleReceipt:
        if not isinstance(document, dict):
            raise WireValueError("a settle receipt must be a map")
        failures = _field(document, "failures", list)
        return cls(settled=_field(document, "settled", int), failures=_failure_pairs(failures))


def _failure_pairs(values: Sequence[object]) -> tuple[tuple[int, str], ...]:
    pairs: list[tuple[int, str]] = []
    for value in values:
        if not (isinstance(value, list) and len(value) == 2):
            raise WireValueError("each failure must be a [message_id, code] pair")
        message_id, code = value
        if not isinstance(message_id, int) or isinstance(message_id, bool):
            raise WireValueError("failure message_id must be an integer")
        if not isinstance(code, str):
            raise WireValueError("failure code must be a string")
        pairs.append((message_id, code))
    return tuple(pairs)
