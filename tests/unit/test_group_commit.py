"""GroupCommitter: batching proposals into entries, the in-flight window, outcomes, deadlines.

The committer's unit boundary is its `submit` function: a fake records each submitted entry
and lets the test settle it the way the Raft engine would, so only the batcher's logic is tested.
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from raftmq.cluster import group_commit
from raftmq.cluster.entry_codec import APP, SYSTEM, decode_entry
from raftmq.cluster.errors import (
    LeadershipLost,
    NodeStoppedError,
    NoLeaderError,
    OverloadedError,
    ProposalError,
    ProposalRejected,
    ProposalTimeout,
)
from raftmq.cluster.group_commit import Applied, EntryOutcome, GroupCommitLimits, GroupCommitter

WAIT_S = 2.0
SHORT_TIMEOUT_S = 0.05
LONG_TIMEOUT_S = 60.0


@dataclass
class SubmittedEntry:
    commands: list[tuple[int, bytes]]
    on_settled: Callable[[str, Any], None]

    def apply(self, index: int) -> None:
        self.on_settled(EntryOutcome.APPLIED, (index, [b"ok:" + c for _, c in self.commands]))

    def settle(self, outcome: str, value: Any = None) -> None:
        self.on_settled(outcome, value)


class FakeRaft:
    def __init__(self) -> None:
        self.entries: list[SubmittedEntry] = []
        self.leader: str | None = "n1"
        self.refusals_left = 0

    def submit(self, entry: bytes, on_settled: Callable[[str, Any], None]) -> None:
        if self.refusals_left > 0:
            self.refusals_left -= 1
            raise RuntimeError("engine refused")
        self.entries.append(SubmittedEntry(decode_entry(entry, max_entry_bytes=1 << 24), on_settled))

    def leader_id(self) -> str | None:
        return self.leader

    def sent_commands(self) -> list[list[bytes]]:
        return [[command for _, command in entry.commands] for entry in self.entries]


def limits(**overrides: Any) -> GroupCommitLimits:
    values: dict[str, Any] = {
        "max_batch_commands": 100, "max_batch_bytes": 1 << 20, "max_inflight_entries": 2,
        "max_pending_commands": 1000, "max_pending_bytes": 1 << 20, "compress_min_bytes": 1024,
        "max_command_bytes": 1 << 16, "entry_timeout_s": 30.0,
    }
    values.update(overrides)
    return GroupCommitLimits(**values)


@pytest.fixture
def raft() -> FakeRaft:
    return FakeRaft()


Build = Callable[..., GroupCommitter]


@pytest.fixture
def build(raft: FakeRaft) -> Iterator[Build]:
    committers: list[GroupCommitter] = []

    def make(**overrides: Any) -> GroupCommitter:
        committer = GroupCommitter(asyncio.get_running_loop(), raft.submit, limits(**overrides),
                                   raft.leader_id)
        committers.append(committer)
        return committer

    yield make
    for committer in committers:
        committer.stop()  # cancels deadline timers


async def next_iterations(count: int = 3) -> None:
    """Let callbacks already scheduled with call_soon run (they run before this task resumes)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def outcome(future: asyncio.Future[Applied]) -> Applied:
    return await asyncio.wait_for(future, WAIT_S)


async def failure(future: asyncio.Future[Applied]) -> ProposalError:
    with pytest.raises(ProposalError) as caught:
        await asyncio.wait_for(future, WAIT_S)
    return caught.value


async def test_an_idle_proposal_is_sent_at_once_and_resolves(build: Build, raft: FakeRaft) -> None:
    committer = build()
    future = committer.propose(APP, b"hello", LONG_TIMEOUT_S)
    await wait_until(lambda: len(raft.entries) == 1, "the entry")
    assert raft.entries[0].commands == [(APP, b"hello")]
    raft.entries[0].apply(index=7)
    assert await outcome(future) == Applied(b"ok:hello", 7)
    assert committer.inflight_count == 0


