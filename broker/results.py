"""What `BrokerState.apply` returns, and the read-only views the query methods return.

Results never leave the process as Python objects (the HTTP layer serialises them), so they are
plain frozen dataclasses. Application failures are values (`ErrorResult`), never exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from raftmq.broker.commands import HeaderValue, QueueArgs
from raftmq.broker.stream_results import GroupAssignment, StreamPublishResult

__all__ = [
    "DECODE_ERROR",
    "EXCHANGE_NOT_FOUND",
    "GROUP_NOT_FOUND",
    "INTERNAL_ERROR",
    "INVALID_ARGUMENT",
    "IN_USE",
    "LEASE_EXPIRED",
    "MESSAGE_TOO_LARGE",
    "OFFSET_OUT_OF_RANGE",
    "PARTITION_NOT_ASSIGNED",
    "PARTITION_NOT_FOUND",
    "PRECONDITION_FAILED",
    "QUEUE_NOT_FOUND",
    "RESOURCE_EXHAUSTED",
    "SEQUENCE_TOO_OLD",
    "STALE_GENERATION",
    "STREAM_NOT_FOUND",
    "UNKNOWN_MEMBER",
    "UNKNOWN_MESSAGE",
    "BindingInfo",
    "ClaimResult",
    "Delivery",
    "ErrorResult",
    "ExchangeInfo",
    "OkResult",
    "PublishResult",
    "PurgeResult",
    "QueueInfo",
    "Result",
    "SettleResult",
]

# ErrorResult codes.
EXCHANGE_NOT_FOUND = "exchange_not_found"
QUEUE_NOT_FOUND = "queue_not_found"
PRECONDITION_FAILED = "precondition_failed"
IN_USE = "in_use"
INVALID_ARGUMENT = "invalid_argument"
RESOURCE_EXHAUSTED = "resource_exhausted"
SEQUENCE_TOO_OLD = "sequence_too_old"
DECODE_ERROR = "decode_error"
INTERNAL_ERROR = "internal_error"
STREAM_NOT_FOUND = "stream_not_found"
PARTITION_NOT_FOUND = "partition_not_found"
GROUP_NOT_FOUND = "group_not_found"
OFFSET_OUT_OF_RANGE = "offset_out_of_range"
MESSAGE_TOO_LARGE = "message_too_large"
UNKNOWN_MEMBER = "unknown_member"
STALE_GENERATION = "stale_generation"
PARTITION_NOT_ASSIGNED = "partition_not_assigned"

# SettleResult failure codes.
LEASE_EXPIRED = "lease_expired"
UNKNOWN_MESSAGE = "unknown_message"


@dataclass(frozen=True, slots=True)
class ErrorResult:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class OkResult:
    created: bool = False


@dataclass(frozen=True, slots=True)
class PurgeResult:
    purged: int


@dataclass(frozen=True, slots=True)
class PublishResult:
    accepted: int
    unroutable: tuple[int, ...]
    rejected: tuple[int, ...]
    duplicate: bool = False
    # Message i of the batch has id first_message_id + i (ids are allocated for every message).
    first_message_id: int = 0


# No slots: the claim path fills __dict__ directly (see queue_flow.claim).
@dataclass(frozen=True)
class Delivery:
    message_id: int
    lease_id: int
    body: bytes
    headers: dict[str, HeaderValue]
    routing_key: str
    exchange: str
    delivery_count: int
    published_ms: int
    lease_expires_ms: int


@dataclass(frozen=True, slots=True)
class ClaimResult:
    deliveries: tuple[Delivery, ...]


@dataclass(frozen=True, slots=True)
class SettleResult:
    settled: int
    failures: tuple[tuple[int, str], ...]


Result: TypeAlias = (
    ErrorResult | OkResult | PurgeResult | PublishResult | ClaimResult | SettleResult
    | StreamPublishResult | GroupAssignment
)


@dataclass(frozen=True, slots=True)
class QueueInfo:
    name: str
    args: QueueArgs
    ready: int
    delayed: int
    leased: int
    bytes: int  # body bytes of every message in this queue (ready, delayed and leased)
    consumers: int  # distinct consumer names that claimed in the last 60 s of state time
    published: int  # messages stored into this queue (including dead-lettered arrivals)
    delivered: int  # deliveries handed out by claims
    redelivered: int  # deliveries with delivery_count > 1
    acked: int
    nacked: int
    expired: int  # removed because their TTL ran out
    dead_lettered: int  # removed for a dead-letter reason (expired, delivery_limit, rejected, overflow)
    dropped: int  # of those, the ones no dead-letter exchange took (no DLX, unroutable, rejected)


@dataclass(frozen=True, slots=True)
class ExchangeInfo:
    name: str
    type: str
    alternate_exchange: str | None
    bindings: int


@dataclass(frozen=True, slots=True)
class BindingInfo:
    exchange: str
    queue: str
    binding_key: str
