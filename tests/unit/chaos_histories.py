"""Histories for the chaos checker tests: a compact builder for crafted histories and helpers
to rewrite a history (re-index after removing or inserting operations)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from raftmq.chaos.history import Op

__all__ = ["HistoryBuilder", "reindex"]


def reindex(ops: Iterable[Op]) -> list[Op]:
    """Indices 0,1,2... again, and times never going back, after ops were removed or inserted."""
    result: list[Op] = []
    last_ms = 0.0
    for number, op in enumerate(ops):
        last_ms = max(last_ms, op.time_ms)
        result.append(replace(op, index=number, time_ms=last_ms))
    return result


class HistoryBuilder:
    """Appends operations with times 10 ms apart. Defaults make short tests: a publish goes to
    queue "q" from "producer-0", deliveries go to "consumer-0"."""

    def __init__(self, queues: Mapping[str, Mapping[str, Any]] | None = None,
                 streams: Mapping[str, int] | None = None, *, idempotent: bool = True,
                 nodes: Sequence[str] | None = None) -> None:
        self.ops: list[Op] = []
        self.time_ms = 0.0
        self.seqs: dict[str, int] = {}
        self.invokes: dict[str, Op] = {}
        declared = queues if queues is not None else {"q": {}}
        workload: dict[str, Any] = {
            "queues": {name: {"dead_letter_queue": None, "delivery_limit": None, "message_ttl_ms": None,
                              **spec} for name, spec in declared.items()},
            "streams": {name: {"partitions": count} for name, count in (streams or {}).items()},
            "exchanges": {}, "idempotent": idempotent}
        if nodes is not None:
            workload["nodes"] = list(nodes)
        self.op("workload-0", "event", "workload", workload)

    def op(self, process: str, op_type: str, f: str, value: Mapping[str, Any]) -> Op:
        self.time_ms += 10.0
        op = Op(len(self.ops), self.time_ms, process, op_type, f, dict(value))
        self.ops.append(op)
        return op

    def wait(self, ms: float) -> None:
        self.time_ms += ms

    # ------------------------------------------------------------------ publishing
    def publish_invoke(self, msg_id: str, *, producer: str = "producer-0", targets: Sequence[str] = ("q",),
                       key: str | None = None) -> dict[str, Any]:
        seq = self.seqs.get(producer, 0)
        self.seqs[producer] = seq + 1
        value = {"id": msg_id, "producer": producer, "seq": seq, "exchange": "", "routing_key": targets[0],
                 "key": key, "targets": list(targets)}
        self.invokes[msg_id] = self.op(producer, "invoke", "publish", value)
        return value

    def publish_done(self, msg_id: str, outcome: str = "ok", **extra: Any) -> None:
        invoke = self.invokes[msg_id]
        value = dict(invoke.value)
        if outcome == "ok" and "partition" not in extra:
            extra = {"status": "accepted", "duplicate": False, **extra}
        if outcome in ("fail", "unknown"):
            extra = {"error": "timeout", **extra}
        value.update(extra)
        self.op(invoke.process, outcome, "publish", value)

    def publish(self, msg_id: str, outcome: str = "ok", *, producer: str = "producer-0",
                targets: Sequence[str] = ("q",), key: str | None = None, **extra: Any) -> None:
        self.publish_invoke(msg_id, producer=producer, targets=targets, key=key)
        self.publish_done(msg_id, outcome, **extra)

    # ------------------------------------------------------------------ queues
    def deliver(self, queue: str, msg_id: str, message_id: int, delivery_count: int = 1, *,
                death_reason: str | None = None, death_queue: str | None = None,
                consumer: str = "consumer-0", late_by_ms: int | None = None) -> None:
        """`late_by_ms`: the consumer saw it that long after its lease had ended."""
        value: dict[str, Any] = {
            "queue": queue, "id": msg_id, "message_id": message_id, "delivery_count": delivery_count,
            "consumer": consumer, "death_reason": death_reason, "death_queue": death_queue}
        if late_by_ms is not None:
            value |= {"lease_expires_ms": 1_000_000, "observed_wall_ms": 1_000_000 + late_by_ms}
        self.op(consumer, "event", "deliver", value)

    def ack(self, queue: str, msg_id: str, message_id: int, outcome: str = "ok", *,
            consumer: str = "consumer-0") -> None:
        value = {"queue": queue, "id": msg_id, "message_id": message_id}
        self.op(consumer, "invoke", "ack", value)
        if outcome != "open":
            self.op(consumer, outcome, "ack", value)

    def nack(self, queue: str, msg_id: str, message_id: int, *, requeue: bool, outcome: str = "ok",
             consumer: str = "consumer-0") -> None:
        value = {"queue": queue, "id": msg_id, "message_id": message_id, "requeue": requeue}
        self.op(consumer, "invoke", "nack", value)
        if outcome != "open":
            self.op(consumer, outcome, "nack", value)

    def consume(self, queue: str, msg_id: str, message_id: int, **deliver: Any) -> None:
        """Delivered once and acked ok."""
        self.deliver(queue, msg_id, message_id, **deliver)
        self.ack(queue, msg_id, message_id)

    # ------------------------------------------------------------------ streams
    def read(self, stream: str, partition: int, offset: int, msg_id: str, *, key: str | None = None,
             consumer: str = "reader-0", group: str | None = None) -> None:
        self.op(consumer, "event", "read", {"stream": stream, "partition": partition, "offset": offset,
                                            "id": msg_id, "key": key, "consumer": consumer, "group": group})

    def commit(self, stream: str, group: str, partition: int, offset: int,
               consumer: str = "reader-0") -> None:
        value = {"stream": stream, "group": group, "partition": partition, "offset": offset}
        self.op(consumer, "invoke", "commit", value)
        self.op(consumer, "ok", "commit", value)

    # ------------------------------------------------------------------ run
    def nemesis(self, action: str, fault: str, nodes: Sequence[str] = ("n1",)) -> None:
        self.op("nemesis", "event", "nemesis", {"action": action, "fault": fault, "nodes": list(nodes),
                                                 "detail": {}})

    def digest(self, node: str, digest: str) -> None:
        self.op("checker", "event", "final", {"kind": "replica_digest", "node": node, "digest": digest})

    def drain(self, *, queue: str | None = None, stream: str | None = None, complete: bool = True) -> None:
        target = {"queue": queue} if queue is not None else {"stream": stream}
        self.op("drain-0", "event", "final", {"kind": "drain", **target, "complete": complete})
