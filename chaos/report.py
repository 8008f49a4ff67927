"""The chaos report: one self-contained HTML file (inline CSS and SVG, no script, no external
asset) with the run's metadata, the verdict, counts per checker, the anomalies and charts of
throughput, latency and errors over time with the fault windows shaded."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path

from raftmq.chaos.check_common import CHECKERS, VIOLATION_KINDS, Anomaly
from raftmq.chaos.checker import CheckResult
from raftmq.chaos.history import Op
from raftmq.chaos.report_svg import Series, line_chart
from raftmq.chaos.timeline import Timeline, bucket

__all__ = ["MAX_ANOMALIES_SHOWN", "render_report", "write_report"]

MAX_ANOMALIES_SHOWN = 200
_META_ORDER = ("scenario", "seed", "nodes", "duration_s", "duration_ms", "schedule")
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f3f3f3}.num{text-align:right}
.verdict{display:inline-block;padding:4px 12px;border-radius:4px;font-weight:bold;color:#fff}
.valid{background:#2a7f3f}.invalid{background:#b3261e}.violation{color:#b3261e;font-weight:bold}
.info{color:#555}pre{margin:0;white-space:pre-wrap;font-size:12px;max-width:520px}
svg.chart{width:100%;height:auto;border:1px solid #eee;margin:.5em 0}
svg .grid{stroke:#eee}svg .axis{stroke:#888}svg .tick,svg .legend{font-size:11px;fill:#444}
svg .chart-title{font-size:13px;font-weight:bold;fill:#222}svg .fault-label{font-size:10px;fill:#8c1c2c}
"""


def write_report(path: str | Path, *, history: Sequence[Op], result: CheckResult,
                 meta: Mapping[str, object], bucket_ms: float = 1000.0) -> None:
    """Write the report (replacing the file through a temporary so a reader never sees half)."""
    target = Path(path)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(render_report(history=history, result=result, meta=meta, bucket_ms=bucket_ms),
                         encoding="utf-8")
    temporary.replace(target)


def render_report(*, history: Sequence[Op], result: CheckResult, meta: Mapping[str, object],
                  bucket_ms: float = 1000.0) -> str:
    timeline = bucket(history, bucket_ms)
    title = f"raftmq chaos report: {meta.get('scenario', 'run')}"
    verdict = ('<span class="verdict valid">VALID</span>' if result.valid
               else f'<span class="verdict invalid">INVALID: {len(result.violations)} violation(s)</span>')
    sections = [
        f"<h1>{escape(title)}</h1>", f"<p>{verdict}</p>",
        "<h2>Run</h2>", _meta_table(meta),
        "<h2>Timeline</h2>", _charts(timeline),
        "<h2>Fault windows</h2>", _windows_table(timeline),
        "<h2>Checks</h2>", _counts_table(result),
        "<h2>Anomalies</h2>", _anomalies(result.anomalies),
        "<h2>Statistics</h2>", _stats_table(result.stats),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(sections) + "\n</body>\n</html>\n")


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _meta_table(meta: Mapping[str, object]) -> str:
    keys = [key for key in _META_ORDER if key in meta] + sorted(key for key in meta if key not in _META_ORDER)
    rows = []
    for key in keys:
        value = meta[key]
        if isinstance(value, list | tuple) and key in ("schedule", "nodes"):
            items = "".join(f"<li>{escape(_text(item))}</li>" for item in value)
            cell = f"<ol>{items}</ol>" if key == "schedule" else escape(", ".join(_text(v) for v in value))
        else:
            cell = escape(_text(value))
        rows.append(f"<tr><th>{escape(key)}</th><td>{cell}</td></tr>")
    return "<table>" + "".join(rows) + "</table>" if rows else "<p>No metadata.</p>"


