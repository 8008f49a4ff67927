"""A deliberately naive reference model of the broker's queue semantics (no tests in here).

Used by test_state_stateful.py. It follows the contract in /work/contracts/broker_state.md with
plain lists and full scans: no heaps, no caches, no refcounts, no lazy deletion. Supports the
default exchange and one fanout exchange "fan" (bindings with key ""), queues with every
argument, dead-lettering, producers. Results are plain tuples, compared with the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

WINDOW = 64
IDLE_MS = 24 * 3600 * 1000
CONSUMER_WINDOW_MS = 60_000
DEATH_CAP = 100
COUNTERS = ("published", "delivered", "redelivered", "acked", "nacked", "expired",
            "dead_lettered", "dropped")


@dataclass
class Msg:
    mid: int
    body: bytes
    headers: dict[str, Any]
    rk: str
    exchange: str
    published: int
    where: str = "ready"  # "ready" | "delayed" | "leased"
    deliveries: int = 0
    lease_id: int = 0
    lease_until: int = 0
    expires: int | None = None
    ready_at: int = 0


@dataclass
class Queue:
    name: str
    args: dict[str, Any]
    msgs: list[Msg] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    consumers: dict[str, int] = field(default_factory=dict)

    def in_state(self, where: str) -> list[Msg]:
        return [m for m in self.msgs if m.where == where]

    def queued(self) -> list[Msg]:
        return [m for m in self.msgs if m.where != "leased"]


@dataclass
class Producer:
    results: dict[int, tuple[Any, ...]]
    max_seq: int
    last_seen: int


class Model:
    def __init__(self, window: int = WINDOW) -> None:
        self.window = window  # producer dedupe window (the test shrinks the real one too)
        self.now = 0
        self.next_mid = 1
        self.next_lease = 1
        self.queues: dict[str, Queue] = {}
        self.fan: list[str] = []  # queues bound to "fan", in binding order
        self.producers: dict[str, Producer] = {}
        self.pending: list[tuple[Queue, Msg, str]] = []
        self.dropped_total = 0

    # ---------------------------------------------------------------- time

    def begin(self, now: int) -> None:
        self.now = max(self.now, now)
        for name in [n for n, p in self.producers.items() if self.now - p.last_seen > IDLE_MS]:
            del self.producers[name]
        while True:
            due = [e for e in self.events() if e[0] <= self.now]
            if not due:
                return
            _, mid, qname, kind, _lease = min(due)
            queue = self.queues[qname]
            msg = next(m for m in queue.msgs if m.mid == mid)
            if kind == 0:
                msg.where = "ready"
            elif kind == 1:
                self.give_back(queue, msg, 0)
            else:
                self.expire(queue, msg)
            self.drain()

    def events(self) -> list[tuple[int, int, str, int, int]]:
        found = []
        for queue in self.queues.values():
            for m in queue.msgs:
                if m.where == "delayed":
                    found.append((m.ready_at, m.mid, queue.name, 0, 0))
                if m.where == "leased":
                    found.append((m.lease_until, m.mid, queue.name, 1, m.lease_id))
                elif m.expires is not None:
                    found.append((m.expires, m.mid, queue.name, 2, 0))
        return found

    # ---------------------------------------------------------------- moving messages

    def remove(self, queue: Queue, msg: Msg) -> None:
        queue.msgs.remove(msg)

    def expire(self, queue: Queue, msg: Msg) -> None:
        self.remove(queue, msg)
        queue.stats["expired"] += 1
        self.kill(queue, msg, "expired")

    def kill(self, queue: Queue, msg: Msg, reason: str) -> None:
        queue.stats["dead_lettered"] += 1
        self.pending.append((queue, msg, reason))

    def give_back(self, queue: Queue, msg: Msg, delay: int) -> None:
        limit = queue.args["delivery_limit"]
        if limit is not None and msg.deliveries >= limit:
            self.remove(queue, msg)
            self.kill(queue, msg, "delivery_limit")
        elif msg.expires is not None and msg.expires <= self.now:
            self.expire(queue, msg)
        elif delay > 0:
            msg.where, msg.ready_at = "delayed", self.now + delay
        else:
            msg.where = "ready"

    def drain(self) -> None:
        while self.pending:
            queue, msg, reason = self.pending.pop(0)
            if not self.dead_letter(queue, msg, reason):
                queue.stats["dropped"] += 1
                self.dropped_total += 1

    def dead_letter(self, queue: Queue, msg: Msg, reason: str) -> bool:
        dlx = queue.args["dead_letter_exchange"]
        previous = msg.headers.get("x-death-count")
        count = (previous if type(previous) is int and previous >= 0 else 0) + 1
        if dlx is None or count > DEATH_CAP:
            return False
        rk = queue.args["dead_letter_routing_key"]
        rk = msg.rk if rk is None else rk
        targets = self.route(dlx, rk)
        if not targets:
            return False
        headers = {**msg.headers, "x-death-reason": reason, "x-death-queue": queue.name,
                   "x-death-count": count, "x-death-time-ms": self.now,
                   "x-delivery-count": msg.deliveries, "x-original-exchange": msg.exchange,
                   "x-original-routing-key": msg.rk}
        mid = self.next_mid
        self.next_mid += 1
        stored = [self.put(self.queues[t], Msg(mid, msg.body, headers, rk, dlx, self.now), None,
                           None) for t in targets]
        return any(stored)

    def route(self, exchange: str, rk: str) -> list[str]:
        if exchange == "":
            return [rk] if rk in self.queues else []
        return list(self.fan) if exchange == "fan" else []

    def put(self, queue: Queue, msg: Msg, ttl: int | None, delay: int | None) -> bool:
        args = queue.args
        size = len(msg.body)

        def full() -> bool:
            queued = queue.queued()
            too_many = args["max_length"] is not None and len(queued) + 1 > args["max_length"]
            limit = args["max_length_bytes"]
            too_big = limit is not None and sum(len(m.body) for m in queued) + size > limit
            return too_many or too_big

        if full():
            if args["overflow"] != "drop-head":
                return False
            delayed = queue.in_state("delayed")
            if args["max_length"] is not None and len(delayed) + 1 > args["max_length"]:
                return False
            limit = args["max_length_bytes"]
            if limit is not None and sum(len(m.body) for m in delayed) + size > limit:
                return False
            while full():
                head = min(queue.in_state("ready"), key=lambda m: m.mid)
                self.remove(queue, head)
                self.kill(queue, head, "overflow")
        ttls = [t for t in (ttl, args["message_ttl_ms"]) if t is not None]
        copy = Msg(msg.mid, msg.body, msg.headers, msg.rk, msg.exchange, msg.published)
        copy.expires = msg.published + min(ttls) if ttls else None
        if delay:
            copy.where, copy.ready_at = "delayed", msg.published + delay
        queue.msgs.append(copy)
        queue.stats["published"] += 1
        return True

    # ---------------------------------------------------------------- commands

    def declare(self, now: int, name: str, args: dict[str, Any]) -> tuple[Any, ...]:
        self.begin(now)
        if name in self.queues:
            return ("ok", False) if self.queues[name].args == args else ("error", "precondition_failed")
        self.queues[name] = Queue(name, args)
        return ("ok", True)

    def delete(self, now: int, name: str, if_empty: bool) -> tuple[Any, ...]:
        self.begin(now)
        if name not in self.queues:
            return ("error", "queue_not_found")
        if if_empty and self.queues[name].msgs:
            return ("error", "in_use")
        del self.queues[name]
        if name in self.fan:
            self.fan.remove(name)
        return ("ok", False)

    def purge(self, now: int, name: str) -> tuple[Any, ...]:
        self.begin(now)
        if name not in self.queues:
            return ("error", "queue_not_found")
        queue = self.queues[name]
        gone = queue.queued()
        queue.msgs = queue.in_state("leased")
        return ("purged", len(gone))

    def bind(self, now: int, name: str, bound: bool) -> tuple[Any, ...]:
        self.begin(now)
        if name not in self.queues:
            return ("error", "queue_not_found")
        if bound and name not in self.fan:
            self.fan.append(name)
            return ("ok", True)
        if not bound and name in self.fan:
            self.fan.remove(name)
        return ("ok", False)

    def publish(self, now: int, exchange: str, messages: list[tuple[str, bytes, dict[str, Any],
                int | None, int | None]], producer: str | None, seq: int | None,
                max_total: int) -> tuple[Any, ...]:
        self.begin(now)
        record = self.producers.get(producer) if producer is not None else None
        if record is not None and seq is not None:
            if seq in record.results:
                record.last_seen = self.now
                return (*record.results[seq][:3], True, record.results[seq][4])
            if seq <= record.max_seq - self.window:
                return ("error", "sequence_too_old")
        if max_total and self.body_bytes() + sum(len(m[1]) for m in messages) > max_total:
            return ("error", "resource_exhausted")
        first = self.next_mid
        self.next_mid += len(messages)
        accepted, unroutable, rejected = 0, [], []
        for index, (rk, body, headers, ttl, delay) in enumerate(messages):
            targets = self.route(exchange, rk)
            if not targets:
                unroutable.append(index)
                continue
            msg = Msg(first + index, body, headers, rk, exchange, self.now)
            stored = [self.put(self.queues[t], msg, ttl, delay) for t in targets]
            accepted += any(stored)
            if not all(stored):
                rejected.append(index)
        self.drain()
        result = (accepted, tuple(unroutable), tuple(rejected), False, first)
        if producer is not None and seq is not None:
            if record is None:
                record = self.producers[producer] = Producer({}, seq, self.now)
            record.results[seq] = result
            record.max_seq = max(record.max_seq, seq)
            record.last_seen = self.now
            oldest_kept = record.max_seq - self.window
            record.results = {s: r for s, r in record.results.items() if s > oldest_kept}
        return result

    def claim(self, now: int, name: str, consumer: str, count: int, lease: int) -> tuple[Any, ...]:
        self.begin(now)
        if name not in self.queues:
            return ("error", "queue_not_found")
        queue = self.queues[name]
        picked = sorted(queue.in_state("ready"), key=lambda m: m.mid)[:count]
        out = []
        for m in picked:
            m.where, m.deliveries = "leased", m.deliveries + 1
            m.lease_id, m.lease_until = self.next_lease, self.now + lease
            self.next_lease += 1
            out.append((m.mid, m.lease_id, m.body, m.headers, m.rk, m.exchange, m.deliveries,
                        m.published, m.lease_until))
        queue.stats["delivered"] += len(out)
        queue.stats["redelivered"] += sum(1 for m in picked if m.deliveries > 1)
        queue.consumers[consumer] = self.now
        return ("claimed", tuple(out))

    def settle(self, now: int, name: str, what: str, pairs: list[tuple[int, int]],
               requeue: bool = True, number: int = 0) -> tuple[Any, ...]:
        """what: "ack" | "nack" (number = delay) | "extend" (number = lease_ms)."""
        self.begin(now)
        if name not in self.queues:
            return ("error", "queue_not_found")
        queue = self.queues[name]
        done, failures = 0, []
        for mid, lease in pairs:
            found = [m for m in queue.msgs if m.mid == mid]
            if not found:
                failures.append((mid, "unknown_message"))
                continue
            msg = found[0]
            if msg.where != "leased" or msg.lease_id != lease:
                failures.append((mid, "lease_expired"))
                continue
            done += 1
            if what == "ack":
                self.remove(queue, msg)
                queue.stats["acked"] += 1
            elif what == "extend":
                msg.lease_until = self.now + number
            else:
                queue.stats["nacked"] += 1
                if requeue:
                    self.give_back(queue, msg, number)
                else:
                    self.remove(queue, msg)
                    self.kill(queue, msg, "rejected")
        self.drain()
        return ("settled", done, tuple(failures))

    def tick(self, now: int) -> tuple[Any, ...]:
        self.begin(now)
        return ("ok", False)

    # ---------------------------------------------------------------- observations

    def body_bytes(self) -> int:
        bodies = {m.mid: len(m.body) for q in self.queues.values() for m in q.msgs}
        return sum(bodies.values())

    def message_count(self) -> int:
        return sum(len(q.msgs) for q in self.queues.values())

    def queue_view(self, name: str) -> tuple[Any, ...]:
        q = self.queues[name]
        consumers = sum(1 for seen in q.consumers.values() if seen > self.now - CONSUMER_WINDOW_MS)
        return (
            name,
            len(q.in_state("ready")),
            len(q.in_state("delayed")),
            len(q.in_state("leased")),
            sum(len(m.body) for m in q.msgs),
            consumers,
            *(q.stats[c] for c in COUNTERS),
        )
