"""What every check shares: anomaly kinds, the `Anomaly` record, the collector that counts
findings, and fault windows (also drawn by the report's timeline)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from raftmq.chaos.history import Op

__all__ = [
    "CHECKERS",
    "INFO_KINDS",
    "VIOLATION_KINDS",
    "Anomaly",
    "FaultWindow",
    "Findings",
    "Placed",
    "fault_windows",
    "lost_kind",
    "order_inversions",
]

# Which anomaly kinds each checker reports; the report's table follows this order.
CHECKERS: Mapping[str, tuple[str, ...]] = {
    "lost": ("lost", "undrained", "expired_unobserved"),
    "unexpected": ("unexpected",),
    "duplicated": ("duplicated", "delivery_count_regressed", "duplicate_unidempotent",
                   "late_delivery"),
    "publish_outcomes": ("failed_but_stored", "recovered", "unknown_absent"),
    "order": ("order",),
    "divergence": ("divergent_read",),
    "replicas": ("replicas_differ", "missing_digest"),
    "dead_letter_accounting": ("dead_letter_accounting", "unsettled", "unsettled_undrained"),
    "stall": ("stall",),
}
VIOLATION_KINDS = frozenset({
    "lost", "undrained", "unexpected", "duplicated", "delivery_count_regressed", "failed_but_stored", "order",
    "divergent_read", "replicas_differ", "dead_letter_accounting", "unsettled",
})
INFO_KINDS = frozenset(kind for kinds in CHECKERS.values() for kind in kinds) - VIOLATION_KINDS


def lost_kind(drain_complete: bool | None) -> str:
    """A confirmed message that never arrived is lost, unless the drain for its target ended
    incomplete: then it may still be queued behind a backlog, which is a failure of the run
    (it could not drain) but not proof of loss."""
    return "undrained" if drain_complete is False else "lost"


@dataclass(frozen=True)
class Anomaly:
    kind: str
    message: str
    details: dict[str, Any]
    # The first operation that shows it: anomalies sort by (kind, time_ms, index).
    time_ms: float
    index: int

    @property
    def violation(self) -> bool:
        return self.kind in VIOLATION_KINDS

    def sort_key(self) -> tuple[str, float, int, str]:
        return self.kind, self.time_ms, self.index, self.message

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "violation": self.violation, "message": self.message,
                "time_ms": self.time_ms, "index": self.index, "details": self.details}


class Findings:
    """Collects anomalies and counts per kind. Info findings that can number in the thousands
    (unknown outcomes that arrived, ...) are counted one by one but reported as one anomaly."""

    def __init__(self) -> None:
        self.anomalies: list[Anomaly] = []
        self.counts: Counter[str] = Counter()

    def add(self, kind: str, message: str, details: dict[str, Any], op_time_ms: float, op_index: int) -> None:
        if kind not in VIOLATION_KINDS and kind not in INFO_KINDS:
            raise ValueError(f"unknown anomaly kind {kind!r}")
        self.anomalies.append(Anomaly(kind, message, details, op_time_ms, op_index))
        self.counts[kind] += 1

    def add_summary(self, kind: str, message: str, items: list[tuple[float, int, str]],
                    details: dict[str, Any] | None = None, sample_size: int = 50) -> None:
        """One anomaly for many findings of an info kind: items are (time_ms, index, id)."""
        if not items:
            return
        if kind in VIOLATION_KINDS:
            raise ValueError(f"violations are reported one by one, not summarised: {kind}")
        items = sorted(items)
        sample = [item_id for _, _, item_id in items[:sample_size]]
        summary = {"count": len(items), "sample": sample, **(details or {})}
        self.anomalies.append(Anomaly(kind, f"{len(items)} {message}", summary, items[0][0], items[0][1]))
        self.counts[kind] += len(items)


@dataclass(frozen=True)
class FaultWindow:
    fault: str
    start_ms: float
    # None: the fault was never stopped before the history ended.
    stop_ms: float | None
    nodes: tuple[str, ...]
    start_index: int

    def end_ms(self, history_end_ms: float) -> float:
        return history_end_ms if self.stop_ms is None else self.stop_ms


def fault_windows(ops: Iterable[Op]) -> list[FaultWindow]:
    """Nemesis windows: each `start` runs to the next `stop` of the same fault name (a second
    start before that stop opens a second window ending at the same stop)."""
    open_starts: dict[str, list[Op]] = {}
    windows: list[FaultWindow] = []
    for op in ops:
        if op.f != "nemesis" or op.type != "event":
            continue
        fault, action = op.value["fault"], op.value["action"]
        if action == "start":
            open_starts.setdefault(fault, []).append(op)
            continue
        if action != "stop":
            continue  # an observation inside or after a window changes no window
        for start in open_starts.pop(fault, []):
            windows.append(_window(start, op.time_ms))
    for starts in open_starts.values():
        windows.extend(_window(start, None) for start in starts)
    windows.sort(key=lambda window: (window.start_ms, window.start_index))
    return windows


def _window(start: Op, stop_ms: float | None) -> FaultWindow:
    nodes = tuple(start.value.get("nodes", ()))
    return FaultWindow(start.value["fault"], start.time_ms, stop_ms, nodes, start.index)


@dataclass(frozen=True, slots=True)
class Placed:
    """A message of one producer in one ordered place (a queue, a stream partition)."""

    id: str
    invoke_index: int
    ok_index: int | None  # None: not known to have completed ok
    position: int  # message_id in a queue, offset in a partition


def order_inversions(placed: Iterable[Placed]) -> list[tuple[Placed, Placed]]:
    """Pairs (m1, m2) where m1's ok came before m2's invoke but m1 sits after m2.

    O(n log n): walk the messages in invoke order while admitting, in ok order, every message
    whose ok came before the current invoke, keeping only the admitted one with the highest
    position; the current message is out of order iff it sits before that one."""
    items = list(placed)
    completed = sorted((item for item in items if item.ok_index is not None),
                       key=lambda item: item.ok_index or 0)
    highest: Placed | None = None
    admitted = 0
    inversions: list[tuple[Placed, Placed]] = []
    for later in sorted(items, key=lambda item: item.invoke_index):
        while admitted < len(completed) and (completed[admitted].ok_index or 0) < later.invoke_index:
            candidate = completed[admitted]
            if highest is None or candidate.position > highest.position:
                highest = candidate
            admitted += 1
        if highest is not None and highest.position > later.position:
            inversions.append((highest, later))
    return inversions
