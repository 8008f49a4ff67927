"""The history indexed once for every check: publishes by id, deliveries, reads, settled
acks/nacks, the declared topology, drains and replica digests. One pass, dicts keyed by id."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from raftmq.chaos.history import HistoryError, Op, pairing_key

__all__ = ["Delivery", "HistoryModel", "Publish", "QueueSpec", "Read", "Settle", "build_model"]

DEFINITE_NOT_STORED = frozenset({"unroutable", "rejected"})


@dataclass
class Publish:
    id: str
    producer: str
    key: str | None
    targets: tuple[str, ...]
    invoke_index: int
    invoke_time_ms: float
    # "ok" | "fail" | "unknown" | "open" (never completed: as good as unknown)
    outcome: str = "open"
    done_index: int = -1
    done_time_ms: float = 0.0
    status: str | None = None
    partition: int | None = None
    offset: int | None = None
    # The targets split by the declared topology (set once the whole history is read).
    queue_targets: tuple[str, ...] = ()
    stream_targets: tuple[str, ...] = ()

    @property
    def stored_for_sure(self) -> bool:
        return self.outcome == "ok" and self.status not in DEFINITE_NOT_STORED

    @property
    def not_stored_for_sure(self) -> bool:
        return self.outcome == "fail" or (self.outcome == "ok" and self.status in DEFINITE_NOT_STORED)

    @property
    def outcome_unknown(self) -> bool:
        return self.outcome in ("unknown", "open")


@dataclass(frozen=True, slots=True)
class Delivery:
    index: int
    time_ms: float
    queue: str
    id: str
    message_id: int
    delivery_count: int
    death_reason: str | None
    death_queue: str | None
    # The consumer saw it only after its lease had run out (both wall-clock readings of one
    # host): the broker may already have handed the message to someone else.
    expired_on_arrival: bool = False


@dataclass(frozen=True, slots=True)
class Read:
    index: int
    time_ms: float
    stream: str
    partition: int
    offset: int
    id: str


@dataclass(frozen=True, slots=True)
class Settle:
    """An ack or nack that completed ok."""

    index: int
    time_ms: float
    queue: str
    id: str
    message_id: int
    requeue: bool | None  # None for an ack


@dataclass(frozen=True)
class QueueSpec:
    dead_letter_queue: str | None = None
    delivery_limit: int | None = None
    message_ttl_ms: int | None = None


@dataclass
class HistoryModel:
    publishes: dict[str, Publish] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    acks: list[Settle] = field(default_factory=list)
    nacks: list[Settle] = field(default_factory=list)
    # (queue, message_id) of acks / nacks without requeue whose outcome is unknown (or that
    # never completed): they may have settled the message without the history showing it.
    maybe_acked: set[tuple[str, int]] = field(default_factory=set)
    maybe_rejected: set[tuple[str, int]] = field(default_factory=set)
    open_settles: dict[tuple[str, str, object], deque[Op]] = field(default_factory=dict)
    queues: dict[str, QueueSpec] = field(default_factory=dict)
    streams: dict[str, int] = field(default_factory=dict)
    idempotent: bool = True
    nodes: set[str] = field(default_factory=set)
    # ("queue" | "stream", name) -> the last drain's `complete`
    drains: dict[tuple[str, str], bool] = field(default_factory=dict)
    # node -> (digest, index, time_ms) of its last replica digest
    digests: dict[str, tuple[str, int, float]] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter)
    start_ms: float = 0.0
    end_ms: float = 0.0

    def dead_letter_queue(self, queue: str) -> str | None:
        spec = self.queues.get(queue)
        return None if spec is None else spec.dead_letter_queue

    def dead_letter_chain(self, queue: str) -> list[str]:
        """The queue, its dead-letter queue, that one's, ... (cycles cut)."""
        chain = [queue]
        next_queue = self.dead_letter_queue(queue)
        while next_queue is not None and next_queue not in chain:
            chain.append(next_queue)
            next_queue = self.dead_letter_queue(next_queue)
        return chain

    def drained(self, kind: str, name: str) -> bool | None:
        return self.drains.get((kind, name))