def _charts(timeline: Timeline) -> str:
    if not timeline.buckets:
        return "<p>Empty history: nothing to chart.</p>"
    times_s = [(entry.start_ms + timeline.bucket_ms / 2) / 1000.0 for entry in timeline.buckets]
    end_ms = timeline.start_ms + len(timeline.buckets) * timeline.bucket_ms
    span_s = (timeline.start_ms / 1000.0, end_ms / 1000.0)
    buckets = timeline.buckets
    charts = [
        line_chart("Throughput", "per second", times_s, [
            Series("publish ok/s", "#1f77b4", [entry.publish_ok_per_s for entry in buckets]),
            Series("deliver+read/s", "#2ca02c", [entry.deliveries_and_reads_per_s for entry in buckets])],
            timeline.windows, span_s),
        line_chart("Publish latency, invoke to ok", "ms", times_s, [
            Series("p50", "#9467bd", [entry.latency_p50_ms for entry in buckets]),
            Series("p99", "#ff7f0e", [entry.latency_p99_ms for entry in buckets])],
            timeline.windows, span_s),
        line_chart("Publishes without success", f"per {timeline.bucket_ms:g} ms bucket", times_s, [
            Series("unknown", "#8c564b", [float(entry.publish_unknown) for entry in buckets]),
            Series("fail", "#d62728", [float(entry.publish_fail) for entry in buckets])],
            timeline.windows, span_s),
    ]
    return "\n".join(charts)


def _windows_table(timeline: Timeline) -> str:
    if not timeline.windows:
        return "<p>No faults injected.</p>"
    rows = []
    for window in timeline.windows:
        stop = "not stopped" if window.stop_ms is None else f"{window.stop_ms / 1000.0:.2f}"
        duration = (window.end_ms(timeline.end_ms) - window.start_ms) / 1000.0
        rows.append(f"<tr><td>{escape(window.fault)}</td><td>{escape(', '.join(window.nodes))}</td>"
                    f'<td class="num">{window.start_ms / 1000.0:.2f}</td><td class="num">{escape(stop)}</td>'
                    f'<td class="num">{duration:.2f}</td></tr>')
    return ("<table><tr><th>fault</th><th>nodes</th><th>start (s)</th><th>stop (s)</th>"
            "<th>duration (s)</th></tr>" + "".join(rows) + "</table>")


def _counts_table(result: CheckResult) -> str:
    rows = []
    for checker, kinds in CHECKERS.items():
        for number, kind in enumerate(kinds):
            count = result.counts.get(kind, 0)
            severity = "violation" if kind in VIOLATION_KINDS else "info"
            style = "violation" if severity == "violation" and count else "info"
            first = f'<td rowspan="{len(kinds)}">{escape(checker)}</td>' if number == 0 else ""
            rows.append(f"<tr>{first}<td>{escape(kind)}</td><td>{severity}</td>"
                        f'<td class="num {style}">{count}</td></tr>')
    return ("<table><tr><th>checker</th><th>kind</th><th>severity</th><th>count</th></tr>"
            + "".join(rows) + "</table>")


def _anomalies(anomalies: Sequence[Anomaly]) -> str:
    if not anomalies:
        return "<p>None.</p>"
    # Violations first: a handful of them must not hide behind hundreds of info lines.
    ordered = [a for a in anomalies if a.violation] + [a for a in anomalies if not a.violation]
    shown = ordered[:MAX_ANOMALIES_SHOWN]
    rows = []
    for anomaly in shown:
        severity = "violation" if anomaly.violation else "info"
        details = json.dumps(anomaly.details, sort_keys=True, indent=1, default=str)
        rows.append(f'<tr><td class="{severity}">{escape(anomaly.kind)}</td>'
                    f'<td class="num">{anomaly.time_ms / 1000.0:.3f}</td><td>{escape(anomaly.message)}</td>'
                    f"<td><pre>{escape(details)}</pre></td></tr>")
    return (f"<p>Showing {len(shown)} of {len(anomalies)} anomalies "
            f"({sum(1 for a in anomalies if a.violation)} violations).</p>"
            "<table><tr><th>kind</th><th>time (s)</th><th>message</th><th>details</th></tr>"
            + "".join(rows) + "</table>")


def _stats_table(stats: Mapping[str, int | float]) -> str:
    rows = "".join(f'<tr><th>{escape(name)}</th><td class="num">{value:g}</td></tr>'
                   for name, value in sorted(stats.items()))
    return f"<table>{rows}</table>"
