"""The only module that imports pysyncobj: it adapts the library to raftmq's needs.

pysyncobj 0.3.17 gives us Raft (elections, replication, forwarding from followers, membership,
snapshot transfer). What it lacks or gets wrong is fixed here, each point measured in
docs/architecture.md:

* journal: our DurableJournal (fsync policy, checksummed records) replaces its mmap journal;
* snapshots: our own file format written by a forked child (never the whole-state pickle, never
  on the tick thread or the event loop) replaces its Serializer;
* a leader that receives an acknowledgement for an older batch no longer moves the follower's
  next index backwards, which made followers delete and re-append entries they had already
  acknowledged (the "state machine may have diverged" log);
* pickle protocol 5 for its own framing (protocol 2 inflates bytes 1.5-2.5x), and a cheaper
  transport compression level since our entries are lz4-compressed already;
* the Raft port binds only the configured address and always has the cluster secret.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import pysyncobj
import pysyncobj.pickle as _pysyncobj_pickle
import pysyncobj.poller as _pysyncobj_poller
import pysyncobj.syncobj as _pysyncobj_syncobj
import pysyncobj.tcp_connection as _pysyncobj_tcp
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.monotonic import monotonic as raft_clock
from pysyncobj.node import TCPNode
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from .config import RaftConfig
from .group_commit import EntryOutcome
from .journal import DurableJournal
from .loop_poller import LoopPoller
from .snapshot_file import SnapshotMeta
from .snapshotter import ForkingSnapshotter, SerializerStates

__all__ = ["RaftEngine", "Role"]

log = logging.getLogger(__name__)

_DNS_CACHE_S = 2.0
_DNS_FAIL_CACHE_S = 1.0
_SUPPORTED_PYSYNCOBJ = "0.3.17"
if pysyncobj.syncobj.VERSION != _SUPPORTED_PYSYNCOBJ:
    raise ImportError(f"raftmq needs pysyncobj {_SUPPORTED_PYSYNCOBJ}: it patches its internals")

_OUTCOMES = {
    FAIL_REASON.SUCCESS: EntryOutcome.APPLIED,
    FAIL_REASON.QUEUE_FULL: EntryOutcome.RETRY,
    FAIL_REASON.MISSING_LEADER: EntryOutcome.RETRY,
    FAIL_REASON.DISCARDED: EntryOutcome.RETRY,
    FAIL_REASON.NOT_LEADER: EntryOutcome.RETRY,
    FAIL_REASON.LEADER_CHANGED: EntryOutcome.UNKNOWN,
    FAIL_REASON.UNKNOWN_OUTCOME: EntryOutcome.UNKNOWN,
    FAIL_REASON.REQUEST_DENIED: EntryOutcome.REJECTED,
}


def _outcome_of(error: int) -> str:
    return _OUTCOMES.get(error, EntryOutcome.UNKNOWN)


class Role:
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"
    STARTING = "starting"


_ROLE_BY_STATE = {0: Role.FOLLOWER, 1: Role.CANDIDATE, 2: Role.LEADER}

_SERIALIZER_STATES = SerializerStates(
    SERIALIZER_STATE.NOT_SERIALIZING, SERIALIZER_STATE.SERIALIZING,
    SERIALIZER_STATE.SUCCESS, SERIALIZER_STATE.FAILED)

# -- process-wide patches ----------------------------------------------------------------------
setattr(_pysyncobj_pickle, "__protocol", 5)


class _TransportZlib:
    """Stands in for the zlib module inside pysyncobj's TCP connection: same stream format."""

    level = 0

    @classmethod
    def compress(cls, data: bytes, _level: int = 3) -> bytes:
        return zlib.compress(data, cls.level)

    @staticmethod
    def decompress(data: bytes) -> bytes:
        return zlib.decompress(data)


_pysyncobj_tcp.zlib = _TransportZlib

# SyncObj builds its journal and serializer from file names; we hand it ours by those names.
_prepared: dict[str, Any] = {}
_prepared_lock = threading.Lock()


def _create_journal(journal_file: str | None) -> DurableJournal:
    with _prepared_lock:
        journal = _prepared.pop(f"journal:{journal_file}", None)
    if not isinstance(journal, DurableJournal):
        raise RuntimeError("pysyncobj journal requested without a prepared DurableJournal")
    return journal


