"""Queue push consumers over `/v1/ws`, with prefetch (docs/websocket.md, "Queue push").

A consume subscription is a task owned by its connection, registered with the connection's
stream subscriptions (one id space, one bound of `MAX_SUBSCRIPTIONS`). It replies to its request
from that task, then loops: while it has free prefetch slots it waits in the long-poll hub and
proposes the replicated `Claim` (never a local shortcut) only when the local replica shows ready
messages, for at most its free slots, and pushes what the claim leased, in order, each push
awaiting its socket write. A pushed message holds its slot until it is acked or nacked through
the subscription, or its lease runs out; extend keeps it. With no free slot nothing is claimed.

Wake-ups come from the hub, which wakes only as many waiters as the ready messages can serve;
a slow recheck (`IDLE_RECHECK_S`) is the safety net for what publishes do not announce (a
deleted queue), and the only clock when the node's waiter bound is full.

Every claim result is pushed unless the connection died first; then, as for a consumer that
vanishes in any other way, the leases run out and the broker redelivers the messages. Nothing
is released eagerly: lease expiry in the replicated state is the one mechanism.

Cancel stops claiming; its reply follows the last push. Messages already pushed stay leased and
can still be settled through the subscription until none is held; then its id is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType

from raftmq.broker.api.codec import (
    DEFAULT_CONSUMER,
    MAX_NAME_FIELD_CHARS,
    Fields,
    SettleRequest,
    check_name,
    parse_settle,
)
from raftmq.broker.api.errors import ApiError, bad_request
from raftmq.broker.api.longpoll import Waiter
from raftmq.broker.api.views import delivery_view
from raftmq.broker.api.ws_streams import MAX_PUSH_MESSAGES, Credit, Subscription, subscription_of
from raftmq.broker.commands import Ack, Claim, ExtendLease, LeaseRef, Nack
from raftmq.broker.queue_validation import MAX_CLAIM_MESSAGES, MAX_LEASE_MS
from raftmq.broker.results import ClaimResult, Delivery, SettleResult
from raftmq.client import errors as codes
from raftmq.client.wire import SettleReceipt

if TYPE_CHECKING:
    from raftmq.broker.api.ws import _Connection, _Request

__all__ = [
    "DEFAULT_LEASE_MS",
    "DEFAULT_PREFETCH",
    "IDLE_RECHECK_S",
    "MAX_PREFETCH",
    "QUEUE_OPS",
    "QueueSubscription",
    "settle_command",
]

MAX_PREFETCH = 10_000
DEFAULT_PREFETCH = 100
DEFAULT_LEASE_MS = 30_000
# How often an idle subscription looks at its queue without a wake-up (module level, so tests
# can lengthen it to show that the hub's wake-ups do the work).
IDLE_RECHECK_S = 1.0

log = logging.getLogger(__name__)
LeaseKey = tuple[int, int]  # (message_id, lease_id)


class _NoCredit(Credit):
    """A queue subscription's flow control is its prefetch: the stream `credit` op is refused."""

    def grant(self, messages: int) -> None:
        raise bad_request("a queue subscription takes no credit: each ack or nack through it "
                          "frees a prefetch slot")


class HeldLeases:
    """The leases a subscription pushed and still holds, each with when it runs out (ms)."""

    def __init__(self) -> None:
        self._expires_ms: dict[LeaseKey, int] = {}
        # (expires_ms, message_id, lease_id); entries of released or extended leases stay until
        # they come up or the heap is rebuilt, which keeps it within twice the live leases.
        self._heap: list[tuple[int, int, int]] = []

    def __len__(self) -> int:
        return len(self._expires_ms)

    def hold(self, lease: LeaseKey, expires_ms: int) -> None:
        self._expires_ms[lease] = expires_ms
        heapq.heappush(self._heap, (expires_ms, *lease))
        if len(self._heap) > 2 * len(self._expires_ms) + 64:
            self._heap = [(expires, *key) for key, expires in self._expires_ms.items()]
            heapq.heapify(self._heap)

    def holds(self, lease: LeaseKey) -> bool:
        return lease in self._expires_ms

    def release(self, lease: LeaseKey) -> bool:
        return self._expires_ms.pop(lease, None) is not None

    def expire(self, now_ms: int) -> int:
        """Forget the leases that ran out by `now_ms`; how many there were."""
        heap, expired = self._heap, 0
        while heap and heap[0][0] <= now_ms:
            expires_ms, message_id, lease_id = heapq.heappop(heap)
            if self._expires_ms.get((message_id, lease_id)) == expires_ms:
                del self._expires_ms[(message_id, lease_id)]
                expired += 1
        return expired

    def next_expiry_ms(self) -> int | None:
        return self._heap[0][0] if self._heap else None


