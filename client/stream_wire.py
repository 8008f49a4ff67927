"""The stream side of the wire format: records to publish, records read, publish receipts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raftmq.client.wire import (
    Headers,
    WireFormat,
    WireValueError,
    body_from_wire,
    body_to_wire,
    headers_from_wire,
    headers_to_wire,
)

__all__ = ["OutgoingRecord", "StreamPublishReceipt", "StreamRecord"]


@dataclass(frozen=True)
class OutgoingRecord:
    """A record to append to a stream: partition by `key` (a stable hash), by an explicit
    `partition`, or round-robin with neither."""

    body: bytes
    key: str | None = None
    partition: int | None = None
    headers: Headers = field(default_factory=dict)

    def to_wire(self, wire_format: WireFormat) -> dict[str, object]:
        document: dict[str, object] = body_to_wire(self.body, wire_format)
        if wire_format is WireFormat.JSON:
            document.pop("body", None)  # the base64 form is exact
        if self.key is not None:
            document["key"] = self.key
        if self.partition is not None:
            document["partition"] = self.partition
        if self.headers:
            document["headers"] = headers_to_wire(self.headers, wire_format)
        return document


@dataclass(frozen=True)
class StreamRecord:
    """A record read from a stream partition."""

    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    body: bytes
    headers: Headers

    @classmethod
    def from_wire(cls, partition: int, document: object) -> StreamRecord:
        if not isinstance(document, dict):
            raise WireValueError("a stream record must be a map")
        offset, timestamp_ms, key = (document.get(name) for name in ("offset", "timestamp_ms", "key"))
        if not isinstance(offset, int) or not isinstance(timestamp_ms, int):
            raise WireValueError("a stream record needs integer offset and timestamp_ms")
        if key is not None and not isinstance(key, str):
            raise WireValueError("a stream record's key must be a string")
        return cls(partition, offset, timestamp_ms, key, body_from_wire(document),
                   headers_from_wire(document.get("headers")))


@dataclass(frozen=True)
class StreamPublishReceipt:
    """Where each record of a batch went: record i is at (partitions[i], offsets[i])."""

    partitions: tuple[int, ...]
    offsets: tuple[int, ...]
    duplicate: bool
    index: int

    @classmethod
    def from_wire(cls, document: object) -> StreamPublishReceipt:
        if not isinstance(document, dict):
            raise WireValueError("a stream publish receipt must be a map")
        partitions, offsets = _ints(document, "partitions"), _ints(document, "offsets")
        if len(partitions) != len(offsets):
            raise WireValueError("partitions and offsets differ in length")
        duplicate, index = document.get("duplicate"), document.get("index")
        if not isinstance(duplicate, bool) or not isinstance(index, int):
            raise WireValueError("a stream publish receipt needs duplicate and index")
        return cls(partitions, offsets, duplicate, index)


def _ints(document: dict[str, Any], name: str) -> tuple[int, ...]:
    values = document.get(name)
    if not isinstance(values, list) or not all(type(v) is int for v in values):
        raise WireValueError(f"'{name}' must be a list of integers")
    return tuple(values)
