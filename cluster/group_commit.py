"""Group commit: coalesce concurrent proposals into few Raft entries, on the event loop.

A proposal goes out at once when fewer than `max_inflight_entries` entries are in flight, so an
idle cluster answers in one Raft round trip; under load, proposals queue while the window is
full and leave together as one entry when a slot frees (bounded by count and bytes). Raft sees
a few hundred large entries per second instead of tens of thousands of small ones.

Outcomes are settled here: definite failures from Raft (no leader, not leader, discarded) put the
proposals back in the queue until their deadline, since they certainly did not apply; indefinite
ones (leader changed while in flight, lost reply) fail with an error saying so.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .entry_codec import encode_entry
from .errors import (
    LeadershipLost,
    NodeStoppedError,
    NoLeaderError,
    OverloadedError,
    ProposalError,
    ProposalRejected,
    ProposalTimeout,
)

__all__ = ["Applied", "EntryOutcome", "GroupCommitLimits", "GroupCommitter"]

log = logging.getLogger(__name__)

_SUBMIT_RETRY_DELAY_S = 0.05


@dataclass(frozen=True)
class Applied:
    result: object
    index: int


class EntryOutcome:
    """How Raft settled one submitted entry (translated from pysyncobj's codes by the engine)."""

    APPLIED = "applied"
    RETRY = "retry"          # certainly not applied: resubmit within the deadline
    UNKNOWN = "unknown"      # may or may not be applied
    REJECTED = "rejected"    # certainly not applied, and retrying would not help


@dataclass(frozen=True)
class GroupCommitLimits:
    max_batch_commands: int
    max_batch_bytes: int
    max_inflight_entries: int
    max_pending_commands: int
    max_pending_bytes: int
    compress_min_bytes: int
    max_command_bytes: int
    entry_timeout_s: float = 30.0


@dataclass(eq=False)
class _Proposal:
    kind: int
    command: bytes
    future: asyncio.Future[Applied]
    deadline: float
    timer: asyncio.TimerHandle | None = None
    submitted: bool = False


@dataclass(eq=False)
class _Entry:
    entry_id: int
    proposals: list[_Proposal]
    submitted_at: float = field(default_factory=time.monotonic)


SubmitFn = Callable[[bytes, Callable[[str, Any], None]], None]


class GroupCommitter:
    def __init__(self, loop: asyncio.AbstractEventLoop, submit: SubmitFn,
                 limits: GroupCommitLimits, leader_known: Callable[[], str | None]) -> None:
        self._loop = loop
        self._submit = submit
        self._limits = limits
        self._leader_known = leader_known
        self._pending: collections.deque[_Proposal] = collections.deque()
        self._pending_bytes = 0
        self._inflight: dict[int, _Entry] = {}
        self._entry_ids = itertools.count(1)
        self._flush_scheduled = False
        self._stopped = False
        self.entries_submitted = 0
        self.commands_submitted = 0

    # -- public ----------------------------------------------------------------------------
    def propose(self, kind: int, command: bytes, timeout_s: float) -> asyncio.Future[Applied]:
        if self._stopped:
            raise NodeStoppedError("node is stopping")
        if len(command) > self._limits.max_command_bytes:
            raise OverloadedError(f"command of {len(command)} bytes exceeds the entry limit")
        self._drop_settled_head()
        if (len(self._pending) >= self._limits.max_pending_commands
                or self._pending_bytes + len(command) > self._limits.max_pending_bytes):
            raise OverloadedError("too many proposals waiting for Raft", leader_id=self._leader_known())
        future: asyncio.Future[Applied] = self._loop.create_future()
        proposal = _Proposal(kind, command, future, self._loop.time() + timeout_s)
        proposal.timer = self._loop.call_at(proposal.deadline, self._expire, proposal)
        self._enqueue(proposal)
        return future

    def kick(self) -> None:
        """Something changed (a leader appeared, an entry settled): try to send more."""
        if not self._flush_scheduled and self._pending:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def stop(self) -> None:
        self._stopped = True
        error = NodeStoppedError("node stopped")
        for proposal in self._pending:
            self._fail(proposal, NodeStoppedError("node stopped before the proposal was sent"))
        self._pending.clear()
        for entry in self._inflight.values():
            for proposal in entry.proposals:
                self._fail(proposal, error)
        self._inflight.clear()

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def inflight_count(self) -> int:
        return len(self._inflight)

    # -- internals -------------------------------------------------------------------------
    def _enqueue(self, proposal: _Proposal, *, front: bool = False) -> None:
        if front:
            self._pending.appendleft(proposal)
        else:
            self._pending.append(proposal)
        self._pending_bytes += len(proposal.command)
        self.kick()

    def _drop_settled_head(self) -> None:
        # Proposals that expired or were cancelled while queued (say, through a leaderless spell)
        # must not hold the pending bound against live ones until a leader drains the queue.
        while self._pending and self._pending[0].future.done():
            self._pending_bytes -= len(self._pending.popleft().command)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._reap_stuck_entries()
        while self._pending and len(self._inflight) < self._limits.max_inflight_entries:
            if self._leader_known() is None:
                return
            batch = self._take_batch()
            if batch:
                self._send(batch)

    def _take_batch(self) -> list[_Proposal]:
        batch: list[_Proposal] = []
        batch_bytes = 0
        while self._pending and len(batch) < self._limits.max_batch_commands:
            proposal = self._pending[0]
            size = len(proposal.command)
            if batch and batch_bytes + size > self._limits.max_batch_bytes:
                break
            self._pending.popleft()
            self._pending_bytes -= size
            if proposal.future.done():
                continue  # timed out or cancelled while queued: it was never sent
            batch.append(proposal)
            batch_bytes += size
        return batch

    def _send(self, batch: list[_Proposal]) -> None:
        entry = _Entry(next(self._entry_ids), batch)
        encoded = encode_entry([(p.kind, p.command) for p in batch],
                               compress_min_bytes=self._limits.compress_min_bytes)
        for proposal in batch:
            proposal.submitted = True
        self._inflight[entry.entry_id] = entry
        self.entries_submitted += 1
        self.commands_submitted += len(batch)

        def on_settled(outcome: str, value: Any) -> None:  # runs on Raft's thread
            self._loop.call_soon_threadsafe(self._settle, entry.entry_id, outcome, value)

        try:
            self._submit(encoded, on_settled)
        except Exception:  # the engine refused synchronously: nothing was appended
            log.exception("submitting an entry failed")
            for proposal in batch:
                proposal.submitted = False  # nothing appended: a deadline now is a definite failure
            # Retrying inside the flush loop would spin forever, blocking the loop and the
            # deadline timers, on an engine that keeps refusing; retry later instead.
            self._loop.call_later(_SUBMIT_RETRY_DELAY_S, self._settle, entry.entry_id,
                                  EntryOutcome.RETRY, None)

    def _settle(self, entry_id: int, outcome: str, value: Any) -> None:
        entry = self._inflight.pop(entry_id, None)
        if entry is None:
            return  # already given up on by _reap_stuck_entries
        if outcome == EntryOutcome.APPLIED:
            index, results = value
            for proposal, result in zip(entry.proposals, results, strict=True):
                self._resolve(proposal, Applied(result, index))
        elif outcome == EntryOutcome.RETRY:
            for proposal in reversed(entry.proposals):
                if not proposal.future.done():
                    proposal.submitted = False
                    self._enqueue(proposal, front=True)
        else:
            leader = self._leader_known()
            for proposal in entry.proposals:
                error: ProposalError = (
                    LeadershipLost(f"outcome unknown: {value}", leader_id=leader)
                    if outcome == EntryOutcome.UNKNOWN
                    else ProposalRejected(f"rejected by Raft: {value}", leader_id=leader))
                self._fail(proposal, error)
        self.kick()

    def abandon_inflight(self, reason: str) -> None:
        """This node stopped leading: what it appended may or may not commit under the next
        leader, and pysyncobj may never say which. Report every in-flight entry as unknown now
        instead of holding its callers until their deadlines (a leader cut off from the others
        steps down after `leader_fallback_timeout_s`; clients then retry elsewhere, idempotently).
        Proposals not yet submitted stay queued: they go to the next leader as usual."""
        entries, self._inflight = list(self._inflight.values()), {}
        leader = self._leader_known()
        for entry in entries:
            for proposal in entry.proposals:
                self._fail(proposal, LeadershipLost(reason, leader_id=leader))
        self.kick()

    def reap(self) -> None:
        """Called periodically: give up on entries Raft never answered."""
        self._reap_stuck_entries()
        self.kick()

    def _reap_stuck_entries(self) -> None:
        # pysyncobj's callbacks have no timeout (a forward dropped on a reconnect waits forever);
        # free the window slot and report the outcome as unknown.
        horizon = time.monotonic() - self._limits.entry_timeout_s
        for entry_id in [e.entry_id for e in self._inflight.values() if e.submitted_at < horizon]:
            entry = self._inflight.pop(entry_id)
            for proposal in entry.proposals:
                self._fail(proposal, ProposalTimeout("no answer from Raft; outcome unknown"))

    def _expire(self, proposal: _Proposal) -> None:
        if proposal.future.done():
            return
        leader = self._leader_known()
        if proposal.submitted:
            self._fail(proposal, ProposalTimeout("deadline passed while the entry was in flight; "
                                                 "it may still be applied", leader_id=leader))
        elif leader is None:
            self._fail(proposal, NoLeaderError("no leader elected before the deadline"))
        else:
            self._fail(proposal, OverloadedError("deadline passed before the proposal was sent",
                                                 leader_id=leader))
        self.kick()

    @staticmethod
    def _resolve(proposal: _Proposal, applied: Applied) -> None:
        if proposal.timer is not None:
            proposal.timer.cancel()
        if not proposal.future.done():
            proposal.future.set_result(applied)

    @staticmethod
    def _fail(proposal: _Proposal, error: ProposalError) -> None:
        if proposal.timer is not None:
            proposal.timer.cancel()
        if not proposal.future.done():
            proposal.future.set_exception(error)
