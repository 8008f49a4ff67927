"""One queue: its messages, the order ready ones are handed out in, counts and counters.

Ready messages are delivered in message-id order. Ids are allocated globally and increasingly,
so a new message always has the largest id in its queue: new ready messages go to a deque, and
only messages that come back (requeued, lease expired, delay over) need a heap. Removing a
ready message from the middle (TTL expiry) leaves a stale id behind that `take_ready` skips;
when stale ids outnumber live ones the structures are rebuilt, which keeps memory bounded and
costs O(1) amortised. `messages` is itself in id order for the same reason (ids only grow).

This class only keeps the books; timers, bodies and dead-lettering belong to the caller.
"""

from __future__ import annotations

from collections import deque
from heapq import heappop, heappush
from itertools import compress

from raftmq.broker.commands import QueueArgs
from raftmq.broker.queue_message import DELAYED, LEASED, READY, QueuedMessage
from raftmq.broker.results import LEASE_EXPIRED, UNKNOWN_MESSAGE

__all__ = [
    "CONSUMER_WINDOW_MS",
    "COUNTER_NAMES",
    "DROP_HEAD",
    "MAX_TRACKED_CONSUMERS",
    "OVERFLOW_POLICIES",
    "REJECT_PUBLISH",
    "QueueCounters",
    "QueueState",
]

REJECT_PUBLISH = "reject-publish"
DROP_HEAD = "drop-head"
OVERFLOW_POLICIES = (REJECT_PUBLISH, DROP_HEAD)

CONSUMER_WINDOW_MS = 60_000
MAX_TRACKED_CONSUMERS = 1_000
_COMPACT_MIN_STALE = 64

COUNTER_NAMES = (
    "published",
    "delivered",
    "redelivered",
    "acked",
    "nacked",
    "expired",
    "dead_lettered",
    "dropped",
)


class QueueCounters:
    __slots__ = COUNTER_NAMES

    def __init__(self, values: list[int] | None = None) -> None:
        for name, value in zip(COUNTER_NAMES, values or [0] * len(COUNTER_NAMES), strict=True):
            setattr(self, name, value)

    published: int
    delivered: int
    redelivered: int
    acked: int
    nacked: int
    expired: int
    dead_lettered: int
    dropped: int

    def as_list(self) -> list[int]:
        return [getattr(self, name) for name in COUNTER_NAMES]


