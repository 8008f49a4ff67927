"""Membership changes and leadership transfer of RaftNode: real Raft nodes over loopback TCP in
one process (toy state machine), so every refusal and every path is exercised quickly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from raftmq.cluster import (
    LeaderRemovalRefused,
    MemberExistsError,
    MemberNotFoundError,
    MembershipChangeInProgress,
    NotLeaderError,
    RaftConfig,
    RaftNode,
)
from tests.cluster.raft_fixtures import ListMachine, free_ports, make_cluster, make_configs, wait_until

pytestmark = pytest.mark.timeout(120)
CHANGE_TIMEOUT_S = 10.0


@dataclass
class Cluster:
    base: Path
    members: list[tuple[RaftNode, ListMachine]]
    tick_mode: str = "thread"

    def leader(self) -> RaftNode:
        leaders = [node for node, _ in self.members if node.is_leader]
        assert len(leaders) == 1, [node.node_id for node in leaders]
        return leaders[0]

    def followers(self) -> list[RaftNode]:
        return [node for node, _ in self.members if not node.is_leader]

    async def elect(self) -> RaftNode:
        await wait_until(lambda: sum(node.is_leader for node, _ in self.members) == 1
                         and all(node.leader_id for node, _ in self.members), 10.0, "a leader")
        return self.leader()

    def new_config(self, node_id: str) -> RaftConfig:
        """A node not yet in the cluster; its peers are the current members."""
        address = f"127.0.0.1:{free_ports(1)[0]}"
        peers = {node.node_id: node.config.advertise_address for node, _ in self.members}
        return RaftConfig(node_id=node_id, bind_address=address, advertise_address=address,
                          peers=peers, data_dir=self.base / node_id, secret="test-secret",
                          tick_mode=self.tick_mode)

    async def start(self, config: RaftConfig) -> tuple[RaftNode, ListMachine]:
        machine = ListMachine()
        node = RaftNode(config, machine)
        await node.start()
        self.members.append((node, machine))
        return node, machine


@pytest_asyncio.fixture(params=["thread", "loop"])
async def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """Three nodes, in both of the engine's tick modes (pysyncobj on its own thread, or on
    the event loop: membership calls then run on the tick's own thread)."""
    tick_mode = str(request.param)
    members = await make_cluster(make_configs(tmp_path, 3, tick_mode=tick_mode))
    started = Cluster(tmp_path, members, tick_mode)
    await started.elect()
    try:
        yield started
    finally:
        await asyncio.gather(*(node.stop() for node, _ in started.members))


def member_ids(node: RaftNode) -> set[str]:
    return {node.node_id, *node.members()}


async def test_a_new_member_is_named_everywhere_catches_up_and_can_be_removed(
        cluster: Cluster) -> None:
    leader = await cluster.elect()
    await leader.propose(b"before", timeout_s=5.0)
    config = cluster.new_config("n9")
    members = await leader.add_member("n9", config.advertise_address, CHANGE_TIMEOUT_S)
    assert members["n9"] == config.advertise_address and len(members) == 4
    # Every replica names it (the directory's member record) before it has ever started.
    await wait_until(lambda: all(member_ids(node) == {"n0", "n1", "n2", "n9"}
                                 for node, _ in cluster.members), 5.0, "n9 known everywhere")
    peer = next(p for p in leader.status().peers if p.node_id == "n9")
    assert (peer.address, peer.connected) == (config.advertise_address, False)

    new_node, new_machine = await cluster.start(config)
    await leader.propose(b"after", timeout_s=5.0)
    await wait_until(lambda: new_machine.values == [b"before", b"after"], 10.0, "n9 catching up")
    await wait_until(lambda: "n9" in leader.node_metadata(), 5.0, "n9 in the metadata")

    members = await leader.remove_member("n9", CHANGE_TIMEOUT_S)
    assert set(members) == {"n0", "n1", "n2"}
    await wait_until(lambda: all(member_ids(node) == {"n0", "n1", "n2"}
                                 for node, _ in cluster.members if node is not new_node),
                     5.0, "n9 gone from the remaining nodes")
    assert "n9" not in leader.node_metadata()
    assert all(p.node_id != "n9" for p in leader.status().peers)
    # The three remaining nodes keep committing without it.
    applied = await leader.propose(b"without n9", timeout_s=5.0)
    assert applied.result == 3