async def test_proposals_in_one_loop_iteration_share_one_entry(build: Build, raft: FakeRaft) -> None:
    committer = build()
    futures = [committer.propose(APP if i % 2 else SYSTEM, f"c{i}".encode(), LONG_TIMEOUT_S)
               for i in range(5)]
    await next_iterations()
    assert committer.pending_count == 0
    assert len(raft.entries) == 1
    assert raft.entries[0].commands == [(SYSTEM, b"c0"), (APP, b"c1"), (SYSTEM, b"c2"),
                                        (APP, b"c3"), (SYSTEM, b"c4")]
    raft.entries[0].apply(index=3)
    results = [await outcome(f) for f in futures]
    assert results == [Applied(f"ok:c{i}".encode(), 3) for i in range(5)]
    assert (committer.entries_submitted, committer.commands_submitted) == (1, 5)


async def test_window_bound_holds_and_waiting_proposals_leave_as_one_entry(
        build: Build, raft: FakeRaft) -> None:
    committer = build(max_inflight_entries=2)
    first = committer.propose(APP, b"a", LONG_TIMEOUT_S)
    await next_iterations()
    second = committer.propose(APP, b"b", LONG_TIMEOUT_S)
    await next_iterations()
    assert raft.sent_commands() == [[b"a"], [b"b"]]

    queued = [committer.propose(APP, c, LONG_TIMEOUT_S) for c in (b"c", b"d", b"e")]
    await next_iterations()
    assert len(raft.entries) == 2  # the window is full: nothing more goes out
    assert committer.pending_count == 3
    assert committer.inflight_count == 2

    raft.entries[0].apply(index=1)
    await wait_until(lambda: len(raft.entries) == 3, "the queued proposals' entry")
    assert raft.sent_commands()[2] == [b"c", b"d", b"e"]
    assert committer.inflight_count == 2
    raft.entries[1].apply(index=2)
    raft.entries[2].apply(index=3)
    assert (await outcome(first)).index == 1
    assert (await outcome(second)).index == 2
    assert [(await outcome(f)).index for f in queued] == [3, 3, 3]


async def test_max_batch_commands(build: Build, raft: FakeRaft) -> None:
    committer = build(max_batch_commands=2, max_inflight_entries=10)
    for i in range(5):
        committer.propose(APP, bytes([i]), LONG_TIMEOUT_S)
    await next_iterations()
    assert raft.sent_commands() == [[b"\x00", b"\x01"], [b"\x02", b"\x03"], [b"\x04"]]


async def test_max_batch_commands_when_the_window_reopens(build: Build, raft: FakeRaft) -> None:
    committer = build(max_batch_commands=3, max_inflight_entries=1)
    committer.propose(APP, b"first", LONG_TIMEOUT_S)
    await next_iterations()
    for i in range(7):
        committer.propose(APP, bytes([i]), LONG_TIMEOUT_S)
    await next_iterations()
    raft.entries[0].apply(index=1)
    await wait_until(lambda: len(raft.entries) == 2, "the next entry")
    assert len(raft.entries[1].commands) == 3
    assert committer.pending_count == 4  # the rest waits for the window, as entries of <= 3


async def test_max_batch_bytes(build: Build, raft: FakeRaft) -> None:
    committer = build(max_batch_bytes=10, max_inflight_entries=10)
    for command in (b"aaaa", b"bbbb", b"cccc", b"dd", b"e" * 30, b"ffff"):
        committer.propose(APP, command, LONG_TIMEOUT_S)
    await next_iterations()
    # A command bigger than the batch limit still goes, alone; no batch of several exceeds it.
    assert raft.sent_commands() == [[b"aaaa", b"bbbb"], [b"cccc", b"dd"], [b"e" * 30], [b"ffff"]]


