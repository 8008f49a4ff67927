"""Seeded random histories: clean ones from a model broker must pass every check; one
mutation (a dropped delivery, a stored copy too many, two swapped offsets, ...) must make the
matching anomaly appear, naming the message it touched. Plus the 200,000-operation budget."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from raftmq.chaos.checker import CheckResult, check
from raftmq.chaos.history import Op
from tests.unit.chaos_histories import reindex
from tests.unit.chaos_simulation import big_checked, simulate

# A mutation returns the changed history and what must be reported: (kind, details key, value),
# or None when this history offers nothing to mutate that way.
Expectation = tuple[str, str | None, object]
Mutation = Callable[[list[Op], random.Random], tuple[list[Op], Expectation] | None]
SEEDS = range(30)


def events(ops: list[Op], f: str, op_type: str = "event") -> list[Op]:
    return [op for op in ops if op.f == f and op.type == op_type]


def with_value(op: Op, **changes: object) -> Op:
    return replace(op, value={**op.value, **changes})


def insert_after(ops: list[Op], position: int, *new_ops: Op) -> list[Op]:
    return reindex([*ops[:position + 1], *new_ops, *ops[position + 1:]])


def ok_publishes(ops: list[Op]) -> dict[str, Op]:
    return {op.value["id"]: op for op in events(ops, "publish", "ok")}


def drop_queue_deliveries(ops: list[Op], rng: random.Random) -> tuple[list[Op], Expectation] | None:
    confirmed = ok_publishes(ops)
    delivered = sorted({op.value["id"] for op in events(ops, "deliver") if op.value["id"] in confirmed})
    if not delivered:
        return None
    victim = rng.choice(delivered)
    kept = [op for op in ops if not (op.f == "deliver" and op.value["id"] == victim)]
    return reindex(kept), ("lost", "id", victim)


def drop_stream_reads(ops: list[Op], rng: random.Random) -> tuple[list[Op], Expectation] | None:
    confirmed = ok_publishes(ops)
    read = sorted({op.value["id"] for op in events(ops, "read") if op.value["id"] in confirmed})
    if not read:
        return None
    victim = rng.choice(read)
    kept = [op for op in ops if not (op.f == "read" and op.value["id"] == victim)]
    return reindex(kept), ("lost", "id", victim)


def duplicate_stored_copy(ops: list[Op], rng: random.Random) -> tuple[list[Op], Expectation] | None:
    candidates = [op for op in events(ops, "deliver") if op.value["death_queue"] is None]
    if not candidates:
        return None
    original = rng.choice(candidates)
    top_message_id = max(op.value["message_id"] for op in events(ops, "deliver"))
    copy = with_value(original, message_id=top_message_id + 1, delivery_count=1)
    return insert_after(ops, original.index, copy), ("duplicated", "id", original.value["id"])


def redeliver_after_ack(ops: list[Op], rng: random.Random) -> tuple[list[Op], Expectation] | None:
    acks = events(ops, "ack", "ok")
    if not acks:
        return None
    ack = rng.choice(acks)
    value = ack.value
    delivery = Op(0, ack.time_ms, ack.process, "event", "deliver",
                  {"queue": value["queue"], "id": value["id"], "message_id": value["message_id"],
                   "delivery_count": 99, "consumer": ack.process, "death_reason": None, "death_queue": None})
    return insert_after(ops, ack.index, delivery), ("duplicated", "id", value["id"])


def swap_two_offsets(ops: list[Op], rng: random.Random) -> tuple[list[Op], Expectation] | None:
    invokes = {op.value["id"]: op for op in events(ops, "publish", "invoke")}
    placed = [op for op in events(ops, "publish", "ok") if "offset" in op.value]
    pairs = [(first, second) for first in placed for second in placed
             if first.value["producer"] == second.value["producer"]
             and first.value["partition"] == second.value["partition"]
             and first.index < invokes[second.value["id"]].index]
    if not pairs:
        return None
    first, second = rng.choice(pairs)
    offsets = {first.value["id"]: second.value["offset"], second.value["id"]: first.value["offset"]}
    swapped = [with_value(op, offset=offsets[op.value["id"]])
               if op.f in ("publish", "read") and op.type in ("ok", "event") and op.value["id"] in offsets
               else op for op in ops]
    return swapped, ("order", "later", second.value["id"])


def swap_two_message_ids(ops: list[Op], rng: random.Random) -> tuple[list[Op], Expectation] | None:
    invokes = {op.value["id"]: op for op in events(ops, "publish", "invoke")}
    oks = ok_publishes(ops)
    first_copy: dict[str, tuple[str, int]] = {}
    for op in events(ops, "deliver"):
        single_target = invokes[op.value["id"]].value["targets"] == [op.value["queue"]]
        if op.value["death_queue"] is None and single_target:
            first_copy.setdefault(op.value["id"], (op.value["queue"], op.value["message_id"]))
    placed = [oks[msg_id] for msg_id in first_copy if msg_id in oks]
    pairs = [(first, second) for first in placed for second in placed
             if first.value["producer"] == second.value["producer"]
             and first_copy[first.value["id"]][0] == first_copy[second.value["id"]][0]
             and first.index < invokes[second.value["id"]].index]
    if not pairs:
        return None
    first, second = rng.choice(pairs)
    one, other = first_copy[first.value["id"]], first_copy[second.value["id"]]
    swap = {one: other[1], other: one[1]}
    def copy_of(op: Op) -> tuple[str, int] | None:
        if op.f not in ("deliver", "ack", "nack"):
            return None
        return op.value["queue"], op.value["message_id"]
    changed = [with_value(op, message_id=swap[key]) if (key := copy_of(op)) in swap else op for op in ops]
    return changed, ("order", "later", second.value["id"])


def corrupt_a_read(ops: list[Op], rng: random.Random) -> tuple[list[Op], Expectation] | None:
    reads = events(ops, "read")
    ids = sorted({op.value["id"] for op in reads})
    if len(ids) < 2:
        return None
    victim = rng.choice(reads)
    other = rng.choice([msg_id for msg_id in ids if msg_id != victim.value["id"]])
    changed = [with_value(op, id=other) if op is victim else op for op in ops]
    return changed, ("divergent_read", "offset", victim.value["offset"])


def fail_an_arrived_publish(ops: list[Op], rng: random.Random) -> tuple[list[Op], Expectation] | None:
    arrived = {op.value["id"] for op in ops if op.f in ("deliver", "read")}
    candidates = [op for op in events(ops, "publish", "ok") if op.value["id"] in arrived]
    if not candidates:
        return None
    victim = rng.choice(candidates)
    failed = replace(victim, type="fail", value={**victim.value, "error": "timeout"})
    return [failed if op is victim else op for op in ops], ("failed_but_stored", "id", victim.value["id"])


def change_a_digest(ops: list[Op], rng: random.Random) -> tuple[list[Op], Expectation] | None:
    digests = [op for op in events(ops, "final") if op.value["kind"] == "replica_digest"]
    victim = rng.choice(digests)
    changed = [with_value(op, digest="other") if op is victim else op for op in ops]
    return changed, ("replicas_differ", None, None)


def fail_the_only_ack(ops: list[Op], rng: random.Random) -> tuple[list[Op], Expectation] | None:
    maybe = {(op.value["queue"], op.value["message_id"]) for op in events(ops, "ack", "unknown")}
    candidates = [op for op in events(ops, "ack", "ok")
                  if (op.value["queue"], op.value["message_id"]) not in maybe]
    if not candidates:
        return None
    victim = rng.choice(candidates)
    failed = replace(victim, type="fail", value={**victim.value, "error": "lease_expired"})
    return [failed if op is victim else op for op in ops], ("unsettled", "id", victim.value["id"])


def lower_a_delivery_count(ops: list[Op], rng: random.Random) -> tuple[list[Op], Expectation] | None:
    seen: dict[tuple[str, int], Op] = {}
    candidates: list[tuple[Op, Op]] = []
    for op in events(ops, "deliver"):
        key = (op.value["queue"], op.value["message_id"])
        if key in seen:
            candidates.append((seen[key], op))
        seen[key] = op
    if not candidates:
        return None
    earlier, later = rng.choice(candidates)
    lowered = with_value(later, delivery_count=max(0, earlier.value["delivery_count"] - 1))
    changed = [lowered if op is later else op for op in ops]
    return changed, ("delivery_count_regressed", "id", later.value["id"])


def misroute_a_delivery(ops: list[Op], rng: random.Random) -> tuple[list[Op], Expectation] | None:
    targets = {op.value["id"]: op.value["targets"] for op in events(ops, "publish", "invoke")}
    candidates = [op for op in events(ops, "deliver")
                  if op.value["death_queue"] is None and "q1" not in targets[op.value["id"]]]
    if not candidates:
        return None
    victim = rng.choice(candidates)
    changed = [with_value(op, queue="q1") if op is victim else op for op in ops]
    return changed, ("unexpected", "id", victim.value["id"])


def ack_a_dead_lettered_copy(ops: list[Op], rng: random.Random) -> tuple[list[Op], Expectation] | None:
    first_copy: dict[tuple[str, str], Op] = {}
    for op in events(ops, "deliver"):
        first_copy.setdefault((op.value["queue"], op.value["id"]), op)
    candidates = [op for op in events(ops, "deliver") if op.value["death_queue"] is not None
                  and (op.value["death_queue"], op.value["id"]) in first_copy]
    if not candidates:
        return None
    moved = rng.choice(candidates)
    source = first_copy[(moved.value["death_queue"], moved.value["id"])]
    value = {name: source.value[name] for name in ("queue", "id", "message_id")}
    ack = [Op(0, moved.time_ms, "auditor", op_type, "ack", value) for op_type in ("invoke", "ok")]
    return insert_after(ops, moved.index, *ack), ("dead_letter_accounting", "id", moved.value["id"])


MUTATIONS: list[Mutation] = [
    drop_queue_deliveries, drop_stream_reads, duplicate_stored_copy, redeliver_after_ack, swap_two_offsets,
    swap_two_message_ids,
    corrupt_a_read, fail_an_arrived_publish, change_a_digest, fail_the_only_ack, lower_a_delivery_count,
    misroute_a_delivery, ack_a_dead_lettered_copy,
]


def reported(result: CheckResult, expectation: Expectation) -> bool:
    kind, key, value = expectation
    return any(anomaly.kind == kind and (key is None or anomaly.details.get(key) == value)
               for anomaly in result.violations)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_clean_histories_pass_and_each_mutation_is_caught(seed: int) -> None:
    ops = simulate(seed, 250)
    result = check(ops)
    assert result.valid, [anomaly.message for anomaly in result.violations]
    assert result.stats["deliveries"] > 0 and result.stats["reads"] > 0
    rng = random.Random(seed)
    applied = 0
    for mutation in MUTATIONS:
        mutated = mutation(list(ops), rng)
        if mutated is None:
            continue
        applied += 1
        mutated_ops, expectation = mutated
        mutated_result = check(mutated_ops)
        assert not mutated_result.valid, mutation.__name__
        assert reported(mutated_result, expectation), (
            mutation.__name__, expectation, [anomaly.message for anomaly in mutated_result.violations])
    assert applied >= len(MUTATIONS) - 2


def test_clean_histories_cover_the_interesting_paths() -> None:
    """The generator must really produce what the clean test claims to exercise."""
    totals: dict[str, float] = {}
    for seed in SEEDS:
        for name, value in check(simulate(seed, 250)).stats.items():
            totals[name] = totals.get(name, 0) + value
    for stat in ("redeliveries", "fate_acked", "fate_dead_lettered", "fate_expired", "fate_dropped",
                 "fate_maybe_acked", "publish_fail", "publish_unknown", "nack_ok", "reads", "fault_windows"):
        assert totals.get(stat, 0) > 0, stat


def test_a_200k_operation_history_checks_in_a_few_seconds() -> None:
    ops, result, elapsed_s = big_checked()
    assert len(ops) >= 190_000
    assert result.valid, [anomaly.message for anomaly in result.violations[:5]]
    assert result.stats["ops"] == len(ops)
    assert elapsed_s < 10.0, elapsed_s  # about 2.5 s on an idle laptop core; generous for a loaded CI box
