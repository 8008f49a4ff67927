"""What `raftmq bench` measures and how it reports it: latencies in an HDR histogram, the run's
counters, the live progress line and the summary (text or JSON).

The histogram is the `hdrhistogram` package's: fixed memory and a fixed relative precision
(3 significant digits) over 1 us .. 1 h, and percentiles computed the way HdrHistogram users
know them, rather than percentile code of our own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

__all__ = [
    "PERCENTILES",
    "BenchCounters",
    "LatencyRecorder",
    "progress_line",
    "summary_document",
    "summary_json",
    "summary_text",
]

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


class LatencyRecorder:
    """Latencies in microseconds; reports milliseconds.

    Recording one value costs the pure-Python histogram ~6 us, too much at tens of thousands
    of confirms per second. So samples are first counted per value rounded down to the
    histogram's own resolution (values below its sub-bucket count are exact; above, the low
    bits it would drop are dropped here), and added to the histogram in bulk whenever a
    figure is read: the same histogram, for ~0.3 us a sample."""

    def __init__(self) -> None:
        self._histogram = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        # With a lowest value of 1 the sub-bucket count is 2**(this); see the docstring.
        self._exact_bits = int(self._histogram.sub_bucket_half_count_magnitude) + 1
        self._pending: dict[int, int] = {}

    def record_s(self, seconds: float, count: int = 1) -> None:
        # Clamped into the histogram's range: a clock step must not lose the sample.
        micros = min(HIGHEST_US, max(LOWEST_US, int(seconds * 1_000_000)))
        shift = micros.bit_length() - self._exact_bits
        if shift > 0:
            micros = micros >> shift << shift
        pending = self._pending
        pending[micros] = pending.get(micros, 0) + count

    def _flush(self) -> HdrHistogram:
        if self._pending:
            for micros, count in self._pending.items():
                self._histogram.record_value(micros, count)
            self._pending.clear()
        return self._histogram

    @property
    def count(self) -> int:
        return int(self._flush().get_total_count())

    def percentile_ms(self, percentile: float) -> float:
        return float(self._flush().get_value_at_percentile(percentile)) / 1000.0

    def summary_ms(self) -> dict[str, float | int] | None:
        """count, p50 .. p99.9, max and mean; None before the first sample."""
        if self.count == 0:
            return None
        summary: dict[str, float | int] = {"count": self.count}
        for name, percentile in PERCENTILES:
            summary[name] = round(self.percentile_ms(percentile), 3)
        histogram = self._flush()
        summary["max"] = round(float(histogram.get_max_value()) / 1000.0, 3)
        summary["mean"] = round(float(histogram.get_mean_value()) / 1000.0, 3)
        return summary


@dataclass
class BenchCounters:
    """Counted by the producers' confirm callbacks and the consumers' loops (one event loop,
    so plain integers suffice)."""

    sent: int = 0
    confirmed: int = 0
    unroutable: int = 0
    rejected: int = 0
    failed: int = 0
    unknown: int = 0
    consumed: int = 0
    foreign: int = 0  # consumed, but not published by this run
    errors: dict[str, int] = field(default_factory=dict)  # publish errors: messages per code
    consumer_errors: dict[str, int] = field(default_factory=dict)  # consumers ended by a code
    last_confirm_s: float = 0.0  # since the start of publishing
    last_consume_s: float = 0.0

    def note_error(self, code: str, *, definite: bool) -> None:
        if definite:
            self.failed += 1
        else:
            self.unknown += 1
        self.errors[code] = self.errors.get(code, 0) + 1


def progress_line(elapsed_s: float, published_per_s: float, consumed_per_s: float | None,
                  in_flight: int, latency: LatencyRecorder) -> str:
    parts = [f"[{elapsed_s:5.1f}s]", f"pub {published_per_s:>9,.0f} msg/s"]
    if consumed_per_s is not None:
        parts.append(f"con {consumed_per_s:>9,.0f} msg/s")
    parts.append(f"in flight {in_flight:>7,}")
    if latency.count:
        parts.append(f"p50 {latency.percentile_ms(50.0):7.2f} ms  "
                     f"p99 {latency.percentile_ms(99.0):7.2f} ms")
    return "  ".join(parts)


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def summary_document(settings: dict[str, Any], counters: BenchCounters, *, size_bytes: int,
                     consumers: int, expected_consumed: int, publish_latency: LatencyRecorder,
                     end_to_end: LatencyRecorder) -> dict[str, Any]:
    publish_s = counters.last_confirm_s
    document: dict[str, Any] = {
        **settings,
        "published": {
            "sent": counters.sent, "confirmed": counters.confirmed,
            "unroutable": counters.unroutable, "rejected": counters.rejected,
            "failed": counters.failed, "unknown": counters.unknown,
            "seconds": round(publish_s, 3),
            "msgs_per_s": _rate(counters.confirmed, publish_s),
            "bytes_per_s": _rate(counters.confirmed * size_bytes, publish_s),
        },
        "consumed": None,
        "publish_latency_ms": publish_latency.summary_ms(),
        "end_to_end_latency_ms": end_to_end.summary_ms(),
        "errors": dict(counters.errors),
        "consumer_errors": dict(counters.consumer_errors),
    }
    if consumers > 0:
        consume_s = counters.last_consume_s
        document["consumed"] = {
            "messages": counters.consumed, "expected": expected_consumed,
            "foreign": counters.foreign, "seconds": round(consume_s, 3),
            "msgs_per_s": _rate(counters.consumed, consume_s),
            "bytes_per_s": _rate(counters.consumed * size_bytes, consume_s),
        }
    return document


def _latency_text(title: str, summary: dict[str, float | int] | None) -> str:
    if summary is None:
        return f"{title}: no samples"
    values = "  ".join(f"{name} {summary[name]:.2f}" for name, _ in PERCENTILES)
    return f"{title} (ms, {summary['count']:,} samples): {values}  max {summary['max']:.2f}"


def summary_text(document: dict[str, Any]) -> str:
    published = document["published"]
    lines = [
        f"{document['target']} {document['name']}: {document['producers']} producers, "
        f"{document['consumers']} consumers, {document['size_bytes']} B messages, batches of up "
        f"to {document['batch']}, {document['in_flight']} in flight per producer, "
        + (f"target rate {document['rate']:,g} msg/s" if document["rate"] else "no rate limit")
        + (" (interrupted)" if document.get("interrupted") else ""),
        f"published {published['confirmed']:,} msgs in {published['seconds']:.2f} s: "
        f"{published['msgs_per_s']:,.0f} msg/s ({published['bytes_per_s'] / 2**20:.1f} MiB/s); "
        f"sent {published['sent']:,}, confirmed {published['confirmed']:,}, unroutable "
        f"{published['unroutable']}, rejected {published['rejected']}, failed "
        f"{published['failed']}, unknown {published['unknown']}",
    ]
    consumed = document["consumed"]
    if consumed is not None:
        lines.append(
            f"consumed  {consumed['messages']:,} msgs in {consumed['seconds']:.2f} s: "
            f"{consumed['msgs_per_s']:,.0f} msg/s ({consumed['bytes_per_s'] / 2**20:.1f} MiB/s); "
            f"expected {consumed['expected']:,}"
            + (f", {consumed['foreign']:,} not from this run" if consumed["foreign"] else ""))
    origin = "from the scheduled send time" if document["rate"] else "from the send call"
    lines.append(_latency_text(f"publish confirm latency, {origin}",
                               document["publish_latency_ms"]))
    if consumed is not None:
        lines.append(_latency_text("end-to-end latency, publish to receipt",
                                   document["end_to_end_latency_ms"]))
    for code, count in sorted(document["errors"].items()):
        lines.append(f"publish error: {code}: {count:,} messages")
    for code, count in sorted(document["consumer_errors"].items()):
        lines.append(f"consumer error: {code}: {count} consumer{'s' if count != 1 else ''} stopped")
    return "\n".join(lines)


def summary_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True)
