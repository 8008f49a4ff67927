"""Random clean histories: a small model broker driven by random producers, consumers and
stream readers, recording what a correct broker would let them observe (pipelined publishes
completing out of order, fail and unknown outcomes, redeliveries after lease expiry, nacks with
requeue, rejects, delivery limits and TTL expiry into a dead-letter queue, fan-out, reads of a
partitioned stream by several readers), then a drain that settles everything."""

from __future__ import annotations

import functools
import random
import time
from dataclasses import dataclass

from raftmq.chaos.checker import CheckResult, check
from raftmq.chaos.history import Op
from tests.unit.chaos_histories import HistoryBuilder

__all__ = ["NODES", "QUEUES", "STREAMS", "big_checked", "big_history", "simulate"]

QUEUES = {"q0": {"dead_letter_queue": "dlq", "delivery_limit": 3}, "q1": {},
          "q2": {"dead_letter_queue": "dlq", "message_ttl_ms": 5000}, "dlq": {}}
STREAMS = {"s0": 3}
NODES = ("n1", "n2", "n3")
_TARGETS = (("q0",), ("q1",), ("q0", "q1"), ("q2",), ("s0",), ("s0",))
_KEYS = ("k0", "k1", "k2", "k3", None)
_FAULTS = ("kill-leader", "pause-leader", "partition-halves")


@dataclass
class _Stored:
    id: str
    message_id: int
    delivery_count: int = 0
    death_reason: str | None = None
    death_queue: str | None = None


