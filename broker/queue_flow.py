"""The hot-path commands: publish, claim, ack, nack and lease extension.

These run for every message, so they avoid per-message allocations beyond the two records a
stored message needs, and never scan a queue.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from raftmq.broker.commands import Claim
from raftmq.broker.queue_core import REASON_REJECTED, BrokerCore
from raftmq.broker.queue_message import QueuedMessage, StoredBody
from raftmq.broker.queue_state import QueueState
from raftmq.broker.queue_timers import LEASE
from raftmq.broker.results import (
    EXCHANGE_NOT_FOUND,
    QUEUE_NOT_FOUND,
    RESOURCE_EXHAUSTED,
    ClaimResult,
    Delivery,
    ErrorResult,
    PublishResult,
    SettleResult,
)

__all__ = ["ack", "claim", "extend_lease", "nack", "publish"]

_new_object = object.__new__
_set_attribute = object.__setattr__


def publish(
    core: BrokerCore,
    exchange: str,
    messages: Sequence[Sequence[Any]],
    producer_id: str | None,
    sequence: int | None,
    max_total_bytes: int,
) -> PublishResult | ErrorResult:
    """Publish messages given in wire form `[routing_key, body, headers, ttl_ms, delay_ms]`."""
    if producer_id is not None:
        seen = core.producers.check(producer_id, sequence or 0, core.now_ms, PublishResult)
        if seen is not None:
            return seen
    if exchange and exchange not in core.router.exchanges:
        return ErrorResult(EXCHANGE_NOT_FOUND, f"exchange {exchange!r} does not exist")
    if max_total_bytes:
        incoming = sum(len(m[1]) for m in messages)
        held = core.total_body_bytes + core.stream_bytes  # the limit covers streams too
        if held + incoming > max_total_bytes:
            return ErrorResult(
                RESOURCE_EXHAUSTED,
                f"the broker holds {held} body bytes; {incoming} more would exceed the limit "
                f"of {max_total_bytes}",
            )
    result = _store_batch(core, exchange, messages)
    if producer_id is not None:
        core.producers.record(producer_id, sequence or 0, result, core.now_ms)
    return result


def _store_batch(
    core: BrokerCore, exchange: str, messages: Sequence[Sequence[Any]]
) -> PublishResult:
    now = core.now_ms
    route = core.router.route
    queues = core.queues
    store = core.store
    # Ids for the whole batch up front: message i is first_id + i, routed or not.
    first_id = core.next_message_id
    core.next_message_id += len(messages)
    unroutable: list[int] = []
    rejected: list[int] = []
    accepted = 0
    message_id = first_id - 1
    last_key: str | None = None
    targets: tuple[str, ...] | None = ()
    for index, (routing_key, body, headers, ttl_ms, delay_ms) in enumerate(messages):
        message_id += 1
        if routing_key != last_key:  # batches usually repeat one routing key
            targets = route(exchange, routing_key, core)
            last_key = routing_key
        if not targets:
            unroutable.append(index)
            continue
        stored = StoredBody(message_id, body, headers, routing_key, exchange, now)
        stored_anywhere = False
        for target in targets:
            queue = queues.get(target)
            if queue is not None:
                stored_here = store(queue, stored, ttl_ms, delay_ms)
            else:  # a stream: the router only names queues and streams
                stored_here = core.append_to_stream(core.streams[target], stored)
            if stored_here:
                stored_anywhere = True
            elif not rejected or rejected[-1] != index:
                rejected.append(index)
        if stored_anywhere:
            accepted += 1
    if core.pending_dead_letters:
        core.drain_dead_letters()
    return PublishResult(accepted, tuple(unroutable), tuple(rejected), False, first_id)


def claim(core: BrokerCore, cmd: Claim) -> ClaimResult | ErrorResult:
    queue = core.queues.get(cmd.queue)
    if queue is None:
        return _no_queue(cmd.queue)
    lease_expires = core.now_ms + cmd.lease_ms
    first_lease_id = core.next_lease_id
    leased = queue.lease_ready(cmd.max_messages, first_lease_id, lease_expires)
    core.next_lease_id = first_lease_id + len(leased)
    push_timer = core.timers.push
    name = queue.name
    deliveries: list[Delivery] = []
    redelivered = 0
    for msg in leased:
        stored = msg.stored
        push_timer(lease_expires, stored.message_id, name, LEASE, msg.lease_id)
        if msg.delivery_count > 1:
            redelivered += 1
        delivery = _new_object(Delivery)
        # Delivery is a frozen dataclass; filling its __dict__ at once is several times cheaper
        # than its __init__, and this runs once per delivered message on every replica.
        _set_attribute(delivery, "__dict__", {
            "message_id": stored.message_id,
            "lease_id": msg.lease_id,
            "body": stored.body,
            "headers": stored.headers,
            "routing_key": stored.routing_key,
            "exchange": stored.exchange,
            "delivery_count": msg.delivery_count,
            "published_ms": stored.published_ms,
            "lease_expires_ms": lease_expires,
        })
        deliveries.append(delivery)
    queue.counters.delivered += len(deliveries)
    queue.counters.redelivered += redelivered
    queue.touch_consumer(cmd.consumer, core.now_ms)
    return ClaimResult(tuple(deliveries))


def ack(core: BrokerCore, queue_name: str, leases: list[int]) -> SettleResult | ErrorResult:
    """Settle commands take leases as a flat [message_id, lease_id, ...] list (the wire form)."""
    queue = core.queues.get(queue_name)
    if queue is None:
        return _no_queue(queue_name)
    failures: list[tuple[int, str]] = []
    removed = queue.remove_leased(leases, failures)
    freed_bytes = 0
    for msg in removed:
        stored = msg.stored
        stored.refs -= 1
        if stored.refs == 0:
            freed_bytes += len(stored.body)
    core.total_body_bytes -= freed_bytes
    core.message_count -= len(removed)
    queue.counters.acked += len(removed)
    return SettleResult(len(removed), tuple(failures))


def nack(
    core: BrokerCore, queue_name: str, leases: list[int], requeue: bool, delay_ms: int
) -> SettleResult | ErrorResult:
    def settle(queue: QueueState, msg: QueuedMessage) -> None:
        queue.counters.nacked += 1
        if requeue:
            core.return_unsettled(queue, msg, delay_ms)
        else:
            core.discard(queue, msg)
            core.dead_letter(queue, msg, REASON_REJECTED)

    return _settle(core, queue_name, leases, settle)


def extend_lease(
    core: BrokerCore, queue_name: str, leases: list[int], lease_ms: int
) -> SettleResult | ErrorResult:
    lease_expires = core.now_ms + lease_ms

    def settle(queue: QueueState, msg: QueuedMessage) -> None:
        msg.lease_expires_ms = lease_expires
        core.timers.push(lease_expires, msg.stored.message_id, queue.name, LEASE, msg.lease_id)

    return _settle(core, queue_name, leases, settle)


def _settle(
    core: BrokerCore,
    queue_name: str,
    leases: list[int],
    action: Callable[[QueueState, QueuedMessage], None],
) -> SettleResult | ErrorResult:
    queue = core.queues.get(queue_name)
    if queue is None:
        return _no_queue(queue_name)
    failures: list[tuple[int, str]] = []
    settled = 0
    for i in range(0, len(leases), 2):
        found = queue.check_lease(leases[i], leases[i + 1])
        if isinstance(found, str):
            failures.append((leases[i], found))
        else:
            action(queue, found)
            settled += 1
    if core.pending_dead_letters:
        core.drain_dead_letters()
    return SettleResult(settled, tuple(failures))


def _no_queue(name: str) -> ErrorResult:
    return ErrorResult(QUEUE_NOT_FOUND, f"queue {name!r} does not exist")
