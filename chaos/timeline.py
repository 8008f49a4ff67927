"""The run over time, for the report: per-bucket publish throughput, delivery and read
throughput, publish latency percentiles (invoke to ok), unknown and failed publishes, and the
fault windows of the nemesis. Pure: history in, numbers out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from raftmq.chaos.check_common import FaultWindow, fault_windows
from raftmq.chaos.history import Op

__all__ = ["MAX_BUCKETS", "Bucket", "Timeline", "bucket", "percentile"]

# A long run with small buckets would draw more points than a chart can show: past this the
# buckets widen (Timeline.bucket_ms says by how much).
MAX_BUCKETS = 2000


@dataclass(frozen=True)
class Bucket:
    start_ms: float
    publish_ok: int
    deliveries_and_reads: int
    publish_unknown: int
    publish_fail: int
    latency_p50_ms: float | None  # None: no publish completed ok in the bucket
    latency_p99_ms: float | None
    publish_ok_per_s: float
    deliveries_and_reads_per_s: float


@dataclass(frozen=True)
class Timeline:
    bucket_ms: float
    start_ms: float
    end_ms: float
    buckets: list[Bucket]
    windows: list[FaultWindow]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (fraction in 0..1)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def bucket(history: Sequence[Op], bucket_ms: float = 1000.0) -> Timeline:
    if bucket_ms <= 0:
        raise ValueError("bucket_ms must be positive")
    windows = fault_windows(history)
    if not history:
        return Timeline(bucket_ms, 0.0, 0.0, [], windows)
    first_ms, end_ms = history[0].time_ms, history[-1].time_ms
    bucket_ms = max(bucket_ms, (end_ms - first_ms) / MAX_BUCKETS)
    start_ms = math.floor(first_ms / bucket_ms) * bucket_ms
    count = int((end_ms - start_ms) // bucket_ms) + 1
    tallies = _Tallies(count)
    invoked_ms: dict[object, float] = {}
    for op in history:
        slot = min(count - 1, int((op.time_ms - start_ms) // bucket_ms))
        if op.f in ("deliver", "read") and op.type == "event":
            tallies.flow[slot] += 1
        elif op.f == "publish":
            _tally_publish(op, slot, tallies, invoked_ms)
    seconds = bucket_ms / 1000.0
    buckets = [_bucket(start_ms + slot * bucket_ms, slot, tallies, seconds) for slot in range(count)]
    return Timeline(bucket_ms, start_ms, end_ms, buckets, windows)


class _Tallies:
    def __init__(self, count: int) -> None:
        self.publish_ok = [0] * count
        self.flow = [0] * count
        self.unknown = [0] * count
        self.fail = [0] * count
        self.latencies: list[list[float]] = [[] for _ in range(count)]


def _tally_publish(op: Op, slot: int, tallies: _Tallies, invoked_ms: dict[object, float]) -> None:
    key = (op.process, op.value.get("id"))
    if op.type == "invoke":
        invoked_ms[key] = op.time_ms
        return
    started_ms = invoked_ms.pop(key, None)
    if op.type == "ok":
        tallies.publish_ok[slot] += 1
        if started_ms is not None:
            tallies.latencies[slot].append(op.time_ms - started_ms)
    elif op.type == "unknown":
        tallies.unknown[slot] += 1
    elif op.type == "fail":
        tallies.fail[slot] += 1


def _bucket(start_ms: float, slot: int, tallies: _Tallies, seconds: float) -> Bucket:
    latencies = sorted(tallies.latencies[slot])
    p50 = percentile(latencies, 0.5) if latencies else None
    p99 = percentile(latencies, 0.99) if latencies else None
    publish_ok, flow = tallies.publish_ok[slot], tallies.flow[slot]
    return Bucket(start_ms, publish_ok, flow, tallies.unknown[slot], tallies.fail[slot], p50, p99,
                  publish_ok / seconds, flow / seconds)
