"""The chaos smoke suite: short real runs of `raftmq.chaos` (the long ones: docs/chaos.md).

- With network namespaces (when this machine has them; the skip says why not): the leader is
  killed, partitioned away and paused while queue, fan-out and stream workloads run; the
  history must check valid, with every replica identical after the drain.
- On loopback (always): kills and pauses only.
- A deliberately broken broker (it drops every 25th stored message while confirming it) must
  make the same kind of run fail with lost messages: the checker can fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raftmq.chaos.netns import available
from raftmq.chaos.runner import RunOptions, run_chaos

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

NETNS_USABLE, NETNS_REASON = available()


def _assert_valid(outcome_counts: dict[str, int], valid: bool, run_dir: Path) -> None:
    violations = {kind: count for kind, count in outcome_counts.items() if count}
    assert valid, f"chaos run {run_dir} found {violations}"


@pytest.mark.skipif(not NETNS_USABLE, reason=f"network namespaces unusable: {NETNS_REASON}")
async def test_smoke_with_real_partitions(tmp_path: Path) -> None:
    outcome = await run_chaos(RunOptions(
        out_dir=tmp_path, scenario="smoke", duration_s=20.0, seed=11, network="netns",
        rate_per_s=100.0, drain_timeout_s=90.0, quiet=True))
    result = outcome.result
    _assert_valid(result.counts, result.valid, outcome.run_dir)
    faults = {step["fault"] for step in outcome.meta["applied_schedule"]}
    assert {"kill-leader", "partition-leader", "pause-leader"} <= faults
    assert result.stats["publish_ok"] > 500
    assert result.counts["replicas_differ"] == 0
    assert (outcome.run_dir / "report.html").stat().st_size > 1000


async def test_smoke_on_loopback(tmp_path: Path) -> None:
    outcome = await run_chaos(RunOptions(
        out_dir=tmp_path, scenario="kill-follower,pause-leader", duration_s=12.0, seed=5,
        network="loopback", workloads=("queue", "stream"), rate_per_s=100.0,
        drain_timeout_s=90.0, quiet=True))
    result = outcome.result
    _assert_valid(result.counts, result.valid, outcome.run_dir)
    assert result.stats["publish_ok"] > 300


async def test_a_broker_that_drops_messages_is_caught(tmp_path: Path) -> None:
    outcome = await run_chaos(RunOptions(
        out_dir=tmp_path, scenario="kill-follower", duration_s=6.0, seed=3,
        network="loopback", workloads=("queue",), rate_per_s=100.0, drain_timeout_s=60.0,
        test_fault="drop-publish-every=25", quiet=True))
    result = outcome.result
    assert not result.valid
    assert result.counts["lost"] > 0
    lost = [a for a in result.anomalies if a.kind == "lost"]
    assert lost and lost[0].violation
