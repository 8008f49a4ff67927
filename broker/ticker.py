"""The leader's clock: proposes `Tick(now_ms)` when a lease, TTL or delay is due.

The state machine never reads a clock (every replica must compute the same thing), so time
only moves when a command carries it. Busy clusters move time with every command; an idle
one needs the leader to propose a `Tick` when the earliest timer is due. Only the leader
ticks (a follower's tick would be forwarded and race the leader's), at most one tick is in
flight, and ticks are spaced by `MIN_TICK_GAP_MS` so a timer that somehow stays due cannot
flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "FOLLOWER_POLL_S",
    "MAX_SLEEP_S",
    "MIN_SLEEP_S",
    "MIN_TICK_GAP_MS",
    "DeadlineSource",
    "Ticker",
    "TickerNode",
    "next_tick_delay_s",
    "wall_clock_ms",
]

MAX_SLEEP_S = 1.0
MIN_SLEEP_S = 0.005
MIN_TICK_GAP_MS = 20
# A follower only checks whether it became leader; apply notifications wake it sooner.
FOLLOWER_POLL_S = 0.1
TICK_PROPOSE_TIMEOUT_S = 5.0

log = logging.getLogger(__name__)


class TickerNode(Protocol):
    """What the ticker needs from the Raft node (RaftNode satisfies it)."""

    @property
    def is_leader(self) -> bool: ...

    def state_lock(self) -> threading.Lock: ...

    def add_apply_listener(self, callback: Callable[[int], None]) -> None: ...

    async def propose(self, command: bytes, timeout_s: float = ...) -> object: ...


class DeadlineSource(Protocol):
    """What the ticker needs from the state machine (BrokerState satisfies it)."""

    def next_deadline_ms(self) -> int | None: ...


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def next_tick_delay_s(
    *, now_ms: int, next_deadline_ms: int | None, last_tick_ms: int | None, is_leader: bool
) -> float:
    """Seconds to wait before the next tick; 0.0 means "propose a tick now".

    `last_tick_ms` is when this node last proposed a tick (None: never).
    """
    if not is_leader:
        return FOLLOWER_POLL_S
    if next_deadline_ms is None:
        return MAX_SLEEP_S
    due_ms = next_deadline_ms
    if last_tick_ms is not None:
        due_ms = max(due_ms, last_tick_ms + MIN_TICK_GAP_MS)
    wait_ms = due_ms - now_ms
    if wait_ms <= 0:
        return 0.0
    return min(MAX_SLEEP_S, max(MIN_SLEEP_S, wait_ms / 1000.0))


def _encode_tick(now_ms: int) -> bytes:
    # Imported lazily so this module (and its scheduling function) loads without the codec.
    from raftmq.broker.commands import Tick, encode_command

    return encode_command(Tick(now_ms))


class Ticker:
    """Runs the tick loop as an asyncio task on the node's event loop."""

    def __init__(
        self,
        node: TickerNode,
        state: DeadlineSource,
        *,
        clock_ms: Callable[[], int] = wall_clock_ms,
        encode_tick: Callable[[int], bytes] = _encode_tick,
    ) -> None:
        self._node = node
        self._state = state
        self._clock_ms = clock_ms
        self._encode_tick = encode_tick
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_tick_ms: int | None = None
        self.ticks_proposed = 0
        self.tick_failures = 0

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("ticker already started")
        # A new entry may have created an earlier timer (say a 50 ms delay) than the one the
        # loop sleeps towards, so every apply makes the leader re-read the next deadline.
        self._node.add_apply_listener(self._on_applied)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="raftmq-ticker")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _on_applied(self, _applied_index: int) -> None:
        if self._task is not None and self._node.is_leader:
            self._wake.set()

    def _delay_s(self) -> float:
        is_leader = self._node.is_leader
        deadline_ms: int | None = None
        if is_leader:
            with self._node.state_lock():
                deadline_ms = self._state.next_deadline_ms()
        return next_tick_delay_s(
            now_ms=self._clock_ms(),
            next_deadline_ms=deadline_ms,
            last_tick_ms=self._last_tick_ms,
            is_leader=is_leader,
        )

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            delay_s = self._delay_s()
            if delay_s == 0.0:
                await self._tick()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay_s)

    async def _tick(self) -> None:
        now_ms = self._clock_ms()
        self._last_tick_ms = now_ms
        try:
            await self._node.propose(self._encode_tick(now_ms), timeout_s=TICK_PROPOSE_TIMEOUT_S)
            self.ticks_proposed += 1
        except Exception as exc:  # any failure just means "try again after the gap"
            self.tick_failures += 1
            log.debug("tick at %d ms not applied: %r", now_ms, exc)
