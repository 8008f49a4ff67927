"""raftmq.cluster: Raft replication of an opaque state machine (on top of pysyncobj)."""

from .config import RaftConfig
from .errors import (
    LeaderRemovalRefused,
    LeadershipLost,
    MemberExistsError,
    MemberNotFoundError,
    MembershipChangeInProgress,
    NodeStoppedError,
    NoLeaderError,
    NotLeaderError,
    OverloadedError,
    ProposalError,
    ProposalRejected,
    ProposalTimeout,
    TransferRefused,
)
from .group_commit import Applied
from .node import ApplyFailure, RaftNode
from .state_machine import StateMachine
from .status import ClusterStatus, PeerStatus

__all__ = [
    "Applied",
    "ApplyFailure",
    "ClusterStatus",
    "LeaderRemovalRefused",
    "LeadershipLost",
    "MemberExistsError",
    "MemberNotFoundError",
    "MembershipChangeInProgress",
    "NoLeaderError",
    "NodeStoppedError",
    "NotLeaderError",
    "OverloadedError",
    "PeerStatus",
    "ProposalError",
    "ProposalRejected",
    "ProposalTimeout",
    "RaftConfig",
    "RaftNode",
    "StateMachine",
    "TransferRefused",
]