async def test_retry_resubmits_and_still_resolves(build: Build, raft: FakeRaft) -> None:
    committer = build()
    futures = [committer.propose(APP, c, LONG_TIMEOUT_S) for c in (b"x", b"y")]
    await next_iterations()
    raft.entries[0].settle(EntryOutcome.RETRY, "not leader")
    await wait_until(lambda: len(raft.entries) == 2, "the resubmission")
    assert raft.entries[1].commands == raft.entries[0].commands  # same proposals, same order
    assert not any(f.done() for f in futures)
    raft.entries[1].apply(index=11)
    assert [await outcome(f) for f in futures] == [Applied(b"ok:x", 11), Applied(b"ok:y", 11)]


async def test_retried_proposals_go_ahead_of_newer_ones(build: Build, raft: FakeRaft) -> None:
    committer = build(max_inflight_entries=1)
    committer.propose(APP, b"old", LONG_TIMEOUT_S)
    await next_iterations()
    committer.propose(APP, b"new", LONG_TIMEOUT_S)
    await next_iterations()
    raft.entries[0].settle(EntryOutcome.RETRY, "discarded")
    await wait_until(lambda: len(raft.entries) == 2, "the resubmission")
    assert raft.sent_commands()[1] == [b"old", b"new"]


async def test_unknown_outcome_fails_with_leadership_lost(build: Build, raft: FakeRaft) -> None:
    committer = build()
    futures = [committer.propose(APP, c, LONG_TIMEOUT_S) for c in (b"x", b"y")]
    await next_iterations()
    raft.leader = "n2"
    raft.entries[0].settle(EntryOutcome.UNKNOWN, "leader changed")
    for future in futures:
        error = await failure(future)
        assert isinstance(error, LeadershipLost)
        assert error.definite is False
        assert error.code == "leadership_lost"
        assert error.leader_id == "n2"
    await next_iterations()
    assert len(raft.entries) == 1  # an unknown outcome is never resubmitted


async def test_rejected_outcome_fails_definitely(build: Build, raft: FakeRaft) -> None:
    committer = build()
    future = committer.propose(APP, b"x", LONG_TIMEOUT_S)
    await next_iterations()
    raft.entries[0].settle(EntryOutcome.REJECTED, "request denied")
    error = await failure(future)
    assert isinstance(error, ProposalRejected)
    assert error.definite is True
    await next_iterations()
    assert len(raft.entries) == 1


async def test_deadline_without_a_leader_is_no_leader(build: Build, raft: FakeRaft) -> None:
    raft.leader = None
    committer = build()
    future = committer.propose(APP, b"x", SHORT_TIMEOUT_S)
    error = await failure(future)
    assert isinstance(error, NoLeaderError)
    assert error.definite is True
    assert raft.entries == []  # nothing was ever sent


async def test_queued_proposals_leave_once_a_leader_appears(build: Build, raft: FakeRaft) -> None:
    raft.leader = None
    committer = build()
    future = committer.propose(APP, b"x", LONG_TIMEOUT_S)
    await next_iterations()
    assert raft.entries == []
    raft.leader = "n3"
    committer.kick()
    await wait_until(lambda: len(raft.entries) == 1, "the entry")
    raft.entries[0].apply(index=4)
    assert (await outcome(future)).index == 4


async def test_deadline_after_submission_is_an_indefinite_timeout(build: Build, raft: FakeRaft) -> None:
    committer = build()
    future = committer.propose(APP, b"x", SHORT_TIMEOUT_S)
    await wait_until(lambda: len(raft.entries) == 1, "the entry")
    error = await failure(future)
    assert isinstance(error, ProposalTimeout)
    assert error.definite is False
    # Raft answering afterwards changes nothing and breaks nothing.
    raft.entries[0].apply(index=9)
    await wait_until(lambda: committer.inflight_count == 0, "the late settlement")
    assert isinstance(future.exception(), ProposalTimeout)


async def test_deadline_while_the_window_is_full_is_definite(build: Build, raft: FakeRaft) -> None:
    committer = build(max_inflight_entries=1)
    committer.propose(APP, b"blocking", LONG_TIMEOUT_S)
    await next_iterations()
    waiting = committer.propose(APP, b"waiting", SHORT_TIMEOUT_S)
    error = await failure(waiting)
    assert isinstance(error, OverloadedError)
    assert error.definite is True
    raft.entries[0].apply(index=1)
    await next_iterations()
    assert raft.sent_commands() == [[b"blocking"]]  # the expired proposal was never sent