async def test_a_follower_refuses_and_names_the_leader(cluster: Cluster) -> None:
    leader = await cluster.elect()
    follower = cluster.followers()[0]
    with pytest.raises(NotLeaderError) as refused:
        await follower.add_member("n9", "127.0.0.1:1", CHANGE_TIMEOUT_S)
    assert refused.value.leader_id == leader.node_id and refused.value.definite
    with pytest.raises(NotLeaderError):
        await follower.remove_member(leader.node_id, CHANGE_TIMEOUT_S)
    with pytest.raises(NotLeaderError):
        await follower.hand_over_leadership(None, 1.0)
    assert member_ids(leader) == {"n0", "n1", "n2"}


async def test_one_change_at_a_time(cluster: Cluster) -> None:
    leader = await cluster.elect()
    first = asyncio.create_task(leader.add_member("n8", "127.0.0.1:1", CHANGE_TIMEOUT_S))
    await asyncio.sleep(0)  # the first change has begun: it now waits on Raft
    with pytest.raises(MembershipChangeInProgress) as refused:
        await leader.add_member("n9", "127.0.0.1:2", CHANGE_TIMEOUT_S)
    assert refused.value.definite and refused.value.code == "membership_change_in_progress"
    assert set(await first) == {"n0", "n1", "n2", "n8"}
    # Settled: the next change goes through.
    assert set(await leader.remove_member("n8", CHANGE_TIMEOUT_S)) == {"n0", "n1", "n2"}


async def test_refusals_that_need_no_raft_round(cluster: Cluster) -> None:
    leader = await cluster.elect()
    other_id, other_address = next(iter(leader.members().items()))
    with pytest.raises(LeaderRemovalRefused):
        await leader.remove_member(leader.node_id, CHANGE_TIMEOUT_S)
    with pytest.raises(MemberNotFoundError):
        await leader.remove_member("nobody", CHANGE_TIMEOUT_S)
    with pytest.raises(MemberExistsError):
        await leader.add_member(other_id, "127.0.0.1:3", CHANGE_TIMEOUT_S)
    with pytest.raises(MemberExistsError):
        await leader.add_member("n9", other_address, CHANGE_TIMEOUT_S)
    # The same member at the same address is an add already made: success, nothing changes.
    assert (await leader.add_member(other_id, other_address, CHANGE_TIMEOUT_S))[other_id] == \
        other_address
    assert member_ids(leader) == {"n0", "n1", "n2"}


async def test_membership_survives_a_restart_with_the_old_peers(cluster: Cluster) -> None:
    leader = await cluster.elect()
    await leader.add_member("n9", "127.0.0.1:1", CHANGE_TIMEOUT_S)
    follower = cluster.followers()[0]
    await wait_until(lambda: "n9" in follower.members(), 5.0, "the follower to apply the add")
    index = cluster.members.index(next(m for m in cluster.members if m[0] is follower))
    await follower.stop()
    # Restarted with --peers that do not list n9: the journal's membership entries win.
    machine = ListMachine()
    restarted = RaftNode(follower.config, machine)
    cluster.members[index] = (restarted, machine)
    await restarted.start()
    assert "n9" not in restarted.config.peers
    await wait_until(lambda: restarted.members().get("n9") == "127.0.0.1:1", 5.0,
                     "n9 back in the restarted node's membership")


async def test_leadership_goes_to_the_member_asked_for(cluster: Cluster) -> None:
    leader = await cluster.elect()
    target = cluster.followers()[0]
    await leader.propose(b"x", timeout_s=5.0)
    new_leader = await leader.hand_over_leadership(target.node_id, 10.0)
    assert new_leader == target.node_id
    await wait_until(lambda: target.is_leader, 5.0, "the target to lead")
    with pytest.raises(MemberNotFoundError):
        await target.hand_over_leadership("nobody", 1.0)
    # Back, without naming anyone: any caught-up follower.
    assert await target.transfer_leadership(10.0)
    await wait_until(lambda: not target.is_leader and target.leader_id is not None, 5.0,
                     "the leadership to move on")