class QueueSubscription(Subscription):
    """Pushes one queue's messages to one consumer, at most `prefetch` unsettled at a time."""

    def __init__(
        self, connection: _Connection, request: _Request,
        queue: str, consumer: str, prefetch: int, lease_ms: int,
    ) -> None:
        super().__init__(connection, request, 0)
        self.credit = _NoCredit(0)
        self.queue = queue
        self.consumer = consumer
        self.prefetch = prefetch
        self.lease_ms = lease_ms
        self.leases = HeldLeases()
        self.claiming = True  # False once cancelled or ended by an error frame
        self.claims_proposed = 0
        self.idle_rechecks = 0
        self._stopping = False
        self._cancels: list[tuple[int, WSMsgType]] = []  # cancel requests awaiting their reply
        self._nudge = asyncio.Event()  # a slot was freed, or stop
        self._waiter: Waiter | None = None

    @property
    def unacked(self) -> int:
        """Pushed messages still held under their leases: at most `prefetch`."""
        return len(self.leases)

    # -- the task ---------------------------------------------------------------------------------

    async def run(self) -> None:
        if not await self.reply({"subscription": self.sid}):
            return
        try:
            if not await self._consume():
                return  # the connection is gone
        except ApiError as error:  # the queue was deleted, a claim failed, ...
            await self.end_with(error)
        self.claiming = False
        while self._cancels:
            request_id, opcode = self._cancels.pop(0)
            await self.connection.send_reply(request_id, opcode, {"unacked": self.unacked})
        # Settling what was pushed stays possible until nothing is held.
        while self._free_slots() < self.prefetch:
            await self._wait_for_slot("settle")

    def ended(self) -> None:
        # Ended before answering a cancel (the connection closed): the reply frees its slot.
        while self._cancels:
            request_id, opcode = self._cancels.pop(0)
            self.connection.reply(request_id, opcode, {"unacked": self.unacked})

    async def _consume(self) -> bool:
        """Claim and push until cancelled; False once the connection is gone."""
        hub = self.ctx.hub
        while not self._stopping and not hub.closed:
            if self._free_slots() == 0:
                await self._wait_for_slot("slot")
                continue
            deliveries = await self._claim_when_ready()
            if deliveries and not await self._push(deliveries):
                return False
        return True

    def _free_slots(self) -> int:
        self.leases.expire(self.ctx.clock_ms())
        return self.prefetch - len(self.leases)

    def _claim_size(self) -> int:
        """Messages the next claim asks for: the free slots, up to one claim's limit."""
        return min(self._free_slots(), self.ctx.limits.max_claim_messages, MAX_CLAIM_MESSAGES)

    async def _wait_for_slot(self, reason: str) -> None:
        """Until a settle frees a slot, the next held lease runs out, or stop."""
        # No await since the caller counted the slots: no settle can have slipped in between.
        self._nudge.clear()
        next_expiry_ms = self.leases.next_expiry_ms()
        timeout_s = None
        if next_expiry_ms is not None:
            timeout_s = max(0.0, (next_expiry_ms - self.ctx.clock_ms()) / 1000.0) + 0.001
        self.waiting = reason
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._nudge.wait(), timeout_s)
        self.waiting = None

    async def _claim_when_ready(self) -> tuple[Delivery, ...]:
        """Propose a Claim once the local replica shows ready messages (or no longer knows
        the queue: the claim's queue_not_found is then authoritative); () when stopping."""
        ctx, queue = self.ctx, self.queue
        with contextlib.ExitStack() as scope:
            waiter = self._enter_waiter(scope)
            while not self._stopping and not ctx.hub.closed:
                # Re-armed before looking, so a wake-up between the look and the wait is kept.
                if waiter is not None:
                    waiter.rearm()
                self._nudge.clear()
                exists, ready = ctx.read(lambda s: (s.has_queue(queue), s.ready_count(queue)))
                if not exists or ready > 0:
                    deliveries = await self._propose_claim()
                    if deliveries:
                        return deliveries
                    # Another consumer was faster: wait, as a long-poll does, never spin.
                self.waiting = "messages"
                woken = await self._wait_for_messages(waiter)
                self.waiting = None
                if not woken:
                    self.idle_rechecks += 1
        return ()

    def _enter_waiter(self, scope: contextlib.ExitStack) -> Waiter | None:
        try:
            waiter = scope.enter_context(self.ctx.hub.waiter(self.queue, self._claim_size()))
        except ApiError:
            # The node's long-poll bound is full: this subscription exists regardless, so it
            # looks on the recheck clock alone rather than failing.
            return None
        self._waiter = waiter
        scope.callback(self._forget_waiter)
        return waiter

    def _forget_waiter(self) -> None:
        self._waiter = None

    async def _wait_for_messages(self, waiter: Waiter | None) -> bool:
        if waiter is not None:
            return await waiter.wait(IDLE_RECHECK_S)
        try:
            await asyncio.wait_for(self._nudge.wait(), IDLE_RECHECK_S)
        except TimeoutError:
            return False
        return True

    async def _propose_claim(self) -> tuple[Delivery, ...]:
        ctx = self.ctx
        command = Claim(now_ms=ctx.clock_ms(), queue=self.queue, consumer=self.consumer,
                        max_messages=self._claim_size(), lease_ms=self.lease_ms)
        self.claims_proposed += 1
        result, _ = await ctx.propose(command, ClaimResult)
        return result.deliveries

    async def _push(self, deliveries: tuple[Delivery, ...]) -> bool:
        for delivery in deliveries:
            self.leases.hold((delivery.message_id, delivery.lease_id), delivery.lease_expires_ms)
        wire_format = self.wire_format
        for batch in _frames(deliveries, self.frame_body_bytes):
            frame: dict[str, object] = {
                "subscription": self.sid,
                "messages": [delivery_view(delivery, wire_format) for delivery in batch],
            }
            if not await self.connection.push(frame, self.opcode):
                return False
            self.pushed_messages += len(batch)
        return True

    # -- what the ops call ----------------------------------------------------------------------

    def cancel(self, request_id: int, opcode: WSMsgType) -> None:
        if not self.claiming:
            self.connection.reply(request_id, opcode, {"unacked": self.unacked})
            return
        self._cancels.append((request_id, opcode))
        self._stopping = True
        self._nudge.set()
        if self._waiter is not None:
            self._waiter.event.set()  # not `signalled`: the hub passes no wake-up on for it

    def settled(self, command: Ack | Nack | ExtendLease, result: SettleResult) -> None:
        """Free (or, for extend, re-date) the slots of the leases a settle was answered for."""
        leases = _lease_keys(command.leases)
        if isinstance(command, ExtendLease):
            failed = {message_id for message_id, _ in result.failures}
            # The state dated the leases from its own clock, at least the command's: this is
            # never earlier than the real expiry, so no slot is freed while still leased.
            expires_ms = max(command.now_ms, self.ctx.read(lambda s: s.now_ms)) + command.lease_ms
            for lease in leases:
                if lease[0] not in failed and self.leases.holds(lease):
                    self.leases.hold(lease, expires_ms)
            leases = [lease for lease in leases if lease[0] in failed]
        # Settled or refused (expired, unknown): either way the lease is no longer held.
        released = [lease for lease in leases if self.leases.release(lease)]
        if released:
            self._nudge.set()


