"""The broker's mutable state and the message movements every command shares: storing a
message in a queue, removing it, returning an unsettled one, dead-lettering, firing timers.

Dead-lettering is queued (`pending_dead_letters`) and drained at the end of each step instead of
recursing, because republishing to a dead-letter queue can overflow it and dead-letter again.
"""

from __future__ import annotations

from collections import deque

from raftmq.broker.producers import ProducerTable
from raftmq.broker.queue_message import DELAYED, LEASED, READY, QueuedMessage, StoredBody
from raftmq.broker.queue_state import DROP_HEAD, QueueState
from raftmq.broker.queue_timers import DELAY, LEASE, TTL, Timer, TimerHeap
from raftmq.broker.routing import Router
from raftmq.broker.stream_state import StreamState

__all__ = [
    "MAX_DEATH_COUNT",
    "REASON_DELIVERY_LIMIT",
    "REASON_EXPIRED",
    "REASON_OVERFLOW",
    "REASON_REJECTED",
    "BrokerCore",
]

REASON_EXPIRED = "expired"
REASON_DELIVERY_LIMIT = "delivery_limit"
REASON_REJECTED = "rejected"
REASON_OVERFLOW = "overflow"

# A message dead-lettered this many times is dropped: dead-letter cycles (a queue whose DLX
# routes back to itself with TTL 0 or drop-head) would otherwise never end within one command.
MAX_DEATH_COUNT = 100


