"""Replication failures, each saying whether the command may have been applied anyway.

`definite=True` means the command certainly was not applied (safe to retry as is);
`definite=False` means it may have been applied: only an idempotent retry is safe.
"""

from __future__ import annotations

__all__ = [
    "LeadershipLost",
    "NoLeaderError",
    "NodeStoppedError",
    "OverloadedError",
    "ProposalError",
    "ProposalRejected",
    "ProposalTimeout",
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