class QueueState:
    __slots__ = (
        "_fresh",
        "_returned",
        "_stale",
        "args",
        "consumers",
        "count",
        "counters",
        "limited",
        "message_ttl_ms",
        "messages",
        "name",
        "size",
    )

    def __init__(self, name: str, args: QueueArgs) -> None:
        self.name = name
        self.args = args
        # Copied out of args because the publish path reads them for every message.
        self.limited = args.max_length is not None or args.max_length_bytes is not None
        self.message_ttl_ms = args.message_ttl_ms
        self.messages: dict[int, QueuedMessage] = {}
        # Indexed by READY / DELAYED / LEASED: number of messages and their body bytes.
        self.count = [0, 0, 0]
        self.size = [0, 0, 0]
        self.counters = QueueCounters()
        # consumer name -> last claim time, least recently seen first.
        self.consumers: dict[str, int] = {}
        self._fresh: deque[int] = deque()
        self._returned: list[int] = []
        self._stale = 0

    # ------------------------------------------------------------ limits

    def rejects(self, body_len: int) -> bool:
        """Whether a new message of this size does not fit (max length counts ready + delayed)."""
        args = self.args
        if args.max_length is not None and self.count[READY] + self.count[DELAYED] >= args.max_length:
            return True
        limit = args.max_length_bytes
        return limit is not None and self.size[READY] + self.size[DELAYED] + body_len > limit

    def could_fit_without_ready(self, body_len: int) -> bool:
        """Whether dropping every ready message would make room (delayed ones cannot be dropped)."""
        args = self.args
        if args.max_length is not None and self.count[DELAYED] + 1 > args.max_length:
            return False
        limit = args.max_length_bytes
        return limit is None or self.size[DELAYED] + body_len <= limit

    # ------------------------------------------------------------ transitions

    def add(self, msg: QueuedMessage, message_id: int, body_len: int) -> None:
        """A new message (state READY or DELAYED) with the largest id so far."""
        self.messages[message_id] = msg
        state = msg.state
        self.count[state] += 1
        self.size[state] += body_len
        if state == READY:
            self._fresh.append(message_id)

    def _move(self, msg: QueuedMessage, state: int) -> None:
        body_len = len(msg.stored.body)
        old = msg.state
        self.count[old] -= 1
        self.size[old] -= body_len
        self.count[state] += 1
        self.size[state] += body_len
        msg.state = state

    def make_ready(self, msg: QueuedMessage) -> None:
        """A DELAYED or LEASED message becomes ready again, at its id's place in the order."""
        self._move(msg, READY)
        heappush(self._returned, msg.stored.message_id)

    def make_delayed(self, msg: QueuedMessage, ready_at_ms: int) -> None:
        self._move(msg, DELAYED)
        msg.ready_at_ms = ready_at_ms

    def take_ready(self) -> QueuedMessage | None:
        """Detach the oldest ready message from the ready order; the caller must then
        `make_leased` it or `remove(msg, taken=True)` it."""
        fresh = self._fresh
        returned = self._returned
        messages = self.messages
        while True:
            if returned and (not fresh or returned[0] < fresh[0]):
                message_id = heappop(returned)
            elif fresh:
                message_id = fresh.popleft()
            else:
                return None
            msg = messages.get(message_id)
            if msg is not None and msg.state == READY:
                return msg
            self._stale -= 1

    def lease_ready(
        self, max_messages: int, first_lease_id: int, lease_expires_ms: int
    ) -> list[QueuedMessage]:
        """Lease up to max_messages ready messages in id order, with lease ids counting up
        from first_lease_id (the claim hot path: one call per claim, books kept in bulk)."""
        leased: list[QueuedMessage] = []
        take = self.take_ready
        lease_id = first_lease_id
        moved_bytes = 0
        while len(leased) < max_messages:
            msg = take()
            if msg is None:
                break
            msg.state = LEASED
            msg.lease_id = lease_id
            msg.lease_expires_ms = lease_expires_ms
            msg.delivery_count += 1
            moved_bytes += len(msg.stored.body)
            lease_id += 1
            leased.append(msg)
        count, size = self.count, self.size
        count[READY] -= len(leased)
        count[LEASED] += len(leased)
        size[READY] -= moved_bytes
        size[LEASED] += moved_bytes
        return leased

    def remove_leased(
        self, leases: list[int], failures: list[tuple[int, str]]
    ) -> list[QueuedMessage]:
        """Remove the messages of valid leases ([message_id, lease_id, ...] flat) and return
        them; record the others in failures (the ack hot path)."""
        messages = self.messages
        removed: list[QueuedMessage] = []
        removed_bytes = 0
        for i in range(0, len(leases), 2):
            message_id = leases[i]
            msg = messages.get(message_id)
            if msg is None:
                failures.append((message_id, UNKNOWN_MESSAGE))
            elif msg.state != LEASED or msg.lease_id != leases[i + 1]:
                # Never touch a newer delivery of the same message.
                failures.append((message_id, LEASE_EXPIRED))
            else:
                del messages[message_id]
                removed_bytes += len(msg.stored.body)
                removed.append(msg)
        self.count[LEASED] -= len(removed)
        self.size[LEASED] -= removed_bytes
        return removed

    def check_lease(self, message_id: int, lease_id: int) -> QueuedMessage | str:
        """The message if (message_id, lease_id) is its current lease, else the failure code."""
        msg = self.messages.get(message_id)
        if msg is None:
            return UNKNOWN_MESSAGE
        if msg.state != LEASED or msg.lease_id != lease_id:
            return LEASE_EXPIRED
        return msg

    def remove(self, msg: QueuedMessage, taken: bool = False) -> None:
        del self.messages[msg.stored.message_id]
        state = msg.state
        self.count[state] -= 1
        self.size[state] -= len(msg.stored.body)
        if state == READY and not taken:
            self._stale += 1
            if self._stale > _COMPACT_MIN_STALE and self._stale > self.count[READY]:
                self._rebuild_ready_order()

    def remove_unleased(self) -> list[QueuedMessage]:
        """Purge: drop every ready and delayed message, return them."""
        removed = [m for m in self.messages.values() if m.state != LEASED]
        if removed:
            self.messages = {i: m for i, m in self.messages.items() if m.state == LEASED}
            for state in (READY, DELAYED):
                self.count[state] = 0
                self.size[state] = 0
        self._fresh.clear()
        self._returned.clear()
        self._stale = 0
        return removed

    def _rebuild_ready_order(self) -> None:
        self._fresh = deque(i for i, m in self.messages.items() if m.state == READY)
        self._returned = []
        self._stale = 0

    def restore_messages(
        self,
        message_ids: list[int],
        messages: list[QueuedMessage],
        states: list[int],
        body_sizes: list[int],
    ) -> None:
        """Fill a new, empty queue with messages read from a snapshot: columns in id order, ids
        increasing, states exact ints. Books are kept a column at a time: restore runs on the
        Raft thread and must not stall it."""
        self.messages = dict(zip(message_ids, messages, strict=True))
        everything = len(states)
        for state in (READY, DELAYED, LEASED):
            count = states.count(state)
            self.count[state] = count
            if count == everything:
                self.size[state] = sum(body_sizes)
            elif count:
                self.size[state] = sum(compress(body_sizes, map(state.__eq__, states)))
        if self.count[READY] == everything:
            self._fresh = deque(message_ids)
        else:
            self._fresh = deque(compress(message_ids, map(READY.__eq__, states)))
        self._returned = []
        self._stale = 0

    # ------------------------------------------------------------ consumers

    def touch_consumer(self, consumer: str, now_ms: int) -> None:
        consumers = self.consumers
        consumers.pop(consumer, None)
        consumers[consumer] = now_ms
        horizon = now_ms - CONSUMER_WINDOW_MS
        while consumers:
            oldest = next(iter(consumers))
            if consumers[oldest] > horizon and len(consumers) <= MAX_TRACKED_CONSUMERS:
                break
            del consumers[oldest]

    def active_consumers(self, now_ms: int) -> int:
        horizon = now_ms - CONSUMER_WINDOW_MS
        return sum(1 for seen in self.consumers.values() if seen > horizon)