def _lease_keys(leases: Sequence[LeaseRef]) -> list[LeaseKey]:
    return [(ref.message_id, ref.lease_id) for ref in leases]


def _frames(deliveries: Sequence[Delivery], max_body_bytes: int) -> Iterator[Sequence[Delivery]]:
    """Consecutive runs of at most MAX_PUSH_MESSAGES and `max_body_bytes` of bodies (a larger
    message goes alone)."""
    start, body_bytes = 0, 0
    for index, delivery in enumerate(deliveries):
        size = len(delivery.body)
        if index > start and (index - start >= MAX_PUSH_MESSAGES
                              or body_bytes + size > max_body_bytes):
            yield deliveries[start:index]
            start, body_bytes = index, 0
        body_bytes += size
    if start < len(deliveries):
        yield deliveries[start:]


def settle_command(
    action: str, now_ms: int, queue: str, parsed: SettleRequest
) -> Ack | Nack | ExtendLease:
    """The command of an ack, nack or extend request (as HTTP's settle builds it)."""
    if action == "ack":
        return Ack(now_ms, queue, parsed.leases)
    if action == "nack":
        return Nack(now_ms, queue, parsed.leases, parsed.requeue, parsed.delay_ms)
    return ExtendLease(now_ms, queue, parsed.leases, parsed.lease_ms)


