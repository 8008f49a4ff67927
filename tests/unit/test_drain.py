"""The drain (raftmq.broker.drain): the quorum rule, the leader's view, and the Drainer on fake
nodes and on three real Raft nodes in one process (leader views fetched without HTTP)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
import pytest_asyncio

from raftmq.broker.api.views import cluster_view
from raftmq.broker.drain import (
    Drainer,
    LeaderView,
    PeerProgress,
    parse_leader_view,
    quorum_without,
)
from raftmq.cluster import RaftNode, TransferRefused
from tests.cluster.raft_fixtures import make_cluster, make_configs, wait_until

pytestmark = pytest.mark.timeout(120)


def view(leader: str, commit: int, *peers: tuple[str, bool, int | None]) -> LeaderView:
    return LeaderView(leader, commit, tuple(PeerProgress(*peer) for peer in peers))


# -- the quorum rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(("leader_view", "held"), [
    # 3 members: the leader and the other follower must both be there.
    (view("n1", 10, ("n2", True, 10), ("n3", True, 10)), True),
    (view("n1", 10, ("n2", True, 10), ("n3", False, 10)), True),  # n3 is the one leaving
    (view("n1", 10, ("n2", False, 10), ("n3", True, 10)), False),
    (view("n1", 10, ("n2", True, 9), ("n3", True, 10)), False),
    (view("n1", 10, ("n2", True, None), ("n3", True, 10)), False),
    # 5 members: 3 without n3.
    (view("n1", 5, ("n2", True, 5), ("n3", True, 5), ("n4", False, 0), ("n5", True, 7)), True),
    (view("n1", 5, ("n2", True, 5), ("n3", True, 5), ("n4", False, 0), ("n5", True, 4)), False),
    # Already removed: the membership the leader has is what counts.
    (view("n1", 10, ("n2", True, 10)), True),
    (view("n1", 10, ("n2", False, 10)), False),
])
def test_quorum_without(leader_view: LeaderView, held: bool) -> None:
    verdict = quorum_without("n3", leader_view, caught_up_index=leader_view.commit_index)
    assert verdict.held is held, verdict.reason
    assert "without n3" in verdict.reason


def test_quorum_never_held_by_a_node_that_still_leads() -> None:
    verdict = quorum_without("n1", view("n1", 3, ("n2", True, 3), ("n3", True, 3)), 3)
    assert not verdict.held and verdict.reason == "n1 still leads"


def test_quorum_reason_names_the_laggards() -> None:
    verdict = quorum_without("n3", view("n1", 8, ("n2", True, 6), ("n3", True, 8)), 8)
    assert "behind: n2 (at index 6)" in verdict.reason


def test_parse_leader_view() -> None:
    document = {"role": "leader", "node_id": "n1", "commit_index": 7, "peers": [
        {"node_id": "n2", "connected": True, "match_index": 7},
        {"node_id": "n3", "connected": False, "match_index": None}]}
    assert parse_leader_view(document) == view("n1", 7, ("n2", True, 7), ("n3", False, None))
    assert parse_leader_view({**document, "role": "follower"}) is None
    assert parse_leader_view(None) is None
    for broken in ({"commit_index": "7"}, {"peers": "n2"}, {"peers": [{"connected": True}]},
                   {"node_id": None}, {"commit_index": True}):
        assert parse_leader_view({**document, **broken}) is None, broken


# -- the Drainer on a fake node -----------------------------------------------------------------


@dataclasses.dataclass
class FakeNode:
    node_id: str = "n3"
    is_leader: bool = False
    leader_id: str | None = "n1"
    others: tuple[str, ...] = ("n1", "n2")
    handoff_refusals: int = 0
    handoffs: int = 0

    def members(self) -> dict[str, str]:
        return {other: f"{other}:7000" for other in self.others}

    def node_metadata(self) -> dict[str, dict[str, str]]:
        return {n: {"http_url": f"http://{n}"} for n in (self.node_id, *self.others)}

    async def hand_over_leadership(self, to_node_id: str | None, timeout_s: float) -> str:
        assert to_node_id is None and timeout_s > 0
        self.handoffs += 1
        if self.handoffs <= self.handoff_refusals:
            raise TransferRefused("no follower is caught up", leader_id=self.node_id)
        self.is_leader, self.leader_id = False, "n2"
        return "n2"


def leader_document(leader: str, commit: int, peers: Mapping[str, tuple[bool, int]]) -> dict[str, object]:
    return {"role": "leader", "node_id": leader, "commit_index": commit,
            "peers": [{"node_id": n, "connected": c, "match_index": m} for n, (c, m) in peers.items()]}


class FakeViews:
    """Answers `GET /v1/cluster` by URL from a script; records what was asked."""

    def __init__(self, by_url: dict[str, list[Mapping[str, object] | None]]) -> None:
        self.by_url = by_url
        self.asked: list[str] = []

    async def __call__(self, url: str, timeout_s: float) -> Mapping[str, object] | None:
        assert timeout_s > 0
        self.asked.append(url)
        answers = self.by_url.get(url, [None])
        return answers.pop(0) if len(answers) > 1 else answers[0]


async def test_follower_drains_once_the_other_follower_caught_up() -> None:
    views = FakeViews({"http://n1": [
        leader_document("n1", 10, {"n2": (True, 8), "n3": (True, 10)}),
        leader_document("n1", 12, {"n2": (True, 9), "n3": (True, 12)}),
        # Caught up to 10, the commit index when the wait began, though not to 12 yet.
        leader_document("n1", 12, {"n2": (True, 10), "n3": (True, 12)}),
    ]})
    drainer = Drainer(FakeNode(), views, poll_period_s=0.001)
    report = await drainer.drain(5.0)
    assert report.drained and report.leader_id == "n1", report
    assert "up to index 10" in report.detail
    assert views.asked == ["http://n1"] * 3
    assert drainer.draining  # stays draining: the node is about to stop


async def test_leader_hands_off_first_then_asks_the_new_leader() -> None:
    node = FakeNode(is_leader=True, leader_id="n3", handoff_refusals=2)
    views = FakeViews({"http://n2": [leader_document("n2", 4, {"n1": (True, 4), "n3": (True, 4)})]})
    report = await Drainer(node, views, poll_period_s=0.001).drain(5.0)
    assert report.drained and report.leader_id == "n2"
    assert node.handoffs == 3 and views.asked == ["http://n2"]


async def test_an_unknown_leader_is_found_through_another_member() -> None:
    node = FakeNode(leader_id=None)
    views = FakeViews({"http://n1": [{"role": "follower", "leader_url": "http://n2"}],
                       "http://n2": [leader_document("n2", 3, {"n1": (True, 3)})]})
    report = await Drainer(node, views, poll_period_s=0.001).drain(5.0)
    assert report.drained, report  # n3 was removed already: n1 and n2 are the membership
    assert views.asked == ["http://n1", "http://n2"]


async def test_drain_gives_up_at_its_timeout_with_the_reason() -> None:
    views = FakeViews({"http://n1": [leader_document("n1", 10, {"n2": (False, 3), "n3": (True, 10)})]})
    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await Drainer(FakeNode(), views, poll_period_s=0.01).drain(0.3)
    assert not report.drained
    assert report.detail.startswith("not drained within 0.3 s") and "n2 (disconnected)" in report.detail
    assert loop.time() - started < 2.0


async def test_lone_member_cannot_drain() -> None:
    node = FakeNode(is_leader=True, leader_id="n3", others=())
    report = await Drainer(node, FakeViews({})).drain(5.0)
    assert not report.drained and "only member" in report.detail


async def test_concurrent_drains_share_one_attempt_and_resume_cancels() -> None:
    views = FakeViews({"http://n1": [None]})  # the leader never answers
    drainer = Drainer(FakeNode(), views, poll_period_s=0.01)
    first = asyncio.create_task(drainer.drain(30.0))
    await wait_until(lambda: bool(views.asked), 5.0, "the drain to ask the leader")
    second = await drainer.drain(0.05)  # joins, and gives up waiting on its own deadline
    assert not second.drained and "did not finish within 0.05 s" in second.detail
    assert not first.done()
    await drainer.resume()
    assert not drainer.draining
    # The first caller's wait ends too: its attempt was cancelled.
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(first, 5.0)


# -- the Drainer on real Raft nodes --------------------------------------------------------------


@pytest_asyncio.fixture
async def raft_cluster(tmp_path: Path) -> AsyncIterator[list[RaftNode]]:
    configs = [dataclasses.replace(config, metadata={"http_url": f"raft://{config.node_id}"})
               for config in make_configs(tmp_path, 3)]
    members = await make_cluster(configs)
    nodes = [node for node, _ in members]
    try:
        await wait_until(lambda: sum(n.is_leader for n in nodes) == 1
                         and all(n.leader_id for n in nodes)
                         and all(len(n.node_metadata()[n.node_id]) > 1 for n in nodes),
                         15.0, "a leader and every node's URL announced")
        yield nodes
    finally:
        await asyncio.gather(*(node.stop() for node in nodes))


def in_process_views(nodes: list[RaftNode]) -> FakeViews:
    class Views(FakeViews):
        async def __call__(self, url: str, timeout_s: float) -> Mapping[str, object] | None:
            self.asked.append(url)
            node = next(n for n in nodes if url == f"raft://{n.node_id}")
            return cluster_view(node.status(), node.node_metadata())

    return Views({})


async def test_draining_the_leader_moves_the_leadership(raft_cluster: list[RaftNode]) -> None:
    leader = next(node for node in raft_cluster if node.is_leader)
    for index in range(20):
        await leader.propose(f"before-{index}".encode())
    views = in_process_views(raft_cluster)
    report = await Drainer(leader, views).drain(15.0)
    assert report.drained, report.detail
    assert not leader.is_leader and report.leader_id not in (None, leader.node_id)
    new_leader = next(node for node in raft_cluster if node.node_id == report.leader_id)
    # The others commit without the drained node's vote: it could stop now.
    await new_leader.propose(b"after the drain")


async def test_draining_a_follower_keeps_the_leader(raft_cluster: list[RaftNode]) -> None:
    leader = next(node for node in raft_cluster if node.is_leader)
    follower = next(node for node in raft_cluster if not node.is_leader)
    report = await Drainer(follower, in_process_views(raft_cluster)).drain(15.0)
    assert report.drained and report.leader_id == leader.node_id, report.detail
    assert leader.is_leader


async def test_drain_waits_while_the_other_follower_is_down(raft_cluster: list[RaftNode]) -> None:
    leader = next(node for node in raft_cluster if node.is_leader)
    leaving, down = [node for node in raft_cluster if not node.is_leader]
    await down.stop()
    await wait_until(lambda: not any(p.connected for p in leader.status().peers
                                     if p.node_id == down.node_id), 10.0, "the leader to notice")
    report = await Drainer(leaving, in_process_views(raft_cluster)).drain(1.0)
    assert not report.drained
    assert f"{down.node_id} (disconnected)" in report.detail