def _create_serializer(file_name: str, *_args: object) -> ForkingSnapshotter:
    with _prepared_lock:
        snapshotter = _prepared.pop(f"snapshot:{file_name}", None)
    if not isinstance(snapshotter, ForkingSnapshotter):
        raise RuntimeError("pysyncobj serializer requested without a prepared snapshotter")
    return snapshotter


def _create_poller(poller_type: str) -> Any:
    with _prepared_lock:
        poller = _prepared.pop("poller", None)
    return poller if poller is not None else _pysyncobj_poller.createPoller(poller_type)


_pysyncobj_syncobj.createJournal = _create_journal
_pysyncobj_syncobj.createPoller = _create_poller
_pysyncobj_syncobj.Serializer = _create_serializer


def _unused_serializer(*_args: object) -> None:
    raise AssertionError("pysyncobj called the serializer hook; ForkingSnapshotter replaces it")


ApplyEntryFn = Callable[[bytes, int], object]
_LEADER_LOST_ELECTION_DELAY_S = 0.05
_LOOP_TICK_PERIOD_S = 0.01
_TICK_GAP_WARNING_S = 0.2
_VOTE_REQUEST_REPEAT_S = 0.1
_LEADER_LOST_STAGGER_S = 0.15
_LEADER_LOST_JITTER_S = 0.03


class _DurableTransport(TCPTransport):  # type: ignore[misc]
    """A follower's acknowledgement (`next_node_idx`) says "I have these entries": make them
    durable first."""

    def send(self, node: Any, message: Any) -> None:
        if message.get("type") == "next_node_idx":
            self._syncObj._raftmq_journal.sync()
        super().send(node, message)

    def _connectIfNecessarySingle(self, node: Any) -> bool:
        """pysyncobj checks a connection's timeout only when its socket has an event, so a
        connect to an address that went silent (a peer restarted under a new IP, as a
        Kubernetes pod is) hangs for the kernel's SYN retries, about two minutes. Give up after
        the connection timeout instead: the next attempt resolves the peer's name again."""
        connection = self._connections.get(node)
        started = self._lastConnectAttempt.get(node)
        if (connection is not None and started is not None
                and connection.state == CONNECTION_STATE.CONNECTING
                and raft_clock() - started > self._syncObj.conf.connectionTimeout):
            connection.disconnect()  # its callback connects again
        return bool(super()._connectIfNecessarySingle(node))


