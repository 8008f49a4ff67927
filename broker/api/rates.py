"""Per-queue publish/deliver/ack rates, computed on this node from counter deltas.

Counters are replicated state; rates are not (they depend on when this node applied entries),
so each node samples its own counters about once a second and keeps a short window.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from raftmq.broker.results import QueueInfo

__all__ = ["RATE_WINDOW_S", "QueueRates", "RateTracker"]

# Long enough to smooth one-second sampling jitter, short enough to follow load changes.
RATE_WINDOW_S = 5.0
_MAX_SAMPLES = 8


@dataclass(frozen=True)
class QueueRates:
    publish_per_s: float = 0.0
    deliver_per_s: float = 0.0
    ack_per_s: float = 0.0

    def to_wire(self) -> dict[str, float]:
        return {
            "publish_per_s": round(self.publish_per_s, 3),
            "deliver_per_s": round(self.deliver_per_s, 3),
            "ack_per_s": round(self.ack_per_s, 3),
        }


@dataclass(frozen=True)
class _Sample:
    at_s: float
    published: int
    delivered: int
    acked: int


class RateTracker:
    """Bounded: one short deque per existing queue; deleted queues are forgotten."""

    def __init__(self, monotonic_s: Callable[[], float] = time.monotonic) -> None:
        self._monotonic_s = monotonic_s
        self._samples: dict[str, deque[_Sample]] = {}

    def record(self, queues: Iterable[QueueInfo]) -> None:
        now_s = self._monotonic_s()
        seen: dict[str, deque[_Sample]] = {}
        for info in queues:
            sample = _Sample(now_s, info.published, info.delivered, info.acked)
            history = self._samples.get(info.name) or deque(maxlen=_MAX_SAMPLES)
            if history and _went_backwards(history[-1], sample):
                # The queue was deleted and re-declared, or a snapshot was restored.
                history.clear()
            history.append(sample)
            while len(history) > 2 and now_s - history[0].at_s > RATE_WINDOW_S:
                history.popleft()
            seen[info.name] = history
        self._samples = seen

    def rates(self, queue: str) -> QueueRates:
        history = self._samples.get(queue)
        if not history or len(history) < 2:
            return QueueRates()
        first, last = history[0], history[-1]
        elapsed_s = last.at_s - first.at_s
        if elapsed_s <= 0:
            return QueueRates()
        return QueueRates(
            publish_per_s=(last.published - first.published) / elapsed_s,
            deliver_per_s=(last.delivered - first.delivered) / elapsed_s,
            ack_per_s=(last.acked - first.acked) / elapsed_s,
        )


def _went_backwards(before: _Sample, after: _Sample) -> bool:
    return (
        after.published < before.published
        or after.delivered < before.delivered
        or after.acked < before.acked
    )
