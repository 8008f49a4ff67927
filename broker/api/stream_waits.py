"""Long-poll waits for stream data, woken by the node's apply listener.

Readers do not consume, so an append wakes every waiter of its partition (unlike queue claims,
where one ready message wakes one waiter). There is one event per (stream, partition) with
waiters, replaced after it fires, so an append costs one dict lookup whether one reader or a
thousand wait. The listener runs on the event loop, and a reader registers before it awaits,
without yielding in between, after checking the state: an append applied after that check is
drained by a later listener call and cannot be missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

from raftmq.broker.api.errors import ApiError
from raftmq.client import errors as codes

__all__ = ["DEFAULT_MAX_STREAM_WAITERS", "StreamWaits"]

# Concurrent stream long-polls and push subscriptions waiting on one node; more get 429.
DEFAULT_MAX_STREAM_WAITERS = 10_000

PartitionKey = tuple[str, int]


class StreamWaits:
    def __init__(
        self, max_waiters: int, *, drain_appends: Callable[[], list[PartitionKey]]
    ) -> None:
        """`drain_appends` drains the state's append notifications (taking the state lock)."""
        self._max_waiters = max_waiters
        self._drain_appends = drain_appends
        self._events: dict[PartitionKey, asyncio.Event] = {}
        self._count = 0
        self._closed = False

    @property
    def waiter_count(self) -> int:
        return self._count

    @property
    def closed(self) -> bool:
        return self._closed

    def on_applied(self, _applied_index: int) -> None:
        """The apply listener (on the event loop)."""
        if self._closed:
            return
        # Drained even with no waiters, so notifications never pile up in the state.
        for key in self._drain_appends():
            event = self._events.pop(key, None)
            if event is not None:
                event.set()

    async def wait_for_append(self, stream: str, partition: int, timeout_s: float) -> bool:
        """Wait until something is appended to the partition; False on timeout or shutdown.
        Call it right after finding no data, with no `await` in between."""
        with self.slot():
            if self._closed:
                return False
            key = (stream, partition)
            event = self._events.get(key)
            if event is None:
                event = self._events[key] = asyncio.Event()
            try:
                await asyncio.wait_for(event.wait(), timeout=timeout_s)
            except TimeoutError:
                return False
            return not self._closed

    async def wait_for_any(self, keys: list[PartitionKey], timeout_s: float) -> bool:
        """`wait_for_append` on several partitions at once (a group member's assignment)."""
        with self.slot():
            if self._closed or not keys:
                return False
            waits = []
            for key in keys:
                event = self._events.get(key)
                if event is None:
                    event = self._events[key] = asyncio.Event()
                waits.append(asyncio.ensure_future(event.wait()))
            try:
                done, _ = await asyncio.wait(waits, timeout=timeout_s,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
            return bool(done) and not self._closed

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Count one waiter against the bound for as long as the block runs."""
        if self._count >= self._max_waiters:
            raise ApiError(
                codes.TOO_MANY_WAITERS,
                f"this node already holds {self._max_waiters} stream waits; retry later",
            )
        self._count += 1
        try:
            yield
        finally:
            self._count -= 1

    def close(self) -> None:
        """Shutdown: wake everyone so long-polls answer at once instead of holding the stop."""
        self._closed = True
        for event in self._events.values():
            event.set()
        self._events.clear()