class _RaftCore(SyncObj):  # type: ignore[misc]
    def __init__(self, self_address: str, other_addresses: list[str], conf: SyncObjConf,
                 apply_entry: ApplyEntryFn, journal: DurableJournal) -> None:
        self._raftmq_apply_entry = apply_entry
        self._raftmq_journal = journal
        self._raftmq_last_tick = 0.0
        self._raftmq_vote_term = -1
        self._raftmq_vote_sent = 0.0
        self.stale_acknowledgements = 0  # acknowledgements from another term, ignored
        super().__init__(self_address, other_addresses, conf, transportClass=_DurableTransport)

    def _onTick(self, timeToWait: float = 0.0) -> None:
        started = time.monotonic()
        gap_s = started - self._raftmq_last_tick
        if gap_s > _TICK_GAP_WARNING_S and self._raftmq_last_tick:
            # A gap this long starves heartbeats (a long apply, GC, disk). Every replica applies
            # the same slow command at about the same time, so a follower waking from it must not
            # take the leader's silence for a crash: give the leader a fresh election timeout.
            log.warning("raft tick stalled for %.0f ms", gap_s * 1000)
            if self._SyncObj__raftState == 0:
                current = float(getattr(self, "_SyncObj__raftElectionDeadline"))  # noqa: B009
                self._SyncObj__raftElectionDeadline = max(
                    current, raft_clock() + self._SyncObj__conf.raftMinTimeout)
        self._raftmq_last_tick = started
        # The leader counts its own log towards the commit index at the start of a tick.
        self._raftmq_journal.sync()
        SyncObj._onTick(self, timeToWait)
        if self._SyncObj__raftState == 1:
            self._repeat_vote_request(started)

    def _repeat_vote_request(self, now: float) -> None:
        """pysyncobj asks for votes once per term, and its transport drops a message to a peer
        it is (re)connecting to; one lost request then costs a whole election timeout. Asking
        again within the term is harmless: a node grants at most one vote per term."""
        term = self._SyncObj__raftCurrentTerm
        if term != self._raftmq_vote_term:
            self._raftmq_vote_term, self._raftmq_vote_sent = term, now
            return
        if now - self._raftmq_vote_sent < _VOTE_REQUEST_REPEAT_S:
            return
        self._raftmq_vote_sent = now
        request = {"type": "request_vote", "term": term,
                   "last_log_index": self._SyncObj__getCurrentLogIndex(),
                   "last_log_term": self._SyncObj__getCurrentLogTerm()}
        for node in self._SyncObj__otherNodes:
            self._SyncObj__transport.send(node, request)

    def _checkCommandsToApply(self) -> None:
        # New entries were just appended and sent to the followers: fsync the leader's copy
        # while they fsync theirs.
        appended_before = len(self._raftmq_journal)
        SyncObj._checkCommandsToApply(self)
        self._raftmq_journal.sync()
        if len(self._raftmq_journal) > appended_before and not self._SyncObj__otherNodes:
            # Alone, no acknowledgement will wake the poll: without this the commit would wait
            # for the poll timeout (50 ms).
            self._SyncObj__pipeNotifier.notify()

    @replicated  # type: ignore[untyped-decorator]
    def apply_entry(self, entry: bytes) -> object:
        # pysyncobj increments lastApplied after this returns.
        return self._raftmq_apply_entry(entry, self.raftLastApplied + 1)

    def _SyncObj__onNodeDisconnected(self, node: Any) -> None:
        """The leader's connection dropped (a crash closes it at once): start an election soon
        instead of waiting out the full election timeout. The survivors go in a fixed order
        (by address) a stagger apart, so they do not all stand at once and split the vote.
        Safety does not depend on this; a network blip only costs an early election."""
        SyncObj._SyncObj__onNodeDisconnected(self, node)
        if node != self._SyncObj__raftLeader or self._SyncObj__raftState != 0:
            return
        survivors = sorted(str(n.id) for n in self._SyncObj__otherNodes if n != node)
        rank = sorted([*survivors, str(self._SyncObj__selfNode.id)]).index(str(self._SyncObj__selfNode.id))
        delay_s = _LEADER_LOST_ELECTION_DELAY_S + rank * _LEADER_LOST_STAGGER_S
        delay_s += _LEADER_LOST_JITTER_S * random.random()
        current = float(getattr(self, "_SyncObj__raftElectionDeadline"))  # noqa: B009
        # pysyncobj's clock is CLOCK_MONOTONIC_RAW, not time.monotonic(): 0.17 s apart here.
        self._SyncObj__raftElectionDeadline = min(current, raft_clock() + delay_s)
        log.info("lost the connection to the leader %s; standing for election in %.0f ms unless "
                 "another node does first", node, delay_s * 1000)

    def _SyncObj__sendNextNodeIdx(self, node: Any, reset: bool = False,
                                  nextNodeIdx: int | None = None,
                                  success: bool = False) -> None:
        """pysyncobj's acknowledgement, stamped with the term it answers (see below)."""
        if nextNodeIdx is None:
            nextNodeIdx = self._SyncObj__getCurrentLogIndex() + 1
        self._SyncObj__transport.send(node, {
            "type": "next_node_idx", "next_node_idx": nextNodeIdx, "reset": reset,
            "success": success, "term": self._SyncObj__raftCurrentTerm,
        })

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
        """Two fixes to the leader's handling of acknowledgements.

        Ignore one from another term. pysyncobj's acknowledgements carried no term, so one
        delayed by a partition (TCP delivers it after the heal) reached a node that was leader
        again in a later term, which took it as proof that the follower held its entries at that
        index, and committed entries no majority held: a follower then truncated entries it had
        already applied (found by the chaos suite's partition runs). Raft drops responses
        whose term is not the current one; so does this.

        Keep a follower's next index from moving backwards on a late acknowledgement.
        pysyncobj sets next index to (acknowledged index + 1) on every success, even when later
        batches are already in flight; it then resends those, and the follower deletes and
        re-appends entries it had acknowledged. Raft only ever needs to go back on a failure.
        """
        if (message.get("type") == "next_node_idx"
                and message.get("term") != self._SyncObj__raftCurrentTerm):
            self.stale_acknowledgements += 1
            return
        next_index: dict[Any, int] = self._SyncObj__raftNextIndex
        before = next_index.get(node)
        SyncObj._SyncObj__onMessageReceived(self, node, message)
        if (before is not None and message.get("type") == "next_node_idx"
                and message.get("success") and not message.get("reset")):
            after = next_index.get(node)
            if after is not None and after < before:
                next_index[node] = before


