"""One chaos run: start a cluster, run workloads under a fault schedule, heal, drain, check.

    result = await run_chaos(RunOptions(scenario="kills", duration_s=300, seed=7, ...))

The run's directory holds everything needed to understand it afterwards: `history.jsonl`
(every operation), `meta.json` (seed, schedule as planned and as applied), the nodes' logs,
`result.json` (the checker's counts and anomalies) and `report.html`. `check_run(dir)`
checks and reports an existing run again.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftmq.chaos.checker import CheckResult, check
from raftmq.chaos.digests import collect_digests
from raftmq.chaos.history import HistoryWriter, load_history, run_clock_ms
from raftmq.chaos.launcher import LOOPBACK, NETNS, ChaosCluster
from raftmq.chaos.nemesis import MemberChanges, Nemesis
from raftmq.chaos.report import write_report
from raftmq.chaos.schedule import plan, scenario_faults
from raftmq.chaos.workloads import Workload, WorkloadSettings, make_workloads
from raftmq.client import Client, RetryPolicy

__all__ = ["RunOptions", "RunResult", "check_run", "run_chaos"]

_START_TIMEOUT_S = 60.0
_HEAL_TIMEOUT_S = 90.0
_PROGRESS_EVERY_S = 5.0
_CLIENT_RETRY = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=1.0, deadline_s=20.0)


@dataclass(frozen=True)
class RunOptions:
    out_dir: Path
    scenario: str = "smoke"
    duration_s: float = 60.0
    seed: int = 1
    nodes: int = 3
    network: str = LOOPBACK
    fsync: str = "always"
    workloads: tuple[str, ...] = ("queue", "fanout", "stream")
    rate_per_s: float = 200.0
    drain_timeout_s: float = 120.0
    test_fault: str | None = None  # a deliberately broken broker (proves the checker can fail)
    quiet: bool = False


@dataclass
class RunResult:
    run_dir: Path
    result: CheckResult
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.result.valid


async def run_chaos(options: RunOptions) -> RunResult:
    faults, skipped = scenario_faults(options.scenario, network=options.network == NETNS)
    steps = plan(faults, options.duration_s, options.seed)
    run_dir = options.out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{options.scenario}-{options.seed}"
    run_dir.mkdir(parents=True, exist_ok=False)
    meta: dict[str, Any] = {
        "scenario": options.scenario, "seed": options.seed, "nodes": options.nodes,
        "network": options.network, "fsync": options.fsync, "duration_s": options.duration_s,
        "workloads": list(options.workloads), "rate_per_s": options.rate_per_s,
        "test_fault": options.test_fault, "skipped_faults": skipped,
        "schedule": [step.to_dict() for step in steps],
        "command": " ".join(sys.argv),
    }
    say = _printer(options.quiet)
    if skipped:
        say(f"skipped (they need --network netns): {', '.join(skipped)}")
    extra_env = {"RAFTMQ_TEST_FAULT": options.test_fault} if options.test_fault else {}
    if "lose-unsynced" in faults:
        extra_env["RAFTMQ_SYNC_MARKER"] = "1"
    cluster = ChaosCluster(run_dir / "nodes", size=options.nodes, mode=options.network,
                           fsync=options.fsync, extra_env=extra_env)
    writer = HistoryWriter(run_dir / "history.jsonl", run_clock_ms())
    try:
        await asyncio.to_thread(cluster.start)
        leader = await asyncio.to_thread(cluster.wait_for_leader, _START_TIMEOUT_S)
        await asyncio.to_thread(cluster.wait_ready, _START_TIMEOUT_S)
        say(f"cluster up ({options.nodes} nodes, {options.network}, fsync={options.fsync}), "
            f"leader {leader}; run dir {run_dir}")
        meta.update(await _drive(options, cluster, writer, steps, say))
    finally:
        writer.close()
        await asyncio.to_thread(cluster.stop)
    (run_dir / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    outcome = check_run(run_dir)
    say(_summary(outcome))
    return outcome


async def _drive(options: RunOptions, cluster: ChaosCluster, writer: HistoryWriter,
                 steps: Sequence[Any], say: Any) -> dict[str, Any]:
    settings = WorkloadSettings(seed=options.seed, rate_per_s=options.rate_per_s)
    async with Client.connect(cluster.urls, retry=_CLIENT_RETRY) as client:
        workloads = make_workloads(options.workloads, settings, writer)
        for workload in workloads:
            await workload.setup(client)
        stop = asyncio.Event()
        runs = [asyncio.create_task(w.run(client, stop), name=f"chaos-{w.name}")
                for w in workloads]
        nemesis = Nemesis(cluster, writer, MemberChanges(client.remove_member, client.add_member))
        loop = asyncio.get_running_loop()
        started = loop.time()
        faults = asyncio.create_task(nemesis.run(steps, stop, started), name="chaos-nemesis")
        try:
            await _progress(workloads, faults, started, options.duration_s, say)
        finally:
            stop.set()
            await asyncio.gather(faults, *runs, return_exceptions=True)
        failed = [task for task in (faults, *runs) if task.exception() is not None]
        if failed:
            # Stop the workloads' producers and consumers before the history closes.
            await asyncio.gather(*(w.close() for w in workloads), return_exceptions=True)
            raise RuntimeError(f"{failed[0].get_name()} failed") from failed[0].exception()
        say("faults over: healing")
        await asyncio.to_thread(_heal, cluster)
        say("draining")
        drained = [await w.drain(client, options.drain_timeout_s) for w in workloads]
        digests = await collect_digests(cluster)
        for node, digest in sorted(digests.items()):
            writer.event("checker", "final", {"kind": "replica_digest", "node": node,
                                              "digest": digest})
    return {"applied_schedule": nemesis.applied, "drained": all(drained),
            "active_s": round(loop.time() - started, 1)}


async def _progress(workloads: Sequence[Workload], faults: asyncio.Task[None], started: float,
                    duration_s: float, say: Any) -> None:
    """Until the duration is over and every scheduled fault has had its turn."""
    loop = asyncio.get_running_loop()
    while loop.time() - started < duration_s or not faults.done():
        await asyncio.sleep(_PROGRESS_EVERY_S)
        counts = " ".join(f"{w.name}:{_short(w.stats())}" for w in workloads)
        say(f"t={loop.time() - started:5.0f}s {counts}")
        if faults.done() and faults.exception() is not None:
            return


def _short(stats: dict[str, int]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(stats.items()))


def _heal(cluster: ChaosCluster) -> None:
    if cluster.network is not None:
        cluster.network.heal()
    for name, node in cluster.nodes.items():
        if node.paused:
            cluster.resume(name)
        if not node.running:
            cluster.start_node(name)
    cluster.wait_for_leader(_HEAL_TIMEOUT_S)
    cluster.wait_ready(_HEAL_TIMEOUT_S)


def check_run(run_dir: Path) -> RunResult:
    """Check a finished run's history and write its result.json and report.html."""
    meta = json.loads((run_dir / "meta.json").read_text())
    meta["critical_log_lines"] = _critical_log_lines(run_dir / "nodes")
    ops = load_history(run_dir / "history.jsonl", tolerate_torn_tail=True)
    nodes = [f"n{index + 1}" for index in range(int(meta.get("nodes", 0)))]
    result = check(ops, nodes=nodes)
    (run_dir / "result.json").write_text(result.to_json())
    write_report(run_dir / "report.html", history=ops, result=result, meta=meta)
    return RunResult(run_dir, result, meta)


def _critical_log_lines(nodes_dir: Path, keep: int = 20) -> list[str]:
    lines: list[str] = []
    for log_path in sorted(nodes_dir.glob("*.log")):
        with open(log_path, errors="replace") as log_file:
            lines += [f"{log_path.stem}: {line.strip()}" for line in log_file if " CRITICAL " in line]
    return lines[:keep]


def _summary(outcome: RunResult) -> str:
    result = outcome.result
    verdict = "VALID" if outcome.valid else "INVALID"
    counts = ", ".join(f"{kind} {count}" for kind, count in sorted(result.counts.items()) if count)
    if outcome.meta.get("critical_log_lines"):
        # pysyncobj logs CRITICAL when a follower deletes entries it had applied. It deletes
        # everything after the leader's previous index even when the entries are identical
        # (a resend), so the line alone does not prove divergence: the replica digests do.
        counts += f"; CRITICAL lines in node logs: {len(outcome.meta['critical_log_lines'])}"
    return (f"{verdict}: {counts or 'no anomalies'}; report {outcome.run_dir / 'report.html'}")


def _printer(quiet: bool) -> Any:
    def say(line: str) -> None:
        if not quiet:
            print(f"chaos: {line}", file=sys.stderr, flush=True)
    return say

