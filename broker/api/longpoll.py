"""Long-poll claim waiters, woken by one dispatcher fed from the node's apply listener.

The apply listener drains `BrokerState.drain_ready_notifications()` once per callback and
wakes only waiters of the queues that got ready messages, and only as many of them as the
ready messages can serve (each waiter claims up to its `max_messages`), so one publish to a
queue with a thousand idle consumers proposes one claim, not a thousand. A woken waiter that
leaves (claimed, timed out or gone) passes the wake-up on if ready messages remain.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from raftmq.broker.api.errors import ApiError
from raftmq.client import errors as codes

__all__ = ["DEFAULT_MAX_WAITERS", "LongPollHub", "Waiter"]

# Concurrent long-poll claims on one node; more are refused with 429. Each costs a few KB
# (a parked request and its connection), so this bounds memory, not CPU.
DEFAULT_MAX_WAITERS = 10_000


@dataclass(eq=False)
class Waiter:
    queue: str
    max_messages: int
    event: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when the dispatcher counted this waiter as the taker of some ready messages.
    signalled: bool = False

    def rearm(self) -> None:
        self.signalled = False
        self.event.clear()

    async def wait(self, timeout_s: float) -> bool:
        """True if woken, False on timeout."""
        try:
            await asyncio.wait_for(self.event.wait(), timeout=timeout_s)
        except TimeoutError:
            return False
        return True


class LongPollHub:
    def __init__(
        self,
        max_waiters: int,
        *,
        drain_ready: Callable[[], dict[str, int]],
        ready_count: Callable[[str], int],
    ) -> None:
        """`drain_ready` drains the state's notifications and returns {queue: ready count};
        `ready_count` reads one queue's ready count (both take the state lock themselves)."""
        self._max_waiters = max_waiters
        self._drain_ready = drain_ready
        self._ready_count = ready_count
        self._waiters: dict[str, dict[int, Waiter]] = {}
        self._ids = itertools.count()
        self._count = 0
        self._closed = False

    @property
    def waiter_count(self) -> int:
        return self._count

    @property
    def closed(self) -> bool:
        return self._closed

    def on_applied(self, _applied_index: int) -> None:
        """The apply listener: runs on the event loop after entries were applied."""
        if self._closed:
            # A stopped app's listener stays registered; it must not steal notifications
            # from an app serving the same node later.
            return
        # Drained even with no waiters, so notifications never pile up in the state.
        ready_by_queue = self._drain_ready()
        for queue, ready in ready_by_queue.items():
            if queue in self._waiters:
                self._wake(queue, ready)

    def _wake(self, queue: str, ready: int) -> None:
        waiters = self._waiters.get(queue)
        if not waiters or ready <= 0:
            return
        covered = sum(w.max_messages for w in waiters.values() if w.signalled)
        for waiter in waiters.values():  # insertion order: the longest waiting first
            if covered >= ready:
                return
            if not waiter.signalled:
                waiter.signalled = True
                waiter.event.set()
                covered += waiter.max_messages

    @contextlib.contextmanager
    def waiter(self, queue: str, max_messages: int) -> Iterator[Waiter]:
        if self._count >= self._max_waiters:
            raise ApiError(
                codes.TOO_MANY_WAITERS,
                f"this node already holds {self._max_waiters} long-poll claims; retry later",
            )
        waiter = Waiter(queue, max_messages)
        waiter_id = next(self._ids)
        self._waiters.setdefault(queue, {})[waiter_id] = waiter
        self._count += 1
        try:
            yield waiter
        finally:
            self._remove(queue, waiter_id, waiter)

    def _remove(self, queue: str, waiter_id: int, waiter: Waiter) -> None:
        waiters = self._waiters[queue]
        del waiters[waiter_id]
        self._count -= 1
        if not waiters:
            del self._waiters[queue]
        elif waiter.signalled and not self._closed:
            # It may not have taken what it was woken for: let the others look.
            self._wake(queue, self._ready_count(queue))

    def close(self) -> None:
        """Shutdown: wake everyone so long-polls answer at once instead of holding the stop."""
        self._closed = True
        for waiters in self._waiters.values():
            for waiter in waiters.values():
                waiter.event.set()
