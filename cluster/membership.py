"""Membership and leadership operations of a RaftNode: add or remove one voting member at a
time, and hand the leadership over. All run on the leader only.

Why leader only: pysyncobj would forward a follower's change to the leader, but the checks that
make its refusals meaningful (is the id taken, is it the leader being removed) need the leader's
own view, so a follower answers `not_leader` with the leader's id and the caller retries there.

What pysyncobj does with a removed node (0.3.17, read and tested): the leader drops it from its
membership and closes the connection the moment the removal entry is appended, so the removed
node never receives that entry. The members then refuse its connections (its address is no
longer a node they know), and a node connected to nobody never stands for election; so a
removed node left running, or restarted with its old --peers, cannot raise the cluster's term
or take the leadership. It just sits there as a follower without a leader.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TypeVar

from .config import RaftConfig
from .directory import encode_forget, encode_member
from .entry_codec import SYSTEM
from .errors import (
    LeaderRemovalRefused,
    LeadershipLost,
    MemberExistsError,
    MemberNotFoundError,
    MembershipChangeInProgress,
    NotLeaderError,
    ProposalError,
    ProposalRejected,
    ProposalTimeout,
    TransferRefused,
)
from .group_commit import EntryOutcome, GroupCommitter
from .raft_engine import RaftEngine

__all__ = ["MembershipMixin"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_POLL_PERIOD_S = 0.02
_TRANSFER_RETRY_S = 0.05
_ABORTED = "aborted"


class MembershipMixin:
    """Mixed into RaftNode, which provides the attributes and members declared here."""

    config: RaftConfig
    _engine: RaftEngine | None
    _ready: bool
    _membership_change: asyncio.Future[str] | None = None

    @property
    def node_id(self) -> str:
        raise NotImplementedError

    @property
    def is_leader(self) -> bool:
        raise NotImplementedError

    @property
    def leader_id(self) -> str | None:
        raise NotImplementedError

    def members(self) -> dict[str, str]:
        raise NotImplementedError

    def _require_committer(self) -> GroupCommitter:
        raise NotImplementedError

    async def transfer_leadership(self, timeout_s: float = 5.0) -> bool:
        """Hand leadership to the most caught-up follower; True once another node leads."""
        try:
            await self.hand_over_leadership(None, timeout_s)
        except ProposalError:
            return False
        return True

    async def hand_over_leadership(self, to_node_id: str | None, timeout_s: float) -> str:
        """Leader only: hand leadership to `to_node_id` (None: the most caught-up connected
        follower); returns the new leader's id once this node sees it.

        pysyncobj refuses while the target is not fully caught up, which under load is most
        of the time for a moment: the request is repeated until the deadline. Raises
        NotLeaderError, MemberNotFoundError (no such member), TransferRefused (no follower,
        or not the one asked for, was connected and caught up in time), ProposalTimeout (no
        new leader seen in time: the transfer may still happen)."""
        self._leader_engine()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        target = None if to_node_id is None else self._member_address(to_node_id)
        if not self.members():
            raise TransferRefused("this node is the only member", leader_id=self.node_id)
        while not await self._request_transfer(target, deadline - loop.time()):
            if loop.time() + _TRANSFER_RETRY_S >= deadline:
                raise TransferRefused(
                    "no follower is connected and fully caught up" if target is None else
                    f"{to_node_id} is not connected and fully caught up; try again shortly",
                    leader_id=self.leader_id)
            await asyncio.sleep(_TRANSFER_RETRY_S)
        while loop.time() < deadline:
            leader = self.leader_id
            if leader is not None and leader != self.node_id and (
                    to_node_id is None or leader == to_node_id):
                return leader
            await asyncio.sleep(_POLL_PERIOD_S)
        raise ProposalTimeout("no new leader was seen in time; the transfer may still happen",
                              leader_id=self.leader_id)

    async def _request_transfer(self, target: str | None, timeout_s: float) -> bool:
        engine = self._leader_engine()
        loop = asyncio.get_running_loop()
        sent: asyncio.Future[bool] = loop.create_future()

        def on_done(ok: bool) -> None:  # pysyncobj calls back at once, on the calling thread
            loop.call_soon_threadsafe(_settle, sent, ok)

        engine.transfer_leadership(on_done, target)
        try:
            return await asyncio.wait_for(sent, max(timeout_s, _POLL_PERIOD_S))
        except TimeoutError:
            raise ProposalTimeout("the leadership transfer was not confirmed in time",
                                  leader_id=self.leader_id) from None

    # -- membership (single-server changes, leader only) --------------------------------------
    async def add_member(self, node_id: str, raft_address: str, timeout_s: float) -> dict[str, str]:
        """Add a voting member; returns the members (this node included) once the change
        entry is applied here (at once if it already is a member at that address). Start the
        new node afterwards, with --peers = the members.

        The directory learns the id first (its own entry), so every replica can name the
        new member in /v1/cluster before the node itself starts and announces its URL."""
        self._leader_engine()
        members = {self.node_id: self.config.advertise_address, **self.members()}
        if members.get(node_id) == raft_address:
            return members  # already done (e.g. a retry after an unknown outcome)
        if node_id in members or raft_address in members.values():
            raise MemberExistsError(
                f"{node_id} at {raft_address} clashes with a member: "
                + ", ".join(f"{n}={a}" for n, a in sorted(members.items())))
        settled = self._begin_change()
        try:
            await self._require_committer().propose(
                SYSTEM, encode_member(node_id, raft_address), timeout_s)
            self._submit_change("add", raft_address, settled)
        except BaseException:
            _settle(settled, _ABORTED)  # nothing reached pysyncobj: no change in progress
            raise
        await self._await_change("add", raft_address, settled, timeout_s)
        return {self.node_id: self.config.advertise_address, **self.members()}

    async def remove_member(self, node_id: str, timeout_s: float) -> dict[str, str]:
        """Remove a voting member (never the leader itself: transfer leadership first)."""
        self._leader_engine()
        if node_id == self.node_id:
            raise LeaderRemovalRefused(
                f"{node_id} is the leader: transfer the leadership first, then remove it",
                leader_id=self.node_id)
        address = self._member_address(node_id)
        settled = self._begin_change()
        try:
            self._submit_change("remove", address, settled)
        except BaseException:
            _settle(settled, _ABORTED)
            raise
        await self._await_change("remove", address, settled, timeout_s)
        try:
            await self._require_committer().propose(SYSTEM, encode_forget(node_id), timeout_s)
        except ProposalError as error:
            # The removal itself is done; a stale directory entry is hidden (not a member).
            log.warning("removed %s, but could not drop it from the directory: %s",
                        node_id, error)
        return {self.node_id: self.config.advertise_address, **self.members()}

    def _leader_engine(self) -> RaftEngine:
        engine = self._engine
        if engine is None or not self._ready:
            raise NotLeaderError("this node is still starting", leader_id=self.leader_id)
        if not self.is_leader:
            raise NotLeaderError("membership and leadership changes are made by the leader",
                                 leader_id=self.leader_id)
        return engine

    def _member_address(self, node_id: str) -> str:
        address = self.members().get(node_id)
        if address is None:
            raise MemberNotFoundError(f"no other member is called {node_id!r}")
        return address

    def _begin_change(self) -> asyncio.Future[str]:
        """One change at a time. pysyncobj 0.3.17 does not enforce it (its "previous change
        not applied" check reads an index it never sets), so the leader does: the change
        counts as in progress until pysyncobj settles its entry (applied or discarded), even
        past a caller's timeout. A new leader refuses changes until its first entry is
        applied, and with it every entry of earlier terms, so this local guard suffices."""
        busy = self._membership_change
        if busy is not None and not busy.done():
            raise MembershipChangeInProgress(
                "another membership change is not applied yet; retry once it is",
                leader_id=self.leader_id)
        settled: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._membership_change = settled
        return settled

    def _submit_change(self, kind: str, address: str, settled: asyncio.Future[str]) -> None:
        engine = self._leader_engine()
        loop = asyncio.get_running_loop()

        def on_settled(outcome: str) -> None:  # pysyncobj's thread, or this one (queue full)
            loop.call_soon_threadsafe(_settle, settled, outcome)

        if kind == "add":
            engine.add_member(address, on_settled)
        else:
            engine.remove_member(address, on_settled)

    async def _await_change(self, kind: str, address: str, settled: asyncio.Future[str],
                            timeout_s: float) -> None:
        try:
            # Shielded: the future must outlive a timeout, it is the in-progress marker.
            outcome = await asyncio.wait_for(asyncio.shield(settled), timeout_s)
        except TimeoutError:
            raise ProposalTimeout(f"the {kind} of {address} was not applied in time; it may "
                                  "still be", leader_id=self.leader_id) from None
        if outcome == EntryOutcome.APPLIED:
            log.info("membership: %s of %s applied", kind, address)
            return
        if outcome == EntryOutcome.REJECTED:
            raise MembershipChangeInProgress(
                "Raft refused the change: this leader's first entry is not applied yet (or the "
                "node is already in that state); retry shortly", leader_id=self.leader_id)
        if outcome == EntryOutcome.RETRY:
            if not self.is_leader:
                raise NotLeaderError("leadership moved before the change was made",
                                     leader_id=self.leader_id)
            raise ProposalRejected(f"Raft did not append the {kind} of {address}",
                                   leader_id=self.leader_id)
        raise LeadershipLost(f"leadership changed during the {kind} of {address}; it may have "
                             "been made", leader_id=self.leader_id)


def _settle(future: asyncio.Future[_T], value: _T) -> None:
    if not future.done():  # e.g. cancelled by wait_for
        future.set_result(value)
