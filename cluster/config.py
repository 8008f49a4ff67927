"""Settings of one Raft node, with defaults measured on a 2-core machine (see docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RaftConfig"]

FSYNC_POLICIES = ("always", "never")


@dataclass(frozen=True)
class RaftConfig:
    node_id: str
    bind_address: str
    advertise_address: str
    peers: dict[str, str]
    data_dir: Path
    secret: str
    fsync: str = "always"
    metadata: dict[str, str] = field(default_factory=dict)
    # "loop": pysyncobj's sockets and ticks run on the asyncio event loop (one thread per node);
    # "thread": its own tick thread, sharing the GIL with the loop. See docs/architecture.md.
    tick_mode: str = "thread"
    # Record the journal's durable length after every sync (power-loss simulation, tests).
    sync_marker: bool = False

    # Election timing. A crashed leader is noticed when its connections drop, and the followers
    # stand within 50-350 ms of that (raft_engine), so the timeout only has to catch silent
    # failures (a paused process, a partition). It is long enough to ride out the ~0.6 s stalls
    # every replica takes when applying a command that touches a million messages (a purge):
    # 0.4-0.8 s caused spurious elections under the benchmark, 0.15-0.3 s six per run.
    election_timeout_min_s: float = 1.0
    election_timeout_max_s: float = 2.0
    heartbeat_period_s: float = 0.05
    # A leader that hears from no majority for this long steps down (pysyncobj's default is 30 s).
    leader_fallback_timeout_s: float = 2.5
    connection_timeout_s: float = 3.5
    connection_retry_s: float = 0.5

    # Group commit: proposals made while earlier entries are in flight are coalesced into one entry.
    max_batch_commands: int = 2048
    max_batch_bytes: int = 256 * 1024
    max_inflight_entries: int = 8
    max_pending_commands: int = 100_000
    max_pending_bytes: int = 256 * 1024 * 1024
    compress_min_bytes: int = 2048
    # The transport zlib-compresses every message again; entries are already lz4-compressed.
    transport_zlib_level: int = 0
    max_entry_bytes: int = 16 * 1024 * 1024

    # Compaction: snapshot when the journal holds this many bytes or entries (pysyncobj keeps
    # every journal entry in RAM too, so this bounds memory), or after this long.
    compaction_min_bytes: int = 128 * 1024 * 1024
    compaction_min_entries: int = 200_000
    compaction_min_time_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.secret:
            raise ValueError("a cluster secret is required (it authenticates the Raft port)")
        if self.tick_mode not in ("loop", "thread"):
            raise ValueError(f"tick_mode must be 'loop' or 'thread', not {self.tick_mode!r}")
        if self.fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, not {self.fsync!r}")
        if self.node_id in self.peers:
            raise ValueError(f"peers must not include this node ({self.node_id})")
        if self.advertise_address in self.peers.values():
            raise ValueError(f"peers must not include this node's address {self.advertise_address}")
        if not 3 * self.heartbeat_period_s < self.election_timeout_min_s:
            raise ValueError("election_timeout_min_s must exceed 3 heartbeat periods")
        if not self.election_timeout_min_s < self.election_timeout_max_s <= self.connection_timeout_s:
            raise ValueError("need election min < election max <= connection timeout")
        if self.max_batch_bytes > self.max_entry_bytes:
            raise ValueError("max_batch_bytes must not exceed max_entry_bytes")

    @property
    def raft_dir(self) -> Path:
        return self.data_dir / "raft"

    def address_of(self, node_id: str) -> str | None:
        if node_id == self.node_id:
            return self.advertise_address
        return self.peers.get(node_id)

    def node_id_of(self, address: str) -> str | None:
        if address == self.advertise_address:
            return self.node_id
        for node_id, peer_address in self.peers.items():
            if peer_address == address:
                return node_id
        return None
