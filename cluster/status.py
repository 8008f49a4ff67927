"""A point-in-time view of one node's Raft state, for /v1/cluster, metrics and tests."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["ClusterStatus", "PeerStatus"]


@dataclass(frozen=True)
class PeerStatus:
    node_id: str
    address: str
    connected: bool
    match_index: int | None


@dataclass(frozen=True)
class ClusterStatus:
    node_id: str
    role: str
    term: int
    leader_id: str | None
    commit_index: int
    applied_index: int
    log_entries: int
    has_quorum: bool
    peers: tuple[PeerStatus, ...]
    ready: bool
    log_truncations: int
    snapshots_written: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)