class BrokerCore:
    """Everything that is replicated state, plus the non-replicated bits derived from it."""

    __slots__ = (
        "dead_letter_dropped",
        "message_count",
        "next_lease_id",
        "next_message_id",
        "now_ms",
        "pending_dead_letters",
        "producers",
        "queues",
        "ready_notifications",
        "router",
        "stream_appends",
        "stream_bytes",
        "stream_deadline_ms",
        "streams",
        "timers",
        "total_body_bytes",
    )

    def __init__(self) -> None:
        self.now_ms = 0
        self.next_message_id = 1
        self.next_lease_id = 1
        self.total_body_bytes = 0
        self.message_count = 0  # messages in all queues (a body in two queues counts twice)
        self.dead_letter_dropped = 0
        self.queues: dict[str, QueueState] = {}
        self.router = Router()
        self.timers = TimerHeap()
        self.producers = ProducerTable()
        self.streams: dict[str, StreamState] = {}
        self.stream_bytes = 0  # body bytes of every readable stream record
        # No stream deadline (age retention, group session) falls before this; it may be
        # early, never late: firing then finds nothing due and computes the exact next one.
        self.stream_deadline_ms: int | None = None
        # Not state: transient work list and wake-up hints.
        self.pending_dead_letters: deque[tuple[QueueState, QueuedMessage, str]] = deque()
        self.ready_notifications: dict[str, None] = {}
        self.stream_appends: dict[tuple[str, int], None] = {}

    def __contains__(self, name: object) -> bool:
        """Whether a queue or stream has this name (what the default exchange routes to)."""
        return name in self.queues or name in self.streams

    # ------------------------------------------------------------ storing and removing

    def deliver(
        self, target: str, stored: StoredBody, ttl_ms: int | None, delay_ms: int | None
    ) -> bool:
        """Store a routed message in the queue or stream named `target`."""
        queue = self.queues.get(target)
        if queue is not None:
            return self.store(queue, stored, ttl_ms, delay_ms)
        return self.append_to_stream(self.streams[target], stored)

    def append_to_stream(self, stream: StreamState, stored: StoredBody) -> bool:
        """A routed message reaches a stream keyed by its routing key (round-robin when that
        is empty, or when it came through the default exchange); TTL and delay are queue
        features and do not apply. False if the stream's message size limit rejects it."""
        max_size = stream.args.max_message_bytes
        body = stored.body
        if max_size is not None and len(body) > max_size:
            return False
        # Through the default exchange the routing key is the stream's own name: no key then.
        key = stored.routing_key if stored.exchange else None
        partition = stream.choose_partition(key)
        _offset, freed = stream.append(partition, (self.now_ms, key, body, stored.headers))
        self.stream_bytes += len(body) - freed
        self.stream_appends[(stream.name, partition)] = None
        self.note_stream_head(stream)
        return True

    def note_stream_head(self, stream: StreamState) -> None:
        # An append to an empty partition can bring the next age deadline forward.
        if stream.args.max_age_ms is not None:
            self.lower_stream_deadline(stream.next_age_deadline_ms())

    def lower_stream_deadline(self, candidate: int | None) -> None:
        current = self.stream_deadline_ms
        if candidate is not None and (current is None or candidate < current):
            self.stream_deadline_ms = candidate

    def store(
        self, queue: QueueState, stored: StoredBody, ttl_ms: int | None, delay_ms: int | None
    ) -> bool:
        """Put a message in one queue; False if the queue's limits reject it."""
        body_len = len(stored.body)
        if queue.limited and queue.rejects(body_len) and not self._make_room(queue, body_len):
            return False
        queue_ttl = queue.message_ttl_ms
        if queue_ttl is not None and (ttl_ms is None or queue_ttl < ttl_ms):
            ttl_ms = queue_ttl
        message_id = stored.message_id
        if ttl_ms is None and not delay_ms:  # the common case, kept short
            queue.add(QueuedMessage(stored, READY, None, 0), message_id, body_len)
            self.ready_notifications[queue.name] = None
        else:
            self._store_timed(queue, stored, ttl_ms, delay_ms, body_len)
        stored.refs += 1
        if stored.refs == 1:
            self.total_body_bytes += body_len
        self.message_count += 1
        queue.counters.published += 1
        return True

    def _store_timed(
        self,
        queue: QueueState,
        stored: StoredBody,
        ttl_ms: int | None,
        delay_ms: int | None,
        body_len: int,
    ) -> None:
        published = stored.published_ms
        message_id = stored.message_id
        expires = None if ttl_ms is None else published + ttl_ms
        if delay_ms:
            ready_at = published + delay_ms
            queue.add(QueuedMessage(stored, DELAYED, expires, ready_at), message_id, body_len)
            self.timers.push(ready_at, message_id, queue.name, DELAY)
        else:
            queue.add(QueuedMessage(stored, READY, expires, 0), message_id, body_len)
            self.ready_notifications[queue.name] = None
        if expires is not None:
            self.timers.push(expires, message_id, queue.name, TTL)

    def _make_room(self, queue: QueueState, body_len: int) -> bool:
        if queue.args.overflow != DROP_HEAD or not queue.could_fit_without_ready(body_len):
            return False
        while queue.rejects(body_len):
            head = queue.take_ready()
            if head is None:  # cannot happen after could_fit_without_ready; stay safe
                return False
            self.discard(queue, head, taken=True)
            self.dead_letter(queue, head, REASON_OVERFLOW)
        return True

    def discard(self, queue: QueueState, msg: QueuedMessage, taken: bool = False) -> None:
        queue.remove(msg, taken)
        self.message_count -= 1
        self.release(msg.stored)

    def release(self, stored: StoredBody) -> None:
        stored.refs -= 1
        if stored.refs == 0:
            self.total_body_bytes -= len(stored.body)

    def return_unsettled(self, queue: QueueState, msg: QueuedMessage, delay_ms: int) -> None:
        """A leased message whose lease ran out or that was nacked with requeue."""
        limit = queue.args.delivery_limit
        now = self.now_ms
        if limit is not None and msg.delivery_count >= limit:
            self.discard(queue, msg)
            self.dead_letter(queue, msg, REASON_DELIVERY_LIMIT)
        elif msg.expires_ms is not None and msg.expires_ms <= now:
            self.expire(queue, msg)
        elif delay_ms > 0:
            queue.make_delayed(msg, now + delay_ms)
            self.timers.push(now + delay_ms, msg.stored.message_id, queue.name, DELAY)
        else:
            queue.make_ready(msg)
            self.ready_notifications[queue.name] = None

    def expire(self, queue: QueueState, msg: QueuedMessage) -> None:
        self.discard(queue, msg)
        queue.counters.expired += 1
        self.dead_letter(queue, msg, REASON_EXPIRED)

    # ------------------------------------------------------------ dead-lettering

    def dead_letter(self, queue: QueueState, msg: QueuedMessage, reason: str) -> None:
        """Queue a removed message for republishing to its queue's dead-letter exchange."""
        queue.counters.dead_lettered += 1
        self.pending_dead_letters.append((queue, msg, reason))

    def drain_dead_letters(self) -> None:
        pending = self.pending_dead_letters
        while pending:
            queue, msg, reason = pending.popleft()
            if not self._republish_dead(queue, msg, reason):
                queue.counters.dropped += 1
                self.dead_letter_dropped += 1

    def _republish_dead(self, queue: QueueState, msg: QueuedMessage, reason: str) -> bool:
        exchange = queue.args.dead_letter_exchange
        if exchange is None:
            return False
        stored = msg.stored
        previous = stored.headers.get("x-death-count")
        deaths = (previous if type(previous) is int and previous >= 0 else 0) + 1
        if deaths > MAX_DEATH_COUNT:
            return False
        routing_key = queue.args.dead_letter_routing_key
        if routing_key is None:
            routing_key = stored.routing_key
        targets = self.router.route(exchange, routing_key, self)
        if not targets:
            return False
        headers = dict(stored.headers)
        headers["x-death-reason"] = reason
        headers["x-death-queue"] = queue.name
        headers["x-death-count"] = deaths
        headers["x-death-time-ms"] = self.now_ms
        headers["x-delivery-count"] = msg.delivery_count
        headers["x-original-exchange"] = stored.exchange
        headers["x-original-routing-key"] = stored.routing_key
        message_id = self.next_message_id
        self.next_message_id += 1
        reborn = StoredBody(message_id, stored.body, headers, routing_key, exchange, self.now_ms)
        stored_anywhere = False
        for target in targets:
            if self.deliver(target, reborn, None, None):
                stored_anywhere = True
        return stored_anywhere

    # ------------------------------------------------------------ timers

    def fire_due_timers(self) -> None:
        now = self.now_ms
        timers = self.timers
        queues = self.queues
        while True:
            entry = timers.pop_due(now)
            if entry is None:
                break
            deadline, message_id, queue_name, kind, lease_id = entry
            queue = queues.get(queue_name)
            msg = None if queue is None else queue.messages.get(message_id)
            if queue is None or msg is None:
                continue
            # Only the entry of the current deadline acts: an extended lease or a re-delayed
            # message also has its old, earlier entry in the heap, and acting on that one
            # would move it ahead of other events due before its real deadline.
            if kind == LEASE:
                if msg.state == LEASED and msg.lease_id == lease_id and msg.lease_expires_ms == deadline:
                    self.return_unsettled(queue, msg, 0)
            elif kind == DELAY:
                if msg.state == DELAYED and msg.ready_at_ms == deadline:
                    queue.make_ready(msg)
                    self.ready_notifications[queue_name] = None
            # TTL: a leased message is judged when it comes back (return_unsettled).
            elif msg.state != LEASED and msg.expires_ms is not None and msg.expires_ms <= now:
                self.expire(queue, msg)
            if self.pending_dead_letters:
                self.drain_dead_letters()
        timers.compact_if_needed(self.timer_is_live)

    def timer_is_live(self, entry: Timer) -> bool:
        """Whether popping this entry could still do something."""
        deadline, message_id, queue_name, kind, lease_id = entry
        queue = self.queues.get(queue_name)
        msg = None if queue is None else queue.messages.get(message_id)
        if msg is None:
            return False
        if kind == LEASE:
            return msg.state == LEASED and msg.lease_id == lease_id and msg.lease_expires_ms == deadline
        if kind == DELAY:
            return msg.state == DELAYED and msg.ready_at_ms == deadline
        return msg.expires_ms == deadline

    def next_deadline_ms(self) -> int | None:
        entries = self.timers.entries
        # Moot entries on top would only cause pointless ticks; dropping them changes nothing.
        while entries and not self.timer_is_live(entries[0]):
            self.timers.drop_top()
        queue_deadline = self.timers.next_deadline_ms()
        stream_deadline = self.stream_deadline_ms
        if queue_deadline is None or stream_deadline is None:
            return stream_deadline if queue_deadline is None else queue_deadline
        return min(queue_deadline, stream_deadline)

    def rebuild_timers(self) -> None:
        """After a restore: one entry per live timer, in the heap order the original had."""
        entries: list[Timer] = []
        for name, queue in self.queues.items():
            for message_id, msg in queue.messages.items():
                if msg.expires_ms is not None:
                    entries.append((msg.expires_ms, message_id, name, TTL, 0))
                if msg.state == DELAYED:
                    entries.append((msg.ready_at_ms, message_id, name, DELAY, 0))
                elif msg.state == LEASED:
                    entries.append((msg.lease_expires_ms, message_id, name, LEASE, msg.lease_id))
        self.timers.reset(entries)
