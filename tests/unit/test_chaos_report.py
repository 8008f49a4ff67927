"""The timeline buckets and the HTML report: one valid, self-contained file with the SVG
charts, the fault labels and every text escaped."""

from __future__ import annotations

import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from raftmq.chaos.checker import check
from raftmq.chaos.history import Op
from raftmq.chaos.report import MAX_ANOMALIES_SHOWN, render_report, write_report
from raftmq.chaos.report_svg import nice_ticks
from raftmq.chaos.timeline import MAX_BUCKETS, bucket, percentile
from tests.unit.chaos_histories import HistoryBuilder
from tests.unit.chaos_simulation import big_checked, simulate

VOID_ELEMENTS = {"meta", "br", "hr", "img", "input", "link"}
SVG_SELF_CLOSING = {"line", "rect", "circle", "polyline"}


class StructureParser(HTMLParser):
    """Records tags and text, and fails on a closing tag that does not match the open one."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID_ELEMENTS:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in SVG_SELF_CLOSING | VOID_ELEMENTS:
            self.errors.append(f"unexpected self-closing <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(document: str) -> StructureParser:
    parser = StructureParser()
    parser.feed(document)
    parser.close()
    assert parser.errors == [] and parser.stack == [], (parser.errors, parser.stack)
    return parser


def crafted_history() -> list[Op]:
    history = HistoryBuilder()
    history.publish("m1")
    history.consume("q", "m1", 1)
    history.nemesis("start", "kill-leader", ["n2"])
    history.wait(1500)
    history.publish("m2", "unknown")
    history.publish("<script>alert(1)</script>")
    history.nemesis("stop", "kill-leader", ["n2"])
    history.nemesis("start", "partition-halves", ["n1", "n3"])
    history.publish("m3", "fail")
    history.publish("m4")
    history.consume("q", "m4", 4)
    return history.ops


def test_the_report_is_valid_self_contained_html_with_charts_and_escaped_text(tmp_path: Path) -> None:
    ops = crafted_history()
    result = check(ops)
    meta = {"scenario": "kill & pause", "seed": 42, "nodes": ["n1", "n2", "n3"], "duration_s": 3.5,
            "schedule": ["2s kill-leader n2", {"at_s": 3, "fault": "partition-halves"}]}
    path = tmp_path / "report.html"
    write_report(path, history=ops, result=result, meta=meta)
    document = path.read_text(encoding="utf-8")
    assert document.startswith("<!DOCTYPE html>")
    parser = parse(document)
    tags = [tag for tag, _ in parser.tags]
    assert tags.count("svg") == 3 and ("polyline" in tags or "circle" in tags)
    assert "script" not in tags
    assert not any(attribute in ("src", "href") for _, attrs in parser.tags for attribute in attrs)
    assert "http://" not in document and "https://" not in document
    text = "".join(parser.text)
    assert "kill-leader" in text and "partition-halves" in text  # fault labels in the charts and table
    assert "INVALID: 1 violation(s)" in text  # the lost id with markup in it
    assert "'<script>alert(1)</script>' published ok but never delivered from queue q" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in document
    assert "raftmq chaos report: kill &amp; pause" in document
    assert "2s kill-leader n2" in text and '"fault": "partition-halves"' in text
    shaded = [attrs for tag, attrs in parser.tags if tag == "rect" and attrs.get("class") == "fault"]
    assert len(shaded) == 3 * 2  # two windows in each of three charts


def test_a_clean_run_reads_valid_and_lists_no_faults() -> None:
    history = HistoryBuilder()
    history.publish("m1")
    history.consume("q", "m1", 1)
    document = render_report(history=history.ops, result=check(history.ops), meta={})
    text = "".join(parse(document).text)
    assert "VALID" in text and "INVALID" not in text and "No faults injected." in text


def test_an_empty_history_still_renders() -> None:
    document = render_report(history=[], result=check([]), meta={"scenario": "nothing"})
    assert "Empty history" in "".join(parse(document).text)


def test_only_the_first_anomalies_are_listed_with_the_total() -> None:
    history = HistoryBuilder()
    for number in range(MAX_ANOMALIES_SHOWN + 50):
        history.publish(f"m{number}")
    result = check(history.ops)
    document = render_report(history=history.ops, result=result, meta={})
    assert f"Showing {MAX_ANOMALIES_SHOWN} of {len(result.anomalies)} anomalies" in document
    assert document.count('<td class="violation">lost</td>') == MAX_ANOMALIES_SHOWN


def test_a_200k_operation_history_renders_in_reasonable_time(tmp_path: Path) -> None:
    ops, result, _ = big_checked()
    started = time.perf_counter()
    write_report(tmp_path / "big.html", history=ops, result=result, meta={"scenario": "big"})
    elapsed_s = time.perf_counter() - started
    assert elapsed_s < 10.0, elapsed_s
    document = (tmp_path / "big.html").read_text(encoding="utf-8")
    assert len(document) < 5_000_000
    parse(document)


def test_buckets_count_throughput_latency_and_failures() -> None:
    history = HistoryBuilder()
    history.publish("m1")  # invoke at 20 ms, ok at 30 ms
    history.publish_invoke("m2")  # 40 ms
    history.wait(1000)
    history.publish_done("m2")  # 1050 ms: a 1010 ms latency in the second bucket
    history.publish("m3", "unknown")
    history.publish("m4", "fail")
    history.consume("q", "m1", 1)
    timeline = bucket(history.ops, bucket_ms=1000)
    first, second = timeline.buckets
    assert (first.start_ms, second.start_ms) == (0.0, 1000.0)
    assert (first.publish_ok, second.publish_ok) == (1, 1)
    assert first.latency_p50_ms == pytest.approx(10.0) and second.latency_p99_ms == pytest.approx(1010.0)
    assert (second.publish_unknown, second.publish_fail, second.deliveries_and_reads) == (1, 1, 1)
    assert first.publish_ok_per_s == pytest.approx(1.0)
    half = bucket(history.ops, bucket_ms=500)
    assert half.buckets[0].publish_ok_per_s == pytest.approx(2.0)


def test_buckets_widen_for_long_runs_and_keep_fault_windows() -> None:
    ops = simulate(3, 300)
    timeline = bucket(ops, bucket_ms=1)
    assert len(timeline.buckets) <= MAX_BUCKETS + 1
    assert timeline.bucket_ms > 1
    assert sum(entry.publish_ok for entry in timeline.buckets) == sum(
        1 for op in ops if op.f == "publish" and op.type == "ok")
    assert [window.fault for window in timeline.windows] == [
        op.value["fault"] for op in ops if op.f == "nemesis" and op.value["action"] == "start"]
    with pytest.raises(ValueError, match="positive"):
        bucket(ops, bucket_ms=0)


def test_percentile_and_ticks() -> None:
    values = [float(number) for number in range(1, 101)]
    assert percentile(values, 0.5) == 50.0 and percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)
    assert nice_ticks(0) == [0.0, 1.0]
    ticks = nice_ticks(873)
    assert ticks[0] == 0 and ticks[-1] >= 873 and len(ticks) <= 7