class RaftEngine:
    """Owns the SyncObj and the thread it lives on (its tick thread dies with its creator)."""

    def __init__(self, config: RaftConfig, apply_entry: ApplyEntryFn,
                 capture: Callable[[], tuple[bytes, dict[str, dict[str, str]]]],
                 restore: Callable[[SnapshotMeta, bytes], None]) -> None:
        self._config = config
        self._apply_entry = apply_entry
        config.raft_dir.mkdir(parents=True, exist_ok=True)
        self.journal = DurableJournal(config.raft_dir, fsync=config.fsync == "always",
                                      sync_marker=config.sync_marker)
        self.snapshot_path = config.raft_dir / "snapshot.bin"
        self.snapshotter = ForkingSnapshotter(self.snapshot_path, 1024 * 1024, capture,
                                              self._keeping_the_tail(restore),
                                              _SERIALIZER_STATES, TCPNode)
        self._core: _RaftCore | None = None
        self._owner: threading.Thread | None = None
        self._started = threading.Event()
        self._stop = threading.Event()
        self._start_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: LoopPoller | None = None
        self._periodic: asyncio.TimerHandle | None = None
        self._tick_scheduled = False
        # Called on the engine's thread when this node stops leading; must be thread-safe.
        self.on_step_down: Callable[[], None] | None = None
        _TransportZlib.level = config.transport_zlib_level

    def _keeping_the_tail(self, restore: Callable[[SnapshotMeta, bytes], None]
                          ) -> Callable[[SnapshotMeta, bytes], None]:
        def restore_snapshot(meta: SnapshotMeta, blob: bytes) -> None:
            self._drop_prefix_covered_by(meta)
            restore(meta, blob)

        return restore_snapshot

    def _drop_prefix_covered_by(self, meta: SnapshotMeta) -> None:
        """pysyncobj loads a snapshot, then keeps the journal only if it starts with the
        snapshot's last two entries, and otherwise clears all of it. A node stopped after
        writing a snapshot but before dropping the journal prefix it covers (the next tick's
        work) still has that prefix: its entries after the snapshot, committed ones too, would
        be cleared; on every node of a cluster restarted at once (they snapshot together).
        Dropping just the covered prefix first keeps them."""
        journal = self.journal
        if len(journal) < 2:
            return
        position = meta.previous_entry[1] - journal[0][1]
        if position <= 0 or position + 1 >= len(journal):
            return
        if journal[position] == meta.previous_entry and journal[position + 1] == meta.last_entry:
            log.info("dropping the %d journal entries the snapshot at index %d covers",
                     position, meta.index)
            journal.deleteEntriesTo(position)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout_s: float = 30.0) -> None:
        """Blocking in "thread" mode: build the SyncObj on a dedicated thread and wait until it
        is up. In "loop" mode call it on the event loop: it builds the SyncObj right there."""
        if self._config.tick_mode == "loop":
            self._start_on_loop()
            return
        self._owner = threading.Thread(target=self._own, name=f"raft-{self._config.node_id}",
                                       daemon=True)
        self._owner.start()
        if not self._started.wait(timeout_s):
            raise RuntimeError("Raft engine did not start in time")
        if self._start_error is not None:
            raise RuntimeError(f"Raft engine failed to start: {self._start_error!r}") from self._start_error
        deadline = time.monotonic() + timeout_s
        while not self._require_core()._SyncObj__transport.ready:
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Raft port {self._config.bind_address} could not be bound")
            time.sleep(0.01)

    def _prepare(self) -> tuple[str, str]:
        journal_key = str(self._config.raft_dir / "journal.log")
        snapshot_key = str(self.snapshot_path)
        with _prepared_lock:
            _prepared[f"journal:{journal_key}"] = self.journal
            _prepared[f"snapshot:{snapshot_key}"] = self.snapshotter
        return journal_key, snapshot_key

    def _build_core(self, journal_key: str, snapshot_key: str) -> _RaftCore:
        return _RaftCore(self._config.advertise_address, sorted(self._config.peers.values()),
                         self._make_conf(journal_key, snapshot_key), self._apply_entry, self.journal)

    def _own(self) -> None:
        try:
            self._core = self._build_core(*self._prepare())
        except BaseException as error:
            self._start_error = error
            self._started.set()
            return
        self._started.set()
        self._stop.wait()
        self._core.destroy_synchronous()  # also closes the journal

    def _start_on_loop(self) -> None:
        loop = asyncio.get_running_loop()
        self._poller = LoopPoller(loop, POLL_EVENT_TYPE.READ, POLL_EVENT_TYPE.WRITE, self._schedule_tick)
        keys = self._prepare()
        with _prepared_lock:
            _prepared["poller"] = self._poller
        try:
            self._core = self._build_core(*keys)
        except Exception as error:
            self._poller.close()
            raise RuntimeError(f"the Raft port {self._config.bind_address} could not be bound: "
                               f"{error!r}") from error
        finally:
            with _prepared_lock:
                _prepared.pop("poller", None)
        self._loop = loop
        self._periodic = loop.call_later(_LOOP_TICK_PERIOD_S, self._periodic_tick)

    def _schedule_tick(self) -> None:
        """Coalesce: any number of socket events before the next loop iteration = one tick."""
        if not self._tick_scheduled and self._loop is not None:
            self._tick_scheduled = True
            self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self._tick_scheduled = False
        core = self._core
        if core is None:
            return
        try:
            core.doTick(0.0)
        except Exception:
            log.exception("Raft tick failed")

    def _periodic_tick(self) -> None:
        # Heartbeats, election timeouts and reconnects are driven by time, not by sockets.
        if self._loop is None:
            return
        self._schedule_tick()
        self._periodic = self._loop.call_later(_LOOP_TICK_PERIOD_S, self._periodic_tick)

    def _make_conf(self, journal_file: str, snapshot_file: str) -> SyncObjConf:
        c = self._config
        return SyncObjConf(
            password=c.secret,
            bindAddress=c.bind_address,
            journalFile=journal_file,
            fullDumpFile=snapshot_file,
            serializer=_unused_serializer,  # non-None: pysyncobj then never pickles the state
            deserializer=_unused_serializer,
            useFork=False,
            dynamicMembershipChange=True,
            # Per-entry sends: ~0.6 ms commits instead of the 100 ms batching period. Group
            # commit upstream keeps the entry rate low enough for this.
            appendEntriesUseBatch=False,
            appendEntriesPeriod=c.heartbeat_period_s,
            # Above our largest entry, so pysyncobj's broken chunking path is never taken.
            appendEntriesBatchSizeBytes=c.max_entry_bytes + 65536,
            raftMinTimeout=c.election_timeout_min_s,
            raftMaxTimeout=c.election_timeout_max_s,
            leaderFallbackTimeout=c.leader_fallback_timeout_s,
            connectionTimeout=c.connection_timeout_s,
            connectionRetryTime=c.connection_retry_s,
            commandsWaitLeader=False,
            commandsQueueSize=100_000,
            logCompactionMinEntries=c.compaction_min_entries,
            logCompactionMinTime=c.compaction_min_time_s,
            logCompactionBatchSize=1024 * 1024,
            autoTick=self._config.tick_mode == "thread",
            autoTickPeriod=0.05,
            # In loop mode the constructor retries binding in a busy loop; fail fast instead.
            maxBindRetries=0 if self._config.tick_mode == "thread" else 3,
            bindRetryTime=0.2,
            # Peers may be DNS names whose address changes (a StatefulSet pod keeps its name,
            # not its IP, across restarts): pysyncobj's 600 s cache would dial a restarted
            # peer's old IP for ten minutes, and its 30 s failure cache delay a new cluster.
            dnsCacheTime=_DNS_CACHE_S,
            dnsFailCacheTime=_DNS_FAIL_CACHE_S,
            onStateChanged=self._log_state_change,
        )

    def _log_state_change(self, old_state: int, new_state: int) -> None:
        # pysyncobj's thread: the moment of the change, unlike any later observer on the loop.
        old_role = _ROLE_BY_STATE.get(old_state, old_state)
        new_role = _ROLE_BY_STATE.get(new_state, new_state)
        log.info("raft role %s -> %s (term %d)", old_role, new_role, self.term)
        if old_role == Role.LEADER and new_role != Role.LEADER and self.on_step_down is not None:
            self.on_step_down()

    def stop(self) -> None:
        if self._config.tick_mode == "loop":
            if self._periodic is not None:
                self._periodic.cancel()
            self._loop = None
            if self._core is not None:
                self._core.destroy()  # without autoTick this closes sockets and journal now
            if self._poller is not None:
                self._poller.close()
            return
        self._stop.set()
        if self._owner is not None:
            self._owner.join(timeout=10.0)

    # -- operations (callable from any thread) ---------------------------------------------
    def submit(self, entry: bytes, on_settled: Callable[[str, Any], None]) -> None:
        def callback(result: object, error: int) -> None:
            on_settled(_OUTCOMES.get(error, EntryOutcome.UNKNOWN),
                       result if error == FAIL_REASON.SUCCESS else error)

        self._require_core().apply_entry(entry, callback=callback)

    def transfer_leadership(self, on_done: Callable[[bool], None],
                            target_address: str | None = None) -> None:
        """Ask pysyncobj to hand leadership to `target_address` (None: the most caught-up
        connected follower). `on_done(False)` when it refused: not leader, or no such
        follower fully caught up. True only means the request was sent."""
        target = None if target_address is None else TCPNode(target_address)
        self._require_core().transferLeadership(
            target, callback=lambda _result, error: on_done(error == FAIL_REASON.SUCCESS))

    def add_member(self, address: str, on_settled: Callable[[str], None]) -> None:
        """Single-server change: `on_settled(EntryOutcome...)` once the change entry applied
        here or was refused (REJECTED: an earlier change, or this term's first entry, is not
        applied yet, or the node already is a member)."""
        self._require_core().addNodeToCluster(
            address, callback=lambda _result, error: on_settled(_outcome_of(error)))

    def remove_member(self, address: str, on_settled: Callable[[str], None]) -> None:
        self._require_core().removeNodeFromCluster(
            address, callback=lambda _result, error: on_settled(_outcome_of(error)))

    def member_addresses(self) -> list[str]:
        """The other voting members' Raft addresses as this node's Raft log has them now: a
        change counts from the moment its entry is appended (single-server changes)."""
        core = self._core
        if core is None:
            return sorted(self._config.peers.values())
        return sorted(str(node.id) for node in core.otherNodes)  # otherNodes returns a copy

    def force_compaction(self) -> None:
        self._require_core().forceLogCompaction()

    def _require_core(self) -> _RaftCore:
        if self._core is None:
            raise RuntimeError("Raft engine not started")
        return self._core

    # -- status (plain attribute reads: safe enough against the tick thread under the GIL) --
    @property
    def role(self) -> str:
        if self._core is None:
            return Role.STARTING
        return _ROLE_BY_STATE.get(self._core._SyncObj__raftState, Role.FOLLOWER)

    @property
    def leader_address(self) -> str | None:
        leader = None if self._core is None else self._core._getLeader()
        return None if leader is None else str(leader.id)

    @property
    def term(self) -> int:
        return 0 if self._core is None else int(self._core.raftCurrentTerm)

    @property
    def commit_index(self) -> int:
        return 0 if self._core is None else int(self._core.raftCommitIndex)

    @property
    def applied_index(self) -> int:
        return 0 if self._core is None else int(self._core.raftLastApplied)

    @property
    def has_quorum(self) -> bool:
        return False if self._core is None else bool(self._core.hasQuorum)

    @property
    def tick_thread_alive(self) -> bool:
        return self._core is not None and bool(self._core.tick_thread_alive())

    def peer_connected(self, address: str) -> bool:
        core = self._core
        return core is not None and bool(core.isNodeConnected(TCPNode(address)))

    def peer_match_index(self, address: str) -> int | None:
        core = self._core
        if core is None or self.role != Role.LEADER:
            return None
        value = core._SyncObj__raftMatchIndex.get(TCPNode(address))
        return None if value is None else int(value)