# -- ops ------------------------------------------------------------------------------------------

_CONSUME_FIELDS = frozenset({"queue", "consumer", "prefetch", "lease_ms"})
_SETTLE_FIELDS = {
    "ack": frozenset({"subscription", "leases"}),
    "nack": frozenset({"subscription", "leases", "requeue", "delay_ms"}),
    "extend": frozenset({"subscription", "leases", "lease_ms"}),
}


def _consume_op(connection: _Connection, request: _Request) -> None:
    fields = Fields(request.document, _CONSUME_FIELDS)
    queue = check_name("queue", fields.str_("queue", MAX_NAME_FIELD_CHARS))
    consumer = check_name(
        "consumer", fields.str_("consumer", MAX_NAME_FIELD_CHARS, default=DEFAULT_CONSUMER)
    )
    prefetch = fields.int_("prefetch", DEFAULT_PREFETCH, 1, MAX_PREFETCH)
    lease_ms = fields.int_("lease_ms", DEFAULT_LEASE_MS, 1, MAX_LEASE_MS)
    if not connection.ctx.read(lambda s: s.has_queue(queue)):
        raise ApiError(codes.QUEUE_NOT_FOUND, f"queue {queue!r} does not exist")
    connection.subscriptions.start(
        QueueSubscription(connection, request, queue, consumer, prefetch, lease_ms)
    )


def _queue_subscription(connection: _Connection, fields: Fields) -> QueueSubscription:
    found = subscription_of(connection, fields)
    if not isinstance(found, QueueSubscription):
        raise bad_request(f"subscription {found.sid} is a stream subscription; ack, nack, "
                          "extend and cancel are for consume subscriptions")
    return found


def _settle_op(action: str) -> Callable[[_Connection, _Request], None]:
    def op(connection: _Connection, request: _Request) -> None:
        ctx, document = connection.ctx, request.document
        subscription = _queue_subscription(connection, Fields(document, _SETTLE_FIELDS[action]))
        settle_fields = {key: value for key, value in document.items() if key != "subscription"}
        parsed = parse_settle(settle_fields, action, ctx.limits)
        command = settle_command(action, ctx.clock_ms(), subscription.queue, parsed)
        request_id, opcode = request.request_id, request.opcode

        def on_done(task: asyncio.Task[tuple[SettleResult, int]]) -> None:
            error = connection.finish(task)
            if error is None:
                result, _ = task.result()
                subscription.settled(command, result)
                receipt = SettleReceipt(settled=result.settled, failures=result.failures)
                connection.reply(request_id, opcode, receipt.to_wire())
            elif isinstance(error, ApiError):
                connection.reply_error(request_id, opcode, error)
            else:
                if not isinstance(error, asyncio.CancelledError):
                    log.error("%s over WebSocket failed", action, exc_info=error)
                connection.reply_error(request_id, opcode, ApiError(
                    codes.INTERNAL_ERROR, "internal error; see the node's log", definite=False))

        connection.start(ctx.propose(command, SettleResult), on_done)

    return op


def _cancel_op(connection: _Connection, request: _Request) -> None:
    subscription = _queue_subscription(connection, Fields(request.document,
                                                          frozenset({"subscription"})))
    subscription.cancel(request.request_id, request.opcode)


QUEUE_OPS: dict[str, Callable[[_Connection, _Request], Any]] = {
    "consume": _consume_op,
    "ack": _settle_op("ack"),
    "nack": _settle_op("nack"),
    "extend": _settle_op("extend"),
    "cancel": _cancel_op,
}
