"""Draining a node before it stops (a Kubernetes preStop hook, `raftmq drain`).

A drained node can stop without costing the cluster its availability or an election timeout:
1. it stops taking new work (the HTTP layer refuses new writes and WebSockets, and readiness
   fails, so clients and the Service go elsewhere);
2. if it leads, it hands the leadership to a caught-up follower;
3. it waits until the other members hold a quorum without it: a majority of the whole
   membership, not counting this node, is the leader plus followers connected to the leader
   and holding every entry that was committed when the wait began. Then nothing committed
   depends on this node's copy, and the rest can commit without it.

The leader's view decides step 3 (only the leader knows its followers' progress), so a
follower asks the leader's `GET /v1/cluster`. A node already removed from the membership is
drained as soon as the leader's view leaves it out. Draining is idempotent; concurrent requests
share one attempt. It never undoes itself: the pod is about to stop (`resume` is for operators
who drained by hand).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from raftmq.cluster import ProposalError

__all__ = [
    "DrainReport",
    "DrainableNode",
    "Drainer",
    "FetchView",
    "LeaderView",
    "PeerProgress",
    "QuorumVerdict",
    "parse_leader_view",
    "quorum_without",
]

log = logging.getLogger(__name__)

POLL_PERIOD_S = 0.1
VIEW_TIMEOUT_S = 1.0
# Each hand-off attempt is short: the loop notices a new leader or retries with fresh state.
HANDOFF_ATTEMPT_S = 3.0
# The attempt ends itself at its deadline; a caller waits this much longer for its report.
REPORT_MARGIN_S = 1.0

FetchView = Callable[[str, float], Awaitable[Mapping[str, object] | None]]


class DrainableNode(Protocol):
    """What the drain needs of a RaftNode."""

    @property
    def node_id(self) -> str: ...

    @property
    def is_leader(self) -> bool: ...

    @property
    def leader_id(self) -> str | None: ...

    def members(self) -> dict[str, str]: ...

    def node_metadata(self) -> dict[str, dict[str, str]]: ...

    async def hand_over_leadership(self, to_node_id: str | None, timeout_s: float) -> str: ...


@dataclass(frozen=True)
class PeerProgress:
    node_id: str
    connected: bool
    match_index: int | None


@dataclass(frozen=True)
class LeaderView:
    """A leader's own `GET /v1/cluster`: its followers' progress as it sees them."""

    leader_id: str
    commit_index: int
    peers: tuple[PeerProgress, ...]


def parse_leader_view(document: Mapping[str, object] | None) -> LeaderView | None:
    """The view if `document` comes from a node that says it leads; None otherwise."""
    if document is None or document.get("role") != "leader":
        return None
    leader_id, commit_index, peers = (document.get("node_id"), document.get("commit_index"),
                                      document.get("peers"))
    if not isinstance(leader_id, str) or type(commit_index) is not int or not isinstance(peers, list):
        return None
    progress: list[PeerProgress] = []
    for peer in peers:
        if not isinstance(peer, Mapping) or not isinstance(peer.get("node_id"), str):
            return None
        match_index = peer.get("match_index")
        progress.append(PeerProgress(str(peer["node_id"]), peer.get("connected") is True,
                                     match_index if type(match_index) is int else None))
    return LeaderView(leader_id, commit_index, tuple(progress))


@dataclass(frozen=True)
class QuorumVerdict:
    held: bool
    reason: str


def quorum_without(node_id: str, view: LeaderView, caught_up_index: int) -> QuorumVerdict:
    """Whether the members other than `node_id` hold a quorum of the whole membership."""
    if view.leader_id == node_id:
        return QuorumVerdict(False, f"{node_id} still leads")
    members = {view.leader_id, *(peer.node_id for peer in view.peers)}
    needed = len(members) // 2 + 1
    healthy = [view.leader_id]
    lagging: list[str] = []
    for peer in view.peers:
        if peer.node_id == node_id:
            continue
        if peer.connected and peer.match_index is not None and peer.match_index >= caught_up_index:
            healthy.append(peer.node_id)
        else:
            state = "disconnected" if not peer.connected else f"at index {peer.match_index}"
            lagging.append(f"{peer.node_id} ({state})")
    summary = (f"without {node_id}, {len(healthy)} of {len(members)} members ("
               f"{', '.join(healthy)}) hold every entry up to index {caught_up_index} with leader "
               f"{view.leader_id}; a quorum is {needed}")
    if len(healthy) >= needed:
        return QuorumVerdict(True, summary)
    return QuorumVerdict(False, f"{summary} (behind: {', '.join(lagging) or 'none'})")


@dataclass(frozen=True)
class DrainReport:
    drained: bool
    detail: str
    leader_id: str | None


class Drainer:
    """The draining state of one node, and the drain itself."""

    def __init__(self, node: DrainableNode, fetch_view: FetchView, *,
                 poll_period_s: float = POLL_PERIOD_S) -> None:
        self._node = node
        self._fetch = fetch_view
        self._poll_period_s = poll_period_s
        self._task: asyncio.Task[DrainReport] | None = None
        self.draining = False

    def refuse_new_work(self) -> None:
        """Step 1 alone, at once (`drain` does it too)."""
        if not self.draining:
            log.info("draining: refusing new work")
        self.draining = True

    async def drain(self, timeout_s: float) -> DrainReport:
        """Start draining (or join the drain in progress) and wait up to `timeout_s`."""
        self.refuse_new_work()
        task = self._task
        if task is None or task.done():
            task = self._task = asyncio.create_task(self._run(timeout_s), name="raftmq-drain")
        try:
            report = await asyncio.wait_for(asyncio.shield(task), timeout_s + REPORT_MARGIN_S)
        except TimeoutError:
            report = DrainReport(False, f"the drain did not finish within {timeout_s:g} s",
                                 self._node.leader_id)
        log.log(logging.INFO if report.drained else logging.WARNING, "drain %s: %s",
                "done" if report.drained else "incomplete", report.detail)
        return report

    async def resume(self) -> None:
        """Take new work again (an operator's undo of a drain by hand)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.draining:
            log.info("drain cancelled: taking new work again")
        self.draining = False

    async def _run(self, timeout_s: float) -> DrainReport:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        caught_up_index: int | None = None
        reason = "not started"
        while True:
            remaining_s = deadline - loop.time()
            if self._node.is_leader:
                if not self._node.members():
                    return DrainReport(False, "this node is the only member: the cluster "
                                       "cannot go on without it", self._node.node_id)
                reason = await self._hand_off(min(remaining_s, HANDOFF_ATTEMPT_S))
            else:
                view = await self._leader_view(min(remaining_s, VIEW_TIMEOUT_S))
                if isinstance(view, str):
                    reason = view
                else:
                    if caught_up_index is None:
                        caught_up_index = view.commit_index
                    verdict = quorum_without(self._node.node_id, view, caught_up_index)
                    if verdict.held:
                        return DrainReport(True, verdict.reason, view.leader_id)
                    reason = verdict.reason
            if loop.time() + self._poll_period_s >= deadline:
                return DrainReport(False, f"not drained within {timeout_s:g} s: {reason}",
                                   self._node.leader_id)
            await asyncio.sleep(self._poll_period_s)

    async def _hand_off(self, timeout_s: float) -> str:
        try:
            leader = await self._node.hand_over_leadership(None, max(timeout_s, self._poll_period_s))
        except ProposalError as error:
            return f"leadership hand-off: {error}"
        log.info("drain: handed the leadership to %s", leader)
        return f"handed the leadership to {leader}"

    async def _leader_view(self, timeout_s: float) -> LeaderView | str:
        """The leader's view, found through the leader we know or else any other member."""
        node_id, leader_id = self._node.node_id, self._node.leader_id
        metadata = self._node.node_metadata()
        candidates = [leader_id] if leader_id is not None and leader_id != node_id else []
        candidates += sorted(other for other in metadata if other not in (node_id, leader_id))
        urls = [url for url in (metadata.get(other, {}).get("http_url") for other in candidates)
                if url]
        if not urls:
            return "no other member has announced its HTTP address"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        tried: set[str] = set()
        for url in urls:
            while url and url not in tried and loop.time() < deadline:
                tried.add(url)
                document = await self._fetch(url, max(0.05, deadline - loop.time()))
                view = parse_leader_view(document)
                if view is not None:
                    return view
                hint = None if document is None else document.get("leader_url")
                url = hint if isinstance(hint, str) else ""
        return f"no leader answered with its view (asked {', '.join(sorted(tried)) or 'nobody'})"
