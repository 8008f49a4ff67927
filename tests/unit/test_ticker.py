"""The leader's tick scheduling: the pure delay function and the loop against fakes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from raftmq.broker.ticker import (
    FOLLOWER_POLL_S,
    MAX_SLEEP_S,
    MIN_SLEEP_S,
    MIN_TICK_GAP_MS,
    Ticker,
    next_tick_delay_s,
)


def delay(now_ms: int, deadline_ms: int | None, last_tick_ms: int | None = None,
          is_leader: bool = True) -> float:
    return next_tick_delay_s(now_ms=now_ms, next_deadline_ms=deadline_ms,
                             last_tick_ms=last_tick_ms, is_leader=is_leader)


def test_follower_never_ticks() -> None:
    assert delay(10_000, 0, is_leader=False) == FOLLOWER_POLL_S


def test_nothing_pending_sleeps_the_maximum() -> None:
    assert delay(10_000, None) == MAX_SLEEP_S


@pytest.mark.parametrize("deadline_ms", [9_000, 10_000])
def test_due_deadline_ticks_now(deadline_ms: int) -> None:
    assert delay(10_000, deadline_ms) == 0.0


def test_future_deadline_sleeps_until_it() -> None:
    assert delay(10_000, 10_250) == pytest.approx(0.25)


def test_far_deadline_is_capped() -> None:
    assert delay(10_000, 10_000 + 60_000) == MAX_SLEEP_S


def test_near_deadline_has_a_floor() -> None:
    assert delay(10_000, 10_001) == MIN_SLEEP_S


def test_ticks_are_spaced_by_the_minimum_gap() -> None:
    # A deadline that stays due (in the past) must not produce back-to-back ticks.
    assert delay(10_005, 9_000, last_tick_ms=10_000) == pytest.approx(
        (MIN_TICK_GAP_MS - 5) / 1000
    )
    assert delay(10_000 + MIN_TICK_GAP_MS, 9_000, last_tick_ms=10_000) == 0.0


def test_old_last_tick_does_not_delay() -> None:
    assert delay(10_000, 10_100, last_tick_ms=1_000) == pytest.approx(0.1)


class FakeNode:
    def __init__(self) -> None:
        self.is_leader = True
        self.lock = threading.Lock()
        self.proposed: list[bytes] = []
        self.listeners: list[Callable[[int], None]] = []
        self.fail_with: Exception | None = None

    def state_lock(self) -> threading.Lock:
        return self.lock

    def add_apply_listener(self, callback: Callable[[int], None]) -> None:
        self.listeners.append(callback)

    async def propose(self, command: bytes, timeout_s: float = 5.0) -> object:
        assert self.lock.locked() is False, "must not propose while holding the state lock"
        self.proposed.append(command)
        if self.fail_with is not None:
            raise self.fail_with
        return None


class FakeState:
    def __init__(self, node: FakeNode) -> None:
        self.node = node
        self.deadline_ms: int | None = None
        self.read_unlocked = False

    def next_deadline_ms(self) -> int | None:
        self.read_unlocked |= not self.node.lock.locked()
        return self.deadline_ms


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.002)


def make_ticker() -> tuple[Ticker, FakeNode, FakeState, Clock]:
    node = FakeNode()
    state = FakeState(node)
    clock = Clock()
    ticker = Ticker(node, state, clock_ms=clock, encode_tick=lambda ms: str(ms).encode())
    return ticker, node, state, clock


async def test_leader_proposes_a_tick_with_its_clock_when_due() -> None:
    ticker, node, state, clock = make_ticker()
    state.deadline_ms = clock.ms - 1
    ticker.start()
    try:
        await wait_until(lambda: len(node.proposed) >= 1)
        assert node.proposed[0] == str(clock.ms).encode()
        assert not state.read_unlocked
    finally:
        await ticker.stop()


async def test_stuck_deadline_is_rate_limited() -> None:
    ticker, node, state, clock = make_ticker()
    state.deadline_ms = 0  # always due, and the fake clock never moves
    ticker.start()
    try:
        await wait_until(lambda: len(node.proposed) >= 1)
        await asyncio.sleep(0.1)
        # Wall time moved but the node's clock did not: the gap holds it to one tick.
        assert len(node.proposed) == 1
        clock.ms += MIN_TICK_GAP_MS
        await wait_until(lambda: len(node.proposed) >= 2)
    finally:
        await ticker.stop()


async def test_follower_does_not_tick_until_it_leads() -> None:
    ticker, node, state, _clock = make_ticker()
    node.is_leader = False
    state.deadline_ms = 0
    ticker.start()
    try:
        await asyncio.sleep(0.05)
        assert node.proposed == []
        node.is_leader = True
        await wait_until(lambda: len(node.proposed) == 1, timeout_s=FOLLOWER_POLL_S + 1.0)
    finally:
        await ticker.stop()


async def test_apply_listener_wakes_the_loop_for_an_earlier_deadline() -> None:
    ticker, node, state, clock = make_ticker()
    ticker.start()
    try:
        await asyncio.sleep(0.02)  # the loop is now in its 1 s sleep: nothing pending
        state.deadline_ms = clock.ms
        for listener in node.listeners:
            listener(42)
        await wait_until(lambda: len(node.proposed) == 1, timeout_s=MAX_SLEEP_S / 2)
    finally:
        await ticker.stop()


async def test_failed_proposals_are_counted_and_retried() -> None:
    ticker, node, state, clock = make_ticker()
    node.fail_with = RuntimeError("no leader")
    state.deadline_ms = 0
    ticker.start()
    try:
        await wait_until(lambda: ticker.tick_failures >= 1)
        clock.ms += MIN_TICK_GAP_MS
        await wait_until(lambda: ticker.tick_failures >= 2)
        assert ticker.ticks_proposed == 0
    finally:
        await ticker.stop()


async def test_stop_is_idempotent_and_start_twice_fails() -> None:
    ticker, _node, _state, _clock = make_ticker()
    ticker.start()
    with pytest.raises(RuntimeError):
        ticker.start()
    await ticker.stop()
    await ticker.stop()
