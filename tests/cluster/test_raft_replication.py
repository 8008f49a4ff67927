"""Three real Raft nodes (one process, real loopback TCP): replication, forwarding, durability."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest

from raftmq.cluster import ApplyFailure, RaftNode

from .raft_fixtures import ListMachine, make_cluster, make_configs, wait_until

pytestmark = pytest.mark.timeout(120)


def _leader(members: list[tuple[RaftNode, ListMachine]]) -> RaftNode:
    leaders = [node for node, _ in members if node.is_leader]
    assert len(leaders) == 1, f"expected one leader, got {[n.node_id for n in leaders]}"
    return leaders[0]


async def _elect(members: list[tuple[RaftNode, ListMachine]]) -> RaftNode:
    await wait_until(lambda: sum(node.is_leader for node, _ in members) == 1
                     and all(node.leader_id for node, _ in members), 10.0, "a leader")
    return _leader(members)


async def _stop(members: list[tuple[RaftNode, ListMachine]]) -> None:
    await asyncio.gather(*(node.stop() for node, _ in members))


@pytest.mark.parametrize("tick_mode", ["thread", "loop"])
async def test_follower_proposal_is_applied_locally_before_it_returns(tmp_path: Path,
                                                                      tick_mode: str) -> None:
    members = await make_cluster(make_configs(tmp_path, 3, tick_mode=tick_mode))
    try:
        leader = await _elect(members)
        follower, follower_machine = next((n, m) for n, m in members if n is not leader)
        applied = await follower.propose(b"hello", timeout_s=5.0)
        # The answer comes after the entry is committed and applied on the node asked.
        assert follower_machine.values == [b"hello"]
        assert applied.result == 1
        assert follower.applied_index >= applied.index
        await wait_until(lambda: all(m.values == [b"hello"] for _, m in members), 5.0, "replication")
    finally:
        await _stop(members)


@pytest.mark.parametrize("tick_mode", ["thread", "loop"])
async def test_pipelined_load_never_truncates_acknowledged_entries(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, tick_mode: str) -> None:
    caplog.set_level(logging.WARNING)
    members = await make_cluster(make_configs(tmp_path, 3, tick_mode=tick_mode))
    try:
        leader = await _elect(members)
        proposers = [node for node, _ in members]
        results = await asyncio.gather(*(
            proposers[i % 3].propose(b"%06d" % i + b"x" * 500, timeout_s=30.0) for i in range(6000)))
        assert len({r.result for r in results}) == 6000
        # Many commands share each entry (group commit).
        assert leader.status().commit_index < 3000
        await wait_until(lambda: all(len(m.values) == 6000 for _, m in members), 10.0, "catch-up")
        assert members[0][1].values == members[1][1].values == members[2][1].values
        for node, _ in members:
            assert node.status().log_truncations == 0
        assert not [r for r in caplog.records if "diverged" in r.getMessage()]
        assert not [r for r in caplog.records if "truncating" in r.getMessage()]
    finally:
        await _stop(members)


async def test_exception_in_apply_becomes_a_result_and_the_cluster_keeps_going(tmp_path: Path) -> None:
    members = await make_cluster(make_configs(tmp_path, 3))
    try:
        leader = await _elect(members)
        failed = await leader.propose(b"boom", timeout_s=5.0)
        assert isinstance(failed.result, ApplyFailure)
        after = await leader.propose(b"after", timeout_s=5.0)
        assert after.result == 1
        await wait_until(lambda: all(m.values == [b"after"] for _, m in members), 5.0, "replication")
    finally:
        await _stop(members)


@pytest.mark.parametrize("tick_mode", ["thread", "loop"])
async def test_full_restart_recovers_from_snapshot_and_journal(tmp_path: Path, tick_mode: str) -> None:
    configs = make_configs(tmp_path, 3, compaction_min_entries=50, tick_mode=tick_mode)
    members = await make_cluster(configs)
    try:
        await _elect(members)
        for i in range(400):
            await members[i % 3][0].propose(b"v%d" % i, timeout_s=5.0)
        await wait_until(lambda: all(n.status().snapshots_written > 0 for n, _ in members),
                         20.0, "a snapshot on every node")
        await asyncio.gather(*(members[i % 3][0].propose(b"w%d" % i, timeout_s=5.0)
                               for i in range(100)))
        # Each proposal answered once applied on its proposer; the others may lag a moment.
        await wait_until(lambda: all(len(m.values) == 500 for _, m in members), 5.0, "replication")
        expected = list(members[0][1].values)
        assert all(m.values == expected for _, m in members)
    finally:
        await _stop(members)
    assert all((c.raft_dir / "snapshot.bin").exists() for c in configs)
    restarted = await make_cluster(configs)
    try:
        # Each replica replays its own disk state before start() returns: no peer needed.
        for _, machine in restarted:
            assert machine.values == expected
        await _elect(restarted)
        await restarted[1][0].propose(b"after-restart", timeout_s=5.0)
        await wait_until(lambda: all(m.values == [*expected, b"after-restart"] for _, m in restarted),
                         5.0, "replication after restart")
    finally:
        await _stop(restarted)


async def test_wiped_node_catches_up_from_the_others(tmp_path: Path) -> None:
    configs = make_configs(tmp_path, 3, compaction_min_entries=50)
    members = await make_cluster(configs)
    try:
        await _elect(members)
        for i in range(300):
            await members[0][0].propose(b"v%d" % i, timeout_s=5.0)
        await wait_until(lambda: all(n.status().snapshots_written > 0 for n, _ in members),
                         20.0, "snapshots")
        leader = _leader(members)
        victim = next(i for i, (node, _) in enumerate(members) if node is not leader)
        await members[victim][0].stop()
        shutil.rmtree(configs[victim].data_dir)
        machine = ListMachine()
        fresh = RaftNode(configs[victim], machine)
        await fresh.start()
        members[victim] = (fresh, machine)
        await leader.propose(b"last", timeout_s=5.0)
        expected = next(m for n, m in members if n is leader).values
        await wait_until(lambda: machine.values == expected, 20.0, "wiped node catch-up")
    finally:
        await _stop(members)


async def test_no_leader_is_a_definite_failure(tmp_path: Path) -> None:
    configs = make_configs(tmp_path, 3)
    lonely = RaftNode(configs[0], ListMachine())
    await lonely.start()
    try:
        with pytest.raises(Exception) as raised:
            await lonely.propose(b"x", timeout_s=0.5)
        error = raised.value
        assert getattr(error, "code", None) == "no_leader"
        assert getattr(error, "definite", None) is True
    finally:
        await lonely.stop()


async def test_abandoned_applied_waits_do_not_pile_up(tmp_path: Path) -> None:
    # A client may ask to wait for an index that never comes (read-your-writes with a bogus
    # index); each such wait times out, and its bookkeeping must go with it.
    members = await make_cluster(make_configs(tmp_path, 1))
    node = members[0][0]
    try:
        await _elect(members)
        far_away = node.applied_index + 10**9
        for _ in range(1000):
            assert not await node.wait_applied(far_away, 0.0005)
        assert len(node._waiters) <= 2
        assert await node.wait_applied(node.applied_index, 0.1)
    finally:
        await _stop(members)
