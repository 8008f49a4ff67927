"""The two records behind every queued message: the body (shared) and its place in one queue.

A message routed to several queues is one `StoredBody` referenced by one `QueuedMessage` per
queue, so its bytes are held (and counted) once. Both use __slots__: there can be millions.
"""

from __future__ import annotations

from raftmq.broker.commands import HeaderValue

__all__ = ["DELAYED", "LEASED", "READY", "STATE_NAMES", "QueuedMessage", "StoredBody"]

# Where a message is in its queue: exactly one of these at any time.
READY = 0
DELAYED = 1
LEASED = 2
STATE_NAMES = ("ready", "delayed", "leased")


class StoredBody:
    """One published (or dead-lettered) message: immutable except for its reference count."""

    __slots__ = ("body", "exchange", "headers", "message_id", "published_ms", "refs", "routing_key")

    def __init__(
        self,
        message_id: int,
        body: bytes,
        headers: dict[str, HeaderValue],
        routing_key: str,
        exchange: str,
        published_ms: int,
    ) -> None:
        self.message_id = message_id
        self.body = body
        self.headers = headers
        self.routing_key = routing_key
        self.exchange = exchange
        self.published_ms = published_ms
        self.refs = 0  # number of queues holding it


class QueuedMessage:
    """A message's state in one queue."""

    __slots__ = (
        "delivery_count",
        "expires_ms",
        "lease_expires_ms",
        "lease_id",
        "ready_at_ms",
        "state",
        "stored",
    )

    def __init__(
        self, stored: StoredBody, state: int, expires_ms: int | None, ready_at_ms: int
    ) -> None:
        self.stored = stored
        self.state = state
        self.expires_ms = expires_ms  # None = never expires
        self.ready_at_ms = ready_at_ms  # when a DELAYED message becomes ready
        self.delivery_count = 0
        self.lease_id = 0  # current lease while LEASED
        self.lease_expires_ms = 0