def build_model(ops: Sequence[Op]) -> HistoryModel:
    model = HistoryModel()
    if ops:
        model.start_ms, model.end_ms = ops[0].time_ms, ops[-1].time_ms
    handlers = {"publish": _on_publish, "deliver": _on_deliver, "read": _on_read, "ack": _on_settle,
                "nack": _on_settle, "workload": _on_workload, "final": _on_final, "nemesis": _on_nemesis,
                "commit": _counted_only}
    for op in ops:
        handler = handlers.get(op.f)
        if handler is not None:
            model.stats[f"{op.f}_{op.type}"] += 1
            handler(model, op)
    for waiting in model.open_settles.values():
        for invoke in waiting:
            _note_maybe_settled(model, invoke)
    model.open_settles.clear()
    _infer_streams(model)
    for publish in model.publishes.values():
        publish.queue_targets = tuple(name for name in publish.targets if name not in model.streams)
        publish.stream_targets = tuple(name for name in publish.targets if name in model.streams)
    return model


def _on_publish(model: HistoryModel, op: Op) -> None:
    value = op.value
    publish_id = value["id"]
    if op.type == "invoke":
        if publish_id in model.publishes:
            first = model.publishes[publish_id].invoke_index
            raise HistoryError(f"op {op.index}: publish id {publish_id!r} was already invoked at op {first}")
        model.publishes[publish_id] = Publish(publish_id, value["producer"], value.get("key"),
                                              tuple(value["targets"]), op.index, op.time_ms)
        return
    publish = model.publishes[publish_id]  # validate_history saw the invoke
    publish.outcome, publish.done_index, publish.done_time_ms = op.type, op.index, op.time_ms
    if op.type == "ok":
        publish.status = value.get("status")
        publish.partition, publish.offset = value.get("partition"), value.get("offset")


def _on_deliver(model: HistoryModel, op: Op) -> None:
    value = op.value
    expires_ms, observed_ms = value.get("lease_expires_ms"), value.get("observed_wall_ms")
    late = expires_ms is not None and observed_ms is not None and observed_ms > expires_ms
    model.deliveries.append(Delivery(op.index, op.time_ms, value["queue"], value["id"], value["message_id"],
                                     value["delivery_count"], value.get("death_reason"),
                                     value.get("death_queue"), late))


def _on_read(model: HistoryModel, op: Op) -> None:
    value = op.value
    model.reads.append(Read(op.index, op.time_ms, value["stream"], value["partition"], value["offset"],
                            value["id"]))


def _on_settle(model: HistoryModel, op: Op) -> None:
    key = pairing_key(op)
    if op.type == "invoke":
        model.open_settles.setdefault(key, deque()).append(op)
        return
    waiting = model.open_settles[key]  # validate_history saw the invoke
    invoke = waiting.popleft()
    if not waiting:
        del model.open_settles[key]
    if op.type == "unknown":
        _note_maybe_settled(model, invoke)
    if op.type != "ok":
        return
    value = op.value
    settle = Settle(op.index, op.time_ms, value["queue"], value["id"], value["message_id"],
                    value["requeue"] if op.f == "nack" else None)
    (model.acks if op.f == "ack" else model.nacks).append(settle)


def _note_maybe_settled(model: HistoryModel, invoke: Op) -> None:
    target = (invoke.value["queue"], invoke.value["message_id"])
    if invoke.f == "ack":
        model.maybe_acked.add(target)
    elif not invoke.value["requeue"]:
        model.maybe_rejected.add(target)


def _on_workload(model: HistoryModel, op: Op) -> None:
    value = op.value
    for name, spec in value["queues"].items():
        model.queues[name] = QueueSpec(spec.get("dead_letter_queue"), spec.get("delivery_limit"),
                                       spec.get("message_ttl_ms"))
    for name, spec in value["streams"].items():
        model.streams[name] = spec.get("partitions", 0)
    if value.get("idempotent") is False:
        model.idempotent = False
    model.nodes.update(value.get("nodes", ()))


def _on_final(model: HistoryModel, op: Op) -> None:
    value = op.value
    if value["kind"] == "replica_digest":
        model.digests[value["node"]] = (value["digest"], op.index, op.time_ms)
    elif value["kind"] == "drain":
        kind = "queue" if "queue" in value else "stream"
        model.drains[(kind, value[kind])] = value["complete"]


def _on_nemesis(model: HistoryModel, op: Op) -> None:
    model.nodes.update(op.value.get("nodes", ()))


def _counted_only(model: HistoryModel, op: Op) -> None:
    """Stream commits: counted in the stats, not checked."""


def _infer_streams(model: HistoryModel) -> None:
    """A name that was read from, or that a publish ok placed at an offset, is a stream even if
    no workload event declared it: otherwise its records would all read as lost queue messages."""
    for read in model.reads:
        if read.stream not in model.queues:
            model.streams.setdefault(read.stream, 0)
    for publish in model.publishes.values():
        if publish.outcome == "ok" and publish.offset is not None:
            for target in publish.targets:
                if target not in model.queues:
                    model.streams.setdefault(target, 0)
