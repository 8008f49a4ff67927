"""The one timer heap: lease expiry, message TTL and delayed delivery for every queue.

Entries are `(deadline_ms, message_id, queue, kind, lease_id)`. The order among timers with the
same deadline is fixed by the message id (then queue name and kind), not by insertion order, so
a heap rebuilt from a snapshot fires in exactly the order the original would have: the two
replicas stay identical. Entries are never removed when they become moot (ack, extend, ...);
whoever pops one re-checks it against the message, and the heap is compacted when moot
entries pile up.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heapify, heappop, heappush
from typing import TypeAlias

__all__ = ["DELAY", "LEASE", "TTL", "Timer", "TimerHeap"]

# Kinds, in the order they fire when deadline and message coincide: a delay that ends exactly
# when the TTL does makes the message ready first, and then the TTL expires it.
DELAY = 0
LEASE = 1
TTL = 2

Timer: TypeAlias = tuple[int, int, str, int, int]

_COMPACT_MIN_ENTRIES = 4096


class TimerHeap:
    __slots__ = ("_compact_at", "entries")

    def __init__(self) -> None:
        self.entries: list[Timer] = []
        self._compact_at = _COMPACT_MIN_ENTRIES

    def push(self, deadline_ms: int, message_id: int, queue: str, kind: int, lease_id: int = 0) -> None:
        heappush(self.entries, (deadline_ms, message_id, queue, kind, lease_id))

    def next_deadline_ms(self) -> int | None:
        return self.entries[0][0] if self.entries else None

    def pop_due(self, now_ms: int) -> Timer | None:
        entries = self.entries
        if entries and entries[0][0] <= now_ms:
            return heappop(entries)
        return None

    def drop_top(self) -> None:
        heappop(self.entries)

    def compact_if_needed(self, is_live: Callable[[Timer], bool]) -> None:
        """Drop moot entries once the heap has doubled since the last compaction: O(1) amortised
        per push, and the heap stays within a constant factor of the live timers."""
        if len(self.entries) < self._compact_at:
            return
        live = [entry for entry in self.entries if is_live(entry)]
        heapify(live)
        self.entries = live
        self._compact_at = max(_COMPACT_MIN_ENTRIES, 2 * len(live))

    def reset(self, entries: list[Timer]) -> None:
        heapify(entries)
        self.entries = entries
        self._compact_at = max(_COMPACT_MIN_ENTRIES, 2 * len(entries))