async def test_pending_command_bound(build: Build, raft: FakeRaft) -> None:
    raft.leader = None
    committer = build(max_pending_commands=3)
    for _ in range(3):
        committer.propose(APP, b"x", LONG_TIMEOUT_S)
    with pytest.raises(OverloadedError) as caught:
        committer.propose(APP, b"x", LONG_TIMEOUT_S)
    assert caught.value.definite is True
    assert committer.pending_count == 3


async def test_pending_byte_bound(build: Build, raft: FakeRaft) -> None:
    raft.leader = None
    committer = build(max_pending_bytes=10)
    committer.propose(APP, b"123456", LONG_TIMEOUT_S)
    committer.propose(APP, b"1234", LONG_TIMEOUT_S)
    with pytest.raises(OverloadedError):
        committer.propose(APP, b"1", LONG_TIMEOUT_S)
    # Bytes freed by sending make room again.
    raft.leader = "n1"
    committer.kick()
    await wait_until(lambda: committer.pending_count == 0, "the flush")
    committer.propose(APP, b"1234567890", LONG_TIMEOUT_S)


async def test_command_above_the_size_limit_is_refused(build: Build) -> None:
    committer = build(max_command_bytes=8)
    committer.propose(APP, b"12345678", LONG_TIMEOUT_S)
    with pytest.raises(OverloadedError, match="exceeds"):
        committer.propose(APP, b"123456789", LONG_TIMEOUT_S)


async def test_expired_proposals_do_not_hold_the_pending_bound(build: Build, raft: FakeRaft) -> None:
    raft.leader = None
    committer = build(max_pending_commands=2)
    expired = [committer.propose(APP, b"x", SHORT_TIMEOUT_S) for _ in range(2)]
    for future in expired:
        assert isinstance(await failure(future), NoLeaderError)
    # Still leaderless, but nothing live is waiting: a new proposal is accepted, not "overloaded".
    fresh = committer.propose(APP, b"y", LONG_TIMEOUT_S)
    assert committer.pending_count == 1
    raft.leader = "n1"
    committer.kick()
    await wait_until(lambda: len(raft.entries) == 1, "the entry")
    assert raft.sent_commands() == [[b"y"]]
    raft.entries[0].apply(index=1)
    assert (await outcome(fresh)).index == 1


async def test_stop_fails_queued_and_inflight_proposals(build: Build, raft: FakeRaft) -> None:
    committer = build(max_inflight_entries=1)
    inflight = committer.propose(APP, b"sent", LONG_TIMEOUT_S)
    await next_iterations()
    queued = committer.propose(APP, b"queued", LONG_TIMEOUT_S)
    committer.stop()
    for future in (inflight, queued):
        assert isinstance(await failure(future), NodeStoppedError)
    with pytest.raises(NodeStoppedError):
        committer.propose(APP, b"late", LONG_TIMEOUT_S)
    # Raft settling the old entry after the stop is ignored, and nothing new is sent.
    raft.entries[0].settle(EntryOutcome.RETRY)
    await next_iterations()
    assert raft.sent_commands() == [[b"sent"]]
    assert (committer.pending_count, committer.inflight_count) == (0, 0)


