"""raftmq.cluster: Raft replication of an opaque state machine (on top of pysyncobj)."""

from .config import RaftConfig
from .errors import (
    LeadershipLost,
    NodeStoppedError,
    NoLeaderError,
    OverloadedError,
    ProposalError,
    ProposalRejected,
    ProposalTimeout,
)
from .group_commit import Applied
from .node import ApplyFailure, RaftNode
from .state_machine import StateMachine
from .status import ClusterStatus, PeerStatus

__all__ = [
    "Applied",
    "ApplyFailure",
    "ClusterStatus",
    "LeadershipLost",
    "NoLeaderError",
    "NodeStoppedError",
    "OverloadedError",
    "PeerStatus",
    "ProposalError",
    "ProposalRejected",
    "ProposalTimeout",
    "RaftConfig",
    "RaftNode",
    "StateMachine",
]
