"""Queue checks: unexpected, duplicated, delivery_count_regressed, lost, order, and the
dead-letter accounting of every message's fate.

A stored copy is identified by (queue, message_id). The copies of one publish in one queue are
grouped by (queue, id, death_queue): a dead-letter queue fed by two queues legitimately holds
one copy from each. Dead-letter cycles (a copy returning to a queue it already left) are not
supported: their second pass would read as a duplicate.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from raftmq.chaos.check_common import Findings, Placed, lost_kind, order_inversions
from raftmq.chaos.check_model import Delivery, HistoryModel, Publish, Settle

__all__ = ["check_queues"]

REASON_EXPIRED = "expired"  # broker/queue_core.py REASON_EXPIRED, the x-death-reason of a TTL expiry
_GroupKey = tuple[str, str, str | None]  # (queue, id, death_queue)


@dataclass
class _Copy:
    id: str
    first: Delivery
    max_delivery_count: int


@dataclass
class _QueueIndex:
    model: HistoryModel
    copies: dict[tuple[str, int], _Copy] = field(default_factory=dict)
    groups: dict[_GroupKey, list[int]] = field(default_factory=dict)
    # (id, target queue) -> the first delivery showing it arrived there
    arrivals: dict[tuple[str, str], Delivery] = field(default_factory=dict)
    removed_by: dict[tuple[str, int], Settle] = field(default_factory=dict)
    acked: set[tuple[str, int]] = field(default_factory=set)
    rejected: set[tuple[str, int]] = field(default_factory=set)
    chains: dict[str, list[str]] = field(default_factory=dict)

    def chain(self, queue: str) -> list[str]:
        if queue not in self.chains:
            self.chains[queue] = self.model.dead_letter_chain(queue)
        return self.chains[queue]


def check_queues(model: HistoryModel, findings: Findings) -> None:
    index = _QueueIndex(model)
    _index_settles(index)
    _index_deliveries(index, findings)
    _check_lost(index, findings)
    _check_order(index, findings)
    _check_fates(index, findings)


def _index_settles(index: _QueueIndex) -> None:
    for ack in index.model.acks:
        index.acked.add((ack.queue, ack.message_id))
    rejects = [nack for nack in index.model.nacks if not nack.requeue]
    index.rejected.update((nack.queue, nack.message_id) for nack in rejects)
    # The first settle that removed each copy: a delivery after it is a duplicate.
    for settle in sorted([*index.model.acks, *rejects], key=lambda settle: settle.index):
        index.removed_by.setdefault((settle.queue, settle.message_id), settle)


def _index_deliveries(index: _QueueIndex, findings: Findings) -> None:
    divergent_reported: set[tuple[str, int, str]] = set()
    redelivery_reported: set[tuple[str, int]] = set()
    for delivery in index.model.deliveries:
        key = (delivery.queue, delivery.message_id)
        copy = index.copies.get(key)
        if copy is None:
            index.copies[key] = _Copy(delivery.id, delivery, delivery.delivery_count)
            _first_delivery(index, delivery, findings)
        elif copy.id != delivery.id:
            if (*key, delivery.id) not in divergent_reported:
                divergent_reported.add((*key, delivery.id))
                findings.add("divergent_read",
                             f"queue {delivery.queue} message_id {delivery.message_id} delivered as "
                             f"{copy.id!r} and as {delivery.id!r}",
                             {"queue": delivery.queue, "message_id": delivery.message_id,
                              "ids": [copy.id, delivery.id]}, delivery.time_ms, delivery.index)
            continue
        elif delivery.expired_on_arrival and delivery.delivery_count < copy.max_delivery_count:
            # An older delivery seen late: its lease ran out before the consumer got it, and the
            # message was redelivered (and maybe acked) meanwhile. At-least-once allows that
            # duplicate; the broker handed out nothing after the ack.
            findings.add("late_delivery",
                         f"{delivery.id!r} (queue {delivery.queue}, message_id {delivery.message_id}) "
                         f"delivery {delivery.delivery_count} reached its consumer after its lease "
                         f"ended, after delivery {copy.max_delivery_count}",
                         {"id": delivery.id, "queue": delivery.queue,
                          "message_id": delivery.message_id,
                          "delivery_count": delivery.delivery_count}, delivery.time_ms, delivery.index)
            continue
        else:
            index.model.stats["redeliveries"] += 1
            _check_redelivery(copy, delivery, findings)
        removal = index.removed_by.get(key)
        if removal is not None and removal.index < delivery.index and key not in redelivery_reported:
            redelivery_reported.add(key)
            how = "acked" if removal.requeue is None else "rejected (nack without requeue)"
            findings.add("duplicated",
                         f"{delivery.id!r} (queue {delivery.queue}, message_id {delivery.message_id}) "
                         f"delivered again after it was {how} ok at op {removal.index}",
                         {"reason": "redelivered_after_settle", "id": delivery.id, "queue": delivery.queue,
                          "message_id": delivery.message_id, "settled_index": removal.index},
                         delivery.time_ms, delivery.index)


def _check_redelivery(copy: _Copy, delivery: Delivery, findings: Findings) -> None:
    if delivery.delivery_count < copy.max_delivery_count:
        findings.add("delivery_count_regressed",
                     f"{delivery.id!r} (queue {delivery.queue}, message_id {delivery.message_id}) "
                     f"redelivered with delivery_count {delivery.delivery_count} after "
                     f"{copy.max_delivery_count}",
                     {"id": delivery.id, "queue": delivery.queue, "message_id": delivery.message_id,
                      "delivery_count": delivery.delivery_count, "previous_max": copy.max_delivery_count},
                     delivery.time_ms, delivery.index)
    copy.max_delivery_count = max(copy.max_delivery_count, delivery.delivery_count)


def _first_delivery(index: _QueueIndex, delivery: Delivery, findings: Findings) -> None:
    """A stored copy seen for the first time: is it one too many, and does it belong here?"""
    group = index.groups.setdefault((delivery.queue, delivery.id, delivery.death_queue), [])
    if group:
        kind = "duplicated" if index.model.idempotent else "duplicate_unidempotent"
        findings.add(kind,
                     f"{delivery.id!r} stored twice in queue {delivery.queue}: message_ids "
                     f"{group[0]} and {delivery.message_id}",
                     {"reason": "stored_twice", "id": delivery.id, "queue": delivery.queue,
                      "message_ids": [*group, delivery.message_id], "death_queue": delivery.death_queue},
                     delivery.time_ms, delivery.index)
    group.append(delivery.message_id)
    publish = index.model.publishes.get(delivery.id)
    problem = "it was never published" if publish is None else _placement_problem(index, publish, delivery)
    if problem is not None:
        findings.add("unexpected", f"{delivery.id!r} delivered from queue {delivery.queue}: {problem}",
                     {"id": delivery.id, "queue": delivery.queue, "message_id": delivery.message_id,
                      "death_queue": delivery.death_queue,
                      "targets": None if publish is None else list(publish.targets)},
                     delivery.time_ms, delivery.index)
    if publish is not None:
        _note_arrival(index, publish, delivery)


def _placement_problem(index: _QueueIndex, publish: Publish, delivery: Delivery) -> str | None:
    targets = publish.queue_targets
    if delivery.death_queue is None:
        return None if delivery.queue in targets else f"not one of its target queues {targets}"
    if not any(delivery.death_queue in index.chain(target) for target in targets):
        return (f"dead-lettered from {delivery.death_queue}, neither one of its target queues {targets} "
                f"nor their dead-letter queues")
    expected = index.model.dead_letter_queue(delivery.death_queue)
    if expected != delivery.queue:
        return f"dead-lettered from {delivery.death_queue}, whose dead-letter queue is {expected}"
    return None


def _note_arrival(index: _QueueIndex, publish: Publish, delivery: Delivery) -> None:
    if delivery.death_queue is None:
        credited = [delivery.queue]
    else:
        credited = [target for target in publish.queue_targets
                    if delivery.death_queue in index.chain(target)]
    for target in credited:
        index.arrivals.setdefault((publish.id, target), delivery)


def _check_lost(index: _QueueIndex, findings: Findings) -> None:
    model = index.model
    maybe_expired: list[tuple[float, int, str]] = []
    for publish in model.publishes.values():
        if not publish.stored_for_sure:
            continue
        for target in publish.queue_targets:
            if (publish.id, target) in index.arrivals:
                continue
            spec = model.queues.get(target)
            if spec is not None and spec.message_ttl_ms is not None and spec.dead_letter_queue is None:
                maybe_expired.append((publish.done_time_ms, publish.done_index, f"{target}/{publish.id}"))
                continue
            drained = model.drained("queue", target)
            findings.add(lost_kind(drained),
                         f"{publish.id!r} published ok but never delivered from queue {target}",
                         {"id": publish.id, "queue": target, "producer": publish.producer,
                          "ok_index": publish.done_index, "drain_complete": drained},
                         publish.done_time_ms, publish.done_index)
    findings.add_summary("expired_unobserved",
                         "messages never delivered from a queue with a TTL and no dead-letter queue "
                         "(they may have expired)", maybe_expired)


def _check_order(index: _QueueIndex, findings: Findings) -> None:
    model = index.model
    first_message_id: dict[tuple[str, str], int] = {}
    for (queue, message_id_of, death_queue), message_ids in index.groups.items():
        if death_queue is None:
            first_message_id[(queue, message_id_of)] = min(message_ids)
    per_place: dict[tuple[str, str], list[Placed]] = defaultdict(list)
    for publish in model.publishes.values():
        ok_index = publish.done_index if publish.outcome == "ok" else None
        for target in publish.queue_targets:
            message_id = first_message_id.get((target, publish.id))
            if message_id is not None:
                per_place[(publish.producer, target)].append(
                    Placed(publish.id, publish.invoke_index, ok_index, message_id))
    for (producer, queue), placed in sorted(per_place.items()):
        for earlier, later in order_inversions(placed):
            op = model.publishes[later.id]
            findings.add("order",
                         f"queue {queue}, producer {producer}: {earlier.id!r} (ok before {later.id!r} was "
                         f"sent) has message_id {earlier.position} > {later.position}",
                         {"queue": queue, "producer": producer, "earlier": earlier.id, "later": later.id,
                          "earlier_message_id": earlier.position, "later_message_id": later.position},
                         op.invoke_time_ms, op.invoke_index)


def _check_fates(index: _QueueIndex, findings: Findings) -> None:
    model = index.model
    undrained: list[tuple[float, int, str]] = []
    for (publish_id, target), delivery in index.arrivals.items():
        fate, stuck_queue = _fate(index, findings, target, publish_id, None, [target])
        model.stats[f"fate_{fate}"] += 1
        if fate != "unsettled":
            continue
        complete = model.drained("queue", stuck_queue)
        if complete is None:
            complete = model.drained("queue", target)
        if not complete:
            undrained.append((delivery.time_ms, delivery.index, f"{stuck_queue}/{publish_id}"))
            continue
        findings.add("unsettled",
                     f"{publish_id!r} (target {target}) was delivered but never acked nor dead-lettered; "
                     f"last seen in {stuck_queue}, whose drain completed",
                     {"id": publish_id, "queue": target, "stuck_queue": stuck_queue},
                     delivery.time_ms, delivery.index)
    findings.add_summary("unsettled_undrained",
                         "delivered messages without a fate in queues whose drain did not complete",
                         undrained)


def _fate(index: _QueueIndex, findings: Findings, queue: str, publish_id: str, from_queue: str | None,
          visited: list[str]) -> tuple[str, str]:
    """(fate, the queue the message was last seen in) of the copies of one message in one queue:
    acked, dead_lettered, expired, maybe_acked (an ack of unknown outcome), dropped or unsettled."""
    message_ids = index.groups.get((queue, publish_id, from_queue), [])
    acked = [message_id for message_id in message_ids if (queue, message_id) in index.acked]
    dead_letter_queue = index.model.dead_letter_queue(queue)
    moved_ids = None
    if dead_letter_queue is not None and dead_letter_queue not in visited:
        moved_ids = index.groups.get((dead_letter_queue, publish_id, queue))
    if dead_letter_queue is not None and moved_ids:
        inner, stuck_queue = _fate(index, findings, dead_letter_queue, publish_id, queue,
                                   [*visited, dead_letter_queue])
        dead_letter_copy = index.copies[(dead_letter_queue, moved_ids[0])].first
        if acked:
            _two_fates(findings, queue, publish_id, acked[0], dead_letter_copy)
            return "acked", queue
        if inner == "unsettled":
            return inner, stuck_queue
        expired = dead_letter_copy.death_reason == REASON_EXPIRED
        return ("expired" if expired else "dead_lettered"), stuck_queue
    if acked:
        return "acked", queue
    if any((queue, message_id) in index.model.maybe_acked for message_id in message_ids):
        return "maybe_acked", queue
    if _dropped_by_broker(index, queue, message_ids):
        return "dropped", queue
    return "unsettled", queue


def _two_fates(findings: Findings, queue: str, publish_id: str, acked_message_id: int,
               dead_letter_copy: Delivery) -> None:
    findings.add("dead_letter_accounting",
                 f"{publish_id!r} was acked in queue {queue} (message_id {acked_message_id}) and also "
                 f"dead-lettered from it to {dead_letter_copy.queue} "
                 f"(reason {dead_letter_copy.death_reason})",
                 {"reason": "two_fates", "id": publish_id, "queue": queue,
                  "acked_message_id": acked_message_id,
                  "dead_letter_queue": dead_letter_copy.queue,
                  "dead_letter_message_id": dead_letter_copy.message_id,
                  "death_reason": dead_letter_copy.death_reason},
                 dead_letter_copy.time_ms, dead_letter_copy.index)


def _dropped_by_broker(index: _QueueIndex, queue: str, message_ids: list[int]) -> bool:
    """A queue without a dead-letter queue drops what it would dead-letter: a rejected message,
    one past its delivery limit, one whose TTL ran out."""
    spec = index.model.queues.get(queue)
    if spec is None or spec.dead_letter_queue is not None:
        return False
    if spec.message_ttl_ms is not None:
        return True
    maybe_rejected = index.model.maybe_rejected
    if any((queue, message_id) in index.rejected or (queue, message_id) in maybe_rejected
           for message_id in message_ids):
        return True
    limit = spec.delivery_limit
    return limit is not None and any(index.copies[(queue, message_id)].max_delivery_count >= limit
                                     for message_id in message_ids)
