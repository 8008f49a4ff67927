"""RaftNode: the asyncio face of one Raft replica.

Everything above this module sees `await propose(command) -> Applied`, role/leader/term,
commit and applied index, `wait_applied(index)` and a lock for reading the state machine.
Raft itself runs on pysyncobj's thread (raft_engine); results cross to the event loop with
`call_soon_threadsafe`, and the loop never blocks on Raft.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

from .config import RaftConfig
from .directory import NodeDirectory, encode_announce
from .entry_codec import APP, SYSTEM, EntryDecodeError, decode_entry
from .group_commit import Applied, GroupCommitLimits, GroupCommitter
from .membership import MembershipMixin
from .raft_engine import RaftEngine, Role
from .snapshot_file import SnapshotMeta, read_snapshot_file
from .state_machine import StateMachine
from .status import ClusterStatus, PeerStatus

__all__ = ["ApplyFailure", "RaftNode"]

log = logging.getLogger(__name__)

_WATCH_PERIOD_S = 0.02


class ApplyFailure:
    """The result of a command the cluster layer could not hand to the state machine."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"ApplyFailure({self.reason!r})"


class RaftNode(MembershipMixin):
    def __init__(self, config: RaftConfig, state_machine: StateMachine) -> None:
        self.config = config
        self._state_machine = state_machine
        self._lock = threading.Lock()
        self._directory = NodeDirectory()
        self._engine: RaftEngine | None = None
        self._committer: GroupCommitter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._applied_index = 0
        self._notify_scheduled = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._abandoned_waiters = 0  # timed-out entries still in the heap (an upper bound)
        self._waiter_ids = itertools.count()
        self._listeners: list[Callable[[int], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = False
        self._compaction_requested_at = 0.0

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        snapshot_path = self.config.raft_dir / "snapshot.bin"
        if snapshot_path.exists():
            read_snapshot_file(snapshot_path)  # refuse to start on a corrupt snapshot
        engine = RaftEngine(self.config, self._apply_entry, self._capture, self._restore)
        target_index = self._replay_target(engine)
        self._engine = engine
        if self.config.tick_mode == "loop":
            engine.start()
        else:
            await asyncio.to_thread(engine.start)
        c = self.config
        limits = GroupCommitLimits(
            max_batch_commands=c.max_batch_commands, max_batch_bytes=c.max_batch_bytes,
            max_inflight_entries=c.max_inflight_entries, max_pending_commands=c.max_pending_commands,
            max_pending_bytes=c.max_pending_bytes, compress_min_bytes=c.compress_min_bytes,
            max_command_bytes=c.max_entry_bytes - 1024)
        self._committer = GroupCommitter(self._loop, engine.submit, limits, lambda: self.leader_id)
        engine.on_step_down = self._stepped_down
        while not await self.wait_applied(target_index, 0.1):
            pass  # replaying the journal: the apply path wakes us; the timeout covers no-ops
        self._ready = True
        log.info("node %s replayed its log up to index %d", c.node_id, engine.applied_index)
        self._tasks = [asyncio.create_task(self._watch()), asyncio.create_task(self._announce())]

    def _stepped_down(self) -> None:  # the engine's thread
        def abandon() -> None:
            if self._committer is not None:
                self._committer.abandon_inflight(
                    "this node stopped leading with the entry in flight; it may still commit")

        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed: nothing waits
                loop.call_soon_threadsafe(abandon)

    @staticmethod
    def _replay_target(engine: RaftEngine) -> int:
        """The index the local replica can reach from its own disk, without any peer."""
        journal = engine.journal
        last_index = journal[-1][1] if len(journal) else 0
        target = min(journal.getRaftCommitIndex(), last_index)
        if engine.snapshot_path.exists():
            meta, _ = read_snapshot_file(engine.snapshot_path)
            target = max(target, meta.index)
        return target

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._committer is not None:
            self._committer.stop()
        if self._engine is not None:
            if self.config.tick_mode == "loop":
                self._engine.stop()
            else:
                await asyncio.to_thread(self._engine.stop)
        for _, _, future in self._waiters:
            if not future.done():
                future.cancel()

    # -- writes ----------------------------------------------------------------------------
    async def propose(self, command: bytes, timeout_s: float = 5.0) -> Applied:
        return await self._require_committer().propose(APP, command, timeout_s)

    def _require_committer(self) -> GroupCommitter:
        if self._committer is None:
            raise RuntimeError("RaftNode.start() has not completed")
        return self._committer

    # -- the apply path (pysyncobj's thread) ------------------------------------------------
    def _apply_entry(self, entry: bytes, index: int) -> tuple[int, list[object] | None]:
        try:
            commands = decode_entry(entry, max_entry_bytes=self.config.max_entry_bytes)
        except EntryDecodeError as error:
            log.error("entry %d is undecodable (%s); skipped on every replica alike", index, error)
            commands = None
        results: list[object] | None = None
        with self._lock:
            # Set under the lock: a reader holding it sees the state and its index together.
            if commands is not None:
                results = [self._apply_one(kind, command) for kind, command in commands]
            self._applied_index = index
        loop = self._loop
        if loop is not None and not self._notify_scheduled:
            self._notify_scheduled = True
            loop.call_soon_threadsafe(self._notify_applied)
        return index, results

    def _apply_one(self, kind: int, command: bytes) -> object:
        # Never let an exception escape: pysyncobj would retry the entry forever on every node.
        try:
            if kind == APP:
                return self._state_machine.apply(command)
            if kind == SYSTEM:
                return self._directory.apply(command)
            return ApplyFailure(f"unknown command kind {kind}")
        except Exception as error:
            log.exception("state machine raised while applying a command")
            return ApplyFailure(f"internal error: {type(error).__name__}")

    def _capture(self) -> tuple[bytes, dict[str, dict[str, str]]]:
        # Runs in the forked snapshot child, which has only this thread: no lock needed or safe.
        return self._state_machine.snapshot(), self._directory.snapshot()

    def _restore(self, meta: SnapshotMeta, blob: bytes) -> None:
        with self._lock:
            self._state_machine.restore(blob)
            self._directory.restore(meta.directory)
            self._applied_index = meta.index

    # -- waiting for the local replica ------------------------------------------------------
    def _notify_applied(self) -> None:
        self._notify_scheduled = False
        index = self.applied_index
        while self._waiters and self._waiters[0][0] <= index:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
        for listener in list(self._listeners):
            try:
                listener(index)
            except Exception:
                log.exception("apply listener failed")
        if self._committer is not None:
            self._committer.kick()

    async def wait_applied(self, index: int, timeout_s: float) -> bool:
        if self.applied_index >= index:
            return True
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        heapq.heappush(self._waiters, (index, next(self._waiter_ids), future))
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            self._drop_abandoned_waiters()
            return self.applied_index >= index
        return True

    def _drop_abandoned_waiters(self) -> None:
        # A waiter for an index that never comes (a client asking for a far-off index) would
        # otherwise stay in the heap forever; rebuilding once half are abandoned keeps the
        # heap bounded by the live waiters at O(1) amortised cost per timeout.
        self._abandoned_waiters += 1
        if self._abandoned_waiters * 2 > len(self._waiters):
            self._waiters = [entry for entry in self._waiters if not entry[2].done()]
            heapq.heapify(self._waiters)
            self._abandoned_waiters = 0

    def add_apply_listener(self, callback: Callable[[int], None]) -> None:
        self._listeners.append(callback)

    def state_lock(self) -> threading.Lock:
        return self._lock

    def snapshot_with_index(self) -> tuple[int, bytes]:
        """The state machine's snapshot and the applied index it reflects, taken together.

        Blocks apply while it encodes: call it off the event loop. Entries applied after
        `_applied_index` but counted by the engine are no-ops or membership changes (anything
        for the state machine goes through `_apply_entry` and this lock), so the larger index
        of the two is the one this state is at."""
        with self._lock:
            engine_index = 0 if self._engine is None else self._engine.applied_index
            return max(self._applied_index, engine_index), self._state_machine.snapshot()

    # -- background duties ------------------------------------------------------------------
    async def _watch(self) -> None:
        """Notice leader changes (to release queued proposals), give up on lost entries,
        trigger compaction by journal size, and catch no-op entries for waiters."""
        last_leader: str | None = None
        last_reap = time.monotonic()
        while True:
            await asyncio.sleep(_WATCH_PERIOD_S)
            committer = self._require_committer()
            leader = self.leader_id
            if leader != last_leader:
                last_leader = leader
                log.info("leader is now %s (term %d)", leader, self.term)
                committer.kick()
            now = time.monotonic()
            if now - last_reap > 1.0:
                last_reap = now
                committer.reap()
                self._maybe_compact(now)
            if self._waiters and self._waiters[0][0] <= self.applied_index:
                self._notify_applied()

    def _maybe_compact(self, now: float) -> None:
        engine = self._engine
        if engine is None or engine.journal.total_bytes < self.config.compaction_min_bytes:
            return
        if now - self._compaction_requested_at > 10.0:
            self._compaction_requested_at = now
            engine.force_compaction()

    async def _announce(self) -> None:
        """Publish this node's address and metadata to the replicated directory."""
        c = self.config
        wanted = {"address": c.advertise_address, **c.metadata}
        command = encode_announce(c.node_id, c.advertise_address, dict(c.metadata))
        while True:
            with self._lock:
                current = self._directory.nodes.get(c.node_id)
            if current == wanted:
                await asyncio.sleep(1.0)
                continue
            if self.leader_id is None:
                await asyncio.sleep(0.1)
                continue
            try:
                await self._require_committer().propose(SYSTEM, command, 5.0)
            except Exception as error:
                log.debug("announce failed (%s); retrying", error)
                await asyncio.sleep(0.5)

    # -- status ------------------------------------------------------------------------------
    @property
    def node_id(self) -> str:
        return self.config.node_id

    @property
    def is_leader(self) -> bool:
        return self._engine is not None and self._engine.role == Role.LEADER

    @property
    def leader_id(self) -> str | None:
        address = None if self._engine is None else self._engine.leader_address
        if address is None:
            return None
        return self.config.node_id_of(address) or self._directory_id_at(address) or address

    def _directory_id_at(self, address: str) -> str | None:
        with self._lock:
            return self._directory.node_id_at(address)

    @property
    def term(self) -> int:
        return 0 if self._engine is None else self._engine.term

    @property
    def applied_index(self) -> int:
        engine_index = 0 if self._engine is None else self._engine.applied_index
        return max(self._applied_index, engine_index)

    @property
    def ready(self) -> bool:
        return self._ready

    def node_metadata(self) -> dict[str, dict[str, str]]:
        """Every current member (this node included) -> what it announced (at least its Raft
        address). A removed node is left out even while the directory still names it."""
        members = {self.config.node_id: self.config.advertise_address, **self.members()}
        with self._lock:
            nodes = self._directory.snapshot()
        return {node_id: {**nodes.get(node_id, {}), "address": address}
                for node_id, address in members.items()}

    def members(self) -> dict[str, str]:
        """The other voting members, node id -> Raft address, from the Raft membership."""
        addresses = (sorted(self.config.peers.values()) if self._engine is None
                     else self._engine.member_addresses())
        with self._lock:
            return {self._node_id_at(address): address for address in addresses}

    def _node_id_at(self, address: str) -> str:
        # The replicated directory first: --peers of a restarted node may be out of date.
        return (self._directory.node_id_at(address) or self.config.node_id_of(address)
                or address)

    def status(self) -> ClusterStatus:
        engine = self._engine
        if engine is None:
            raise RuntimeError("RaftNode.start() has not been called")
        peers = tuple(
            PeerStatus(node_id, address, engine.peer_connected(address),
                       engine.peer_match_index(address))
            for node_id, address in sorted(self.members().items()))
        return ClusterStatus(
            node_id=self.node_id, role=engine.role, term=engine.term, leader_id=self.leader_id,
            commit_index=engine.commit_index, applied_index=self.applied_index,
            log_entries=len(engine.journal), has_quorum=engine.has_quorum, peers=peers,
            ready=self._ready, log_truncations=engine.journal.truncations,
            snapshots_written=engine.snapshotter.snapshots_written)