class _Simulation:
    def __init__(self, rng: random.Random, producers: int, consumers: int, readers: int) -> None:
        self.rng = rng
        self.history = HistoryBuilder(QUEUES, STREAMS, nodes=NODES)
        self.producers = [f"producer-{n}" for n in range(producers)]
        self.consumers = [f"consumer-{n}" for n in range(consumers)]
        self.readers = [f"reader-{n}" for n in range(readers)]
        self.next_message_id = 1
        self.ready: dict[str, list[_Stored]] = {queue: [] for queue in QUEUES}
        self.leased: dict[tuple[str, int], tuple[_Stored, str]] = {}
        self.logs: dict[int, list[str]] = {partition: [] for partition in range(STREAMS["s0"])}
        self.cursors: dict[tuple[str, int], int] = {}
        self.open: dict[str, list[str]] = {producer: [] for producer in self.producers}
        self.sent = 0
        self.faults: set[str] = set()

    # ------------------------------------------------------------------ publishing
    def invoke(self) -> None:
        producer = self.rng.choice(self.producers)
        if len(self.open[producer]) >= 3:
            return self.complete(producer)
        msg_id = f"m{self.sent}"
        self.sent += 1
        targets = self.rng.choice(_TARGETS)
        key = self.rng.choice(_KEYS) if targets == ("s0",) else None
        self.history.publish_invoke(msg_id, producer=producer, targets=targets, key=key)
        self.open[producer].append(msg_id)

    def complete(self, producer: str | None = None, outcome: str | None = None) -> None:
        producer = producer or self.rng.choice(self.producers)
        if not self.open[producer]:
            return
        # Pipelined: any open publish of the producer may finish first.
        msg_id = self.open[producer].pop(self.rng.randrange(len(self.open[producer])))
        roll = self.rng.random()
        outcome = outcome or ("ok" if roll < 0.85 else "fail" if roll < 0.9 else "unknown")
        stored = outcome == "ok" or (outcome == "unknown" and self.rng.random() < 0.5)
        invoke = self.history.invokes[msg_id]
        extra = self.store(msg_id, invoke.value["targets"], invoke.value["key"]) if stored else {}
        self.history.publish_done(msg_id, outcome, **(extra if outcome == "ok" else {}))

    def store(self, msg_id: str, targets: list[str], key: str | None) -> dict[str, int]:
        if targets == ["s0"]:
            count = STREAMS["s0"]
            partition = self.rng.randrange(count) if key is None else sum(map(ord, key)) % count
            self.logs[partition].append(msg_id)
            return {"partition": partition, "offset": len(self.logs[partition]) - 1}
        for queue in targets:
            self.ready[queue].append(_Stored(msg_id, self.take_message_id()))
        return {}

    def take_message_id(self) -> int:
        self.next_message_id += 1
        return self.next_message_id

    # ------------------------------------------------------------------ queues
    def deliver(self, queue: str | None = None) -> None:
        queue = queue or self.rng.choice([name for name in QUEUES if self.ready[name]] or ["q0"])
        if not self.ready[queue]:
            return
        stored = self.ready[queue].pop(0)
        stored.delivery_count += 1
        consumer = self.rng.choice(self.consumers)
        self.leased[(queue, stored.message_id)] = (stored, consumer)
        self.history.deliver(queue, stored.id, stored.message_id, stored.delivery_count,
                             death_reason=stored.death_reason, death_queue=stored.death_queue,
                             consumer=consumer)

    def settle(self, action: str) -> None:
        if not self.leased:
            return
        queue, message_id = key = self.rng.choice(list(self.leased))
        stored, consumer = self.leased[key]
        if action == "expire":  # the lease runs out at the broker: no operation in the history
            del self.leased[key]
            return self.give_back(queue, stored)
        if action == "ack":
            roll = self.rng.random()
            outcome = "ok" if roll < 0.85 else "fail" if roll < 0.9 else "unknown"
            self.history.ack(queue, stored.id, message_id, outcome, consumer=consumer)
            if outcome == "ok" or (outcome == "unknown" and self.rng.random() < 0.5):
                del self.leased[key]
            return
        requeue = action == "requeue"
        self.history.nack(queue, stored.id, message_id, requeue=requeue, consumer=consumer)
        del self.leased[key]
        if requeue:
            self.give_back(queue, stored)
        else:
            self.dead_letter(queue, stored, "rejected")

    def give_back(self, queue: str, stored: _Stored) -> None:
        limit = QUEUES[queue].get("delivery_limit")
        if isinstance(limit, int) and stored.delivery_count >= limit:
            self.dead_letter(queue, stored, "delivery_limit")
        else:
            self.ready[queue].append(stored)

    def dead_letter(self, queue: str, stored: _Stored, reason: str) -> None:
        dead_letter_queue = QUEUES[queue].get("dead_letter_queue")
        if isinstance(dead_letter_queue, str):  # else the broker drops it
            self.ready[dead_letter_queue].append(_Stored(stored.id, self.take_message_id(), 0, reason, queue))

    def expire_ttl(self) -> None:
        if self.ready["q2"]:
            self.dead_letter("q2", self.ready["q2"].pop(0), "expired")

    # ------------------------------------------------------------------ streams and faults
    def read(self, reader: str | None = None, partition: int | None = None) -> bool:
        reader = reader or self.rng.choice(self.readers)
        partition = self.rng.randrange(STREAMS["s0"]) if partition is None else partition
        offset = self.cursors.get((reader, partition), 0)
        if offset >= len(self.logs[partition]):
            return False
        msg_id = self.logs[partition][offset]
        key = self.history.invokes[msg_id].value["key"]
        self.history.read("s0", partition, offset, msg_id, key=key, consumer=reader, group=None)
        self.cursors[(reader, partition)] = offset + 1
        return True

    def toggle_fault(self) -> None:
        fault = self.rng.choice(_FAULTS)
        action = "stop" if fault in self.faults else "start"
        self.faults ^= {fault}
        self.history.nemesis(action, fault, [self.rng.choice(NODES)])

    # ------------------------------------------------------------------ run
    def step(self) -> None:
        roll = self.rng.random()
        actions = ((0.3, self.invoke), (0.5, self.complete), (0.68, self.deliver),
                   (0.8, lambda: self.settle("ack")), (0.84, lambda: self.settle("requeue")),
                   (0.87, lambda: self.settle("reject")), (0.9, lambda: self.settle("expire")),
                   (0.91, self.expire_ttl), (0.995, self.read), (1.0, self.toggle_fault))
        next(action for limit, action in actions if roll < limit)()

    def drain(self) -> None:
        for producer in self.producers:
            while self.open[producer]:
                self.complete(producer, "ok")
        while self.leased or any(self.ready.values()):
            for key in list(self.leased):
                stored, _ = self.leased.pop(key)
                self.give_back(key[0], stored)
            for queue in QUEUES:
                while self.ready[queue]:
                    message_id = self.ready[queue][0].message_id
                    self.deliver(queue)
                    stored, consumer = self.leased.pop((queue, message_id))
                    self.history.ack(queue, stored.id, message_id, consumer=consumer)
        for reader in self.readers:
            for partition in range(STREAMS["s0"]):
                while self.read(reader, partition):
                    pass
        for fault in sorted(self.faults):
            self.history.nemesis("stop", fault)
        for queue in QUEUES:
            self.history.drain(queue=queue)
        self.history.drain(stream="s0")
        for node in NODES:
            self.history.digest(node, "digest-1")


def simulate(seed: int, steps: int, *, producers: int = 3, consumers: int = 2, readers: int = 2) -> list[Op]:
    simulation = _Simulation(random.Random(seed), producers, consumers, readers)
    for _ in range(steps):
        simulation.step()
    simulation.drain()
    return simulation.history.ops


@functools.cache
def big_history() -> tuple[Op, ...]:
    """About 200,000 operations, built once per test session (the checker and report tests share it)."""
    return tuple(simulate(7, 150_000, producers=8, consumers=4, readers=2))


@functools.cache
def big_checked() -> tuple[tuple[Op, ...], CheckResult, float]:
    """The big history, its check result and the seconds `check` took (measured once: the
    checker's budget test and the report's test share the cost)."""
    ops = big_history()
    started = time.perf_counter()
    result = check(ops)
    return ops, result, time.perf_counter() - started
