"""Replication failures, each saying whether the command may have been applied anyway.

`definite=True` means the command certainly was not applied (safe to retry as is);
`definite=False` means it may have been applied: only an idempotent retry is safe.
"""

from __future__ import annotations

__all__ = [
    "LeaderRemovalRefused",
    "LeadershipLost",
    "MemberExistsError",
    "MemberNotFoundError",
    "MembershipChangeInProgress",
    "NoLeaderError",
    "NodeStoppedError",
    "NotLeaderError",
    "OverloadedError",
    "ProposalError",
    "ProposalRejected",
    "ProposalTimeout",
    "TransferRefused",
]


class ProposalError(Exception):
    code = "replication_error"
    definite = False

    def __init__(self, message: str, *, leader_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.leader_id = leader_id


class NoLeaderError(ProposalError):
    """No leader was known before the deadline; nothing was submitted to Raft."""

    code = "no_leader"
    definite = True


class OverloadedError(ProposalError):
    """The local proposal queue is full; nothing was submitted to Raft."""

    code = "overloaded"
    definite = True


class ProposalRejected(ProposalError):
    """Raft refused the entry before appending it (discarded at that index, or not leader)."""

    code = "proposal_rejected"
    definite = True


class ProposalTimeout(ProposalError):
    """The deadline passed while the entry was in flight: it may still commit."""

    code = "timeout"
    definite = False


class LeadershipLost(ProposalError):
    """The leader changed while the entry was in flight: it may have been committed."""

    code = "leadership_lost"
    definite = False


class NodeStoppedError(ProposalError):
    """The node stopped while the entry was in flight."""

    code = "node_stopped"
    definite = False


# -- cluster operations (membership, leadership) --------------------------------------------------


class NotLeaderError(ProposalError):
    """The operation runs on the leader only (membership, leadership transfer); `leader_id`
    names the leader to ask instead, if one is known. Nothing was done."""

    code = "not_leader"
    definite = True


class MembershipChangeInProgress(ProposalError):
    """Raft refused the change: an earlier change (or the new leader's first entry) is not yet
    applied. Nothing was done; retry once the earlier change has settled."""

    code = "membership_change_in_progress"
    definite = True


class MemberExistsError(ProposalError):
    """The node id or Raft address already belongs to a member."""

    code = "already_member"
    definite = True


class MemberNotFoundError(ProposalError):
    """No member has this node id."""

    code = "member_not_found"
    definite = True


class LeaderRemovalRefused(ProposalError):
    """The leader is not removed by itself: transfer the leadership first, then remove it."""

    code = "cannot_remove_leader"
    definite = True


class TransferRefused(ProposalError):
    """No follower is connected and fully caught up (or the one asked for is not)."""

    code = "transfer_refused"
    definite = True

