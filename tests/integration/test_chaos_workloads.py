"""The chaos workloads on a real 3-node cluster: each runs ~5 s, drains, and the checker finds
the history valid (nothing lost, nothing duplicated); then all three at once through a
`kill -9` of the leader, still valid. The recorded histories must also show that each
workload exercised what it claims (dead-lettering, redelivery, fan-out, group commits).

A few fast tests (no cluster) pin the recording rules that the checker relies on: bodies name
their publish id, and settle receipts map to ok / fail / unknown as the contract says.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from raftmq.chaos.checker import CheckResult, check
from raftmq.chaos.history import HistoryWriter, Op, load_history, run_clock_ms
from raftmq.chaos.workload_common import WorkloadSettings, body_for, id_from_body
from raftmq.chaos.workload_consume import QueueConsumerRunner, SettleMix
from raftmq.chaos.workloads import make_workloads
from raftmq.client import Client, IndefiniteError, Message, QueueConsumer, RetryPolicy, SettleReceipt
from raftmq.client.errors import error_for
from tests.integration.cluster_harness import ClusterHarness, wait_for
from tests.integration.conftest import ClusterFactory

RUN_S = 5.0
RATE_PER_S = 150.0
DRAIN_DEADLINE_S = 45.0
POLICY = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=1.0, deadline_s=20.0)


@dataclass
class RunOutcome:
    ops: list[Op]
    result: CheckResult
    stats: dict[str, dict[str, int]]
    drained: dict[str, bool]

    def ops_of(self, f: str, op_type: str = "event") -> list[Op]:
        return [op for op in self.ops if op.f == f and op.type == op_type]

    def explain(self) -> str:
        lines = [f"{a.kind}: {a.message}" for a in self.result.violations[:20]]
        return "\n".join([*lines, f"counts={self.result.counts}", f"stats={self.stats}"])


def _start(harness: ClusterHarness) -> None:
    harness.start()
    leader = harness.wait_for_leader(timeout_s=30.0)
    urls = {node.url for node in harness.nodes.values()}

    def all_announced() -> bool:
        nodes = (harness.cluster_view(leader) or {}).get("nodes")
        return isinstance(nodes, dict) and {meta.get("http_url") for meta in nodes.values()} == urls

    wait_for(all_announced, 30.0, message="every node's http_url in the directory")


async def _kill_leader(harness: ClusterHarness, writer: HistoryWriter, at_s: float, down_s: float) -> None:
    await asyncio.sleep(at_s)  # the fault schedule, not a wait for a condition
    leader = await asyncio.to_thread(harness.wait_for_leader, 30.0)
    detail = {"signal": "SIGKILL"}
    writer.event("nemesis", "nemesis", {"action": "start", "fault": "kill-leader", "nodes": [leader],
                                        "detail": detail})
    await asyncio.to_thread(harness.kill, leader)
    await asyncio.sleep(down_s)
    await asyncio.to_thread(harness.start_node, leader)
    writer.event("nemesis", "nemesis", {"action": "stop", "fault": "kill-leader", "nodes": [leader],
                                        "detail": detail})


async def _run(harness: ClusterHarness, history: Path, names: tuple[str, ...], *, seed: int,
               kill_leader: bool = False) -> RunOutcome:
    _start(harness)
    settings = WorkloadSettings(seed=seed, rate_per_s=RATE_PER_S, prefix=f"chaos{seed}")
    writer = HistoryWriter(history, run_clock_ms())
    drained: dict[str, bool] = {}
    try:
        async with Client.connect([node.url for node in harness.nodes.values()], retry=POLICY) as client:
            workloads = make_workloads(names, settings, writer)
            for workload in workloads:
                await workload.setup(client)
            stop = asyncio.Event()
            runs = [asyncio.create_task(workload.run(client, stop)) for workload in workloads]
            fault = asyncio.create_task(_kill_leader(harness, writer, 1.5, 2.0)) if kill_leader else None
            await asyncio.sleep(RUN_S)  # how long the workloads run
            if fault is not None:
                await fault
            stop.set()
            await asyncio.gather(*runs)
            for workload in workloads:
                drained[workload.name] = await workload.drain(client, DRAIN_DEADLINE_S)
            stats = {workload.name: workload.stats() for workload in workloads}
    finally:
        writer.close()
    ops = load_history(history)
    return RunOutcome(ops, check(ops), stats, drained)


def _assert_valid(outcome: RunOutcome) -> None:
    assert outcome.result.valid, outcome.explain()
    assert outcome.result.counts["lost"] == 0 and outcome.result.counts["duplicated"] == 0
    assert all(outcome.drained.values()), outcome.drained
    for name, stats in outcome.stats.items():
        # Most of the run's publishes succeeded (the rate is split evenly, so this is a floor).
        assert stats["publish_ok"] >= 0.5 * RATE_PER_S * RUN_S, (name, stats)
        settled = sum(stats.get(f"publish_{kind}", 0) for kind in ("ok", "fail", "unknown"))
        assert stats["publish_invoked"] == settled, (name, stats)


@pytest.mark.integration
@pytest.mark.timeout(120)
async def test_queue_workload_without_faults(cluster_factory: ClusterFactory, tmp_path: Path) -> None:
    outcome = await _run(cluster_factory(3), tmp_path / "history.jsonl", ("queue",), seed=11)
    _assert_valid(outcome)
    deliveries = outcome.ops_of("deliver")
    reasons = Counter(op.value["death_reason"] for op in deliveries if op.value["death_queue"])
    assert reasons["rejected"] > 0, reasons
    assert any(op.value["delivery_count"] > 1 for op in deliveries)  # requeued and abandoned
    nacks = Counter(op.value["requeue"] for op in outcome.ops_of("nack", "ok"))
    assert nacks[True] > 0 and nacks[False] > 0, nacks
    assert outcome.stats["queue"]["abandoned"] > 0
    assert outcome.result.stats["fate_acked"] > 0 and outcome.result.stats["fate_dead_lettered"] > 0
    assert outcome.result.stats["fate_expired"] > 0, outcome.result.stats


@pytest.mark.integration
@pytest.mark.timeout(120)
async def test_fanout_workload_without_faults(cluster_factory: ClusterFactory, tmp_path: Path) -> None:
    outcome = await _run(cluster_factory(3), tmp_path / "history.jsonl", ("fanout",), seed=12)
    _assert_valid(outcome)
    ok_ids = {op.value["id"] for op in outcome.ops_of("publish", "ok")}
    per_queue = Counter(op.value["queue"] for op in outcome.ops_of("deliver"))
    assert len(per_queue) == 3 and all(count >= len(ok_ids) for count in per_queue.values()), per_queue


@pytest.mark.integration
@pytest.mark.timeout(120)
async def test_stream_workload_without_faults(cluster_factory: ClusterFactory, tmp_path: Path) -> None:
    outcome = await _run(cluster_factory(3), tmp_path / "history.jsonl", ("stream",), seed=13)
    _assert_valid(outcome)
    reads = outcome.ops_of("read")
    drain_ids = {op.value["id"] for op in reads if op.value["consumer"] == "drain-reader"}
    assert {op.value["id"] for op in outcome.ops_of("publish", "ok")} <= drain_ids
    assert len({op.value["consumer"] for op in reads if op.value["group"] is not None}) >= 2
    assert outcome.stats["stream"]["commit_ok"] > 0


@pytest.mark.integration
@pytest.mark.timeout(180)
async def test_all_workloads_through_a_leader_kill(cluster_factory: ClusterFactory,
                                                   tmp_path: Path) -> None:
    outcome = await _run(cluster_factory(3), tmp_path / "history.jsonl", ("queue", "fanout", "stream"),
                         seed=14, kill_leader=True)
    _assert_valid(outcome)
    assert len(outcome.ops_of("nemesis")) == 2
    # The run went on after the kill: publishes succeeded after the node came back.
    restarted_ms = outcome.ops_of("nemesis")[-1].time_ms
    assert any(op.time_ms > restarted_ms for op in outcome.ops_of("publish", "ok"))


# ------------------------------------------------------------------ recording rules, no cluster


def test_bodies_name_their_publish_id() -> None:
    for size in (1, 10, 64, 4096):
        body = body_for("queue-p0-17", size)
        assert id_from_body(body) == "queue-p0-17"
        assert len(body) == max(size, len("queue-p0-17"))
    assert id_from_body(b"\xff\xfe") != ""  # a foreign body still names something


class _FakeConsumer:
    """Answers every ack and nack with a fixed receipt or error."""

    def __init__(self, answer: SettleReceipt | Exception | None) -> None:
        self.answer = answer  # None: never answers

    async def _reply(self) -> SettleReceipt:
        if self.answer is None:
            await asyncio.Event().wait()
            raise AssertionError("an event nobody sets was set")
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def ack(self, _messages: list[Message]) -> SettleReceipt:
        return await self._reply()

    async def nack(self, _messages: list[Message], *, requeue: bool = True) -> SettleReceipt:
        return await self._reply()


def _message(message_id: int) -> Message:
    return Message(message_id=message_id, lease_id=1, body=body_for(f"m{message_id}", 16), headers={},
                   routing_key="q", exchange="", delivery_count=1, published_ms=0, lease_expires_ms=0)


async def _settle_outcomes(tmp_path: Path, f: str, requeue: bool | None,
                           answer: SettleReceipt | Exception | None) -> list[tuple[str, str | None]]:
    path = tmp_path / f"settle-{f}-{requeue}-{type(answer).__name__}.jsonl"
    with HistoryWriter(path, run_clock_ms()) as writer:
        runner = QueueConsumerRunner(client=cast(Client, None), writer=writer, queue="q", process="c",
                                     mode="pull", mix=SettleMix(), rng=random.Random(0),
                                     counters=Counter())
        consumer = cast(QueueConsumer, _FakeConsumer(answer))
        await runner._settle(consumer, f, [_message(1), _message(2), _message(3)], requeue)
    ops = load_history(path)
    assert [op.type for op in ops[:3]] == ["invoke"] * 3
    return [(op.type, op.value.get("error")) for op in ops[3:]]


async def test_settle_receipts_map_to_outcomes(tmp_path: Path) -> None:
    receipt = SettleReceipt(1, ((2, "lease_expired"), (3, "unknown_message")))
    expected_definite: list[tuple[str, Any]] = [("ok", None), ("fail", "lease_expired"),
                                                ("unknown", "unknown_message")]
    assert await _settle_outcomes(tmp_path, "ack", None, receipt) == expected_definite
    assert await _settle_outcomes(tmp_path, "nack", False, receipt) == expected_definite
    # A requeued message stays in the queue: a retry after an applied first attempt also
    # finds its lease gone, so lease_expired proves nothing there.
    assert await _settle_outcomes(tmp_path, "nack", True, receipt) == [
        ("ok", None), ("unknown", "lease_expired"), ("unknown", "unknown_message")]
    definite = error_for("no_leader", "no leader", definite=True)
    assert await _settle_outcomes(tmp_path, "ack", None, definite) == [("fail", "no_leader")] * 3
    unknown = IndefiniteError("timeout", "lost answer", definite=False)
    assert await _settle_outcomes(tmp_path, "ack", None, unknown) == [("unknown", "timeout")] * 3
    assert await _settle_outcomes(tmp_path, "ack", None, ConnectionResetError()) == [
        ("unknown", "ConnectionResetError")] * 3
    # Unanswered past the leases (expired here already): given up, unknown.
    assert await _settle_outcomes(tmp_path, "ack", None, None) == [("unknown", "settle_timeout")] * 3