@pytest.fixture
def clock_an_hour_later(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Move the committer's stuck-entry clock (not the event loop's) an hour forward."""
    def advance() -> None:
        later = types.SimpleNamespace(monotonic=lambda: time.monotonic() + 3600.0)
        monkeypatch.setattr(group_commit, "time", later)
    return advance


async def test_reap_frees_the_window_from_stuck_entries(build: Build, raft: FakeRaft,
                                                         clock_an_hour_later: Callable[[], None]) -> None:
    committer = build(max_inflight_entries=1, entry_timeout_s=30.0)
    stuck = committer.propose(APP, b"stuck", LONG_TIMEOUT_S)
    await next_iterations()
    waiting = committer.propose(APP, b"waiting", LONG_TIMEOUT_S)
    committer.reap()
    await next_iterations()
    assert committer.inflight_count == 1  # not stuck yet: nothing reaped
    assert not stuck.done()

    clock_an_hour_later()
    committer.reap()
    error = await failure(stuck)
    assert isinstance(error, ProposalTimeout)
    assert error.definite is False
    await wait_until(lambda: len(raft.entries) == 2, "the waiting proposal's entry")
    assert raft.sent_commands()[1] == [b"waiting"]
    # The stuck entry's late answer is ignored; the new one resolves normally.
    raft.entries[0].apply(index=5)
    raft.entries[1].apply(index=6)
    assert (await outcome(waiting)).index == 6
    assert isinstance(stuck.exception(), ProposalTimeout)


async def test_a_cancelled_callers_queued_proposal_is_never_sent(build: Build, raft: FakeRaft) -> None:
    raft.leader = None
    committer = build()
    cancelled = committer.propose(APP, b"cancelled", LONG_TIMEOUT_S)
    kept = committer.propose(APP, b"kept", LONG_TIMEOUT_S)
    await next_iterations()
    cancelled.cancel()
    raft.leader = "n1"
    committer.kick()
    await wait_until(lambda: len(raft.entries) == 1, "the entry")
    await next_iterations()
    assert raft.sent_commands() == [[b"kept"]]
    raft.entries[0].apply(index=2)
    assert await outcome(kept) == Applied(b"ok:kept", 2)


async def test_a_cancelled_proposal_alone_sends_nothing(build: Build, raft: FakeRaft) -> None:
    raft.leader = None
    committer = build()
    committer.propose(APP, b"cancelled", LONG_TIMEOUT_S).cancel()
    raft.leader = "n1"
    committer.kick()
    await next_iterations()
    assert raft.entries == []
    assert committer.pending_count == 0


async def test_a_synchronously_refusing_engine_does_not_block_the_loop(
        build: Build, raft: FakeRaft, caplog: pytest.LogCaptureFixture) -> None:
    committer = build()
    raft.refusals_left = 1
    with caplog.at_level(logging.CRITICAL, logger=group_commit.__name__):
        future = committer.propose(APP, b"x", LONG_TIMEOUT_S)
        # The refused entry is retried later, on a later loop iteration, and then goes through.
        await wait_until(lambda: len(raft.entries) == 1, "the retried entry")
    raft.entries[0].apply(index=1)
    assert (await outcome(future)).index == 1


async def test_an_engine_that_always_refuses_fails_by_the_deadline(build: Build, raft: FakeRaft,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    committer = build()
    raft.refusals_left = 1_000_000
    with caplog.at_level(logging.CRITICAL, logger=group_commit.__name__):
        error = await failure(committer.propose(APP, b"x", SHORT_TIMEOUT_S))
    assert error.definite is True  # the engine never took it
    assert raft.refusals_left > 1_000_000 - 10  # retried at a gentle pace, not in a hot loop


async def test_stepping_down_reports_in_flight_entries_unknown_at_once(
        build: Build, raft: FakeRaft) -> None:
    committer = build()
    sent = [committer.propose(APP, c, LONG_TIMEOUT_S) for c in (b"x", b"y")]
    await wait_until(lambda: len(raft.entries) == 1, "the entry")
    raft.leader = None
    committer.abandon_inflight("stepped down")
    for future in sent:
        error = await failure(future)
        assert isinstance(error, LeadershipLost) and error.definite is False
    assert committer.inflight_count == 0
    # A late answer from Raft for the abandoned entry changes nothing.
    raft.entries[0].apply(index=9)
    await next_iterations()
    # Proposals made afterwards go out as usual, once a leader is known again.
    raft.leader = "n2"
    later = committer.propose(APP, b"z", LONG_TIMEOUT_S)
    await wait_until(lambda: len(raft.entries) == 2, "the next entry")
    raft.entries[1].apply(index=10)
    assert await outcome(later) == Applied(b"ok:z", 10)
