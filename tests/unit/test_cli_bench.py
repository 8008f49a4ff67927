"""`raftmq bench` against a real single-node broker (in process, through `cli.main` in a worker
thread while the test's loop serves the broker), and its latency recorder against the HDR
histogram it feeds."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from hdrh.histogram import HdrHistogram

from raftmq.broker.api import ApiLimits
from raftmq.broker.cli import main
from raftmq.broker.cli_bench_report import HIGHEST_US, PERCENTILES, LatencyRecorder
from tests.unit.test_api_fixtures import Broker, start_broker, stop_broker, unique

LIMITS = ApiLimits(max_batch_messages=1000, max_request_bytes=4 * 2**20, max_wait_ms=5_000,
                   propose_timeout_s=5.0)
MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Broker]:
    started = await start_broker(tmp_path_factory.mktemp("raft"), LIMITS)
    try:
        yield started
    finally:
        await stop_broker(started)


async def bench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code = await asyncio.to_thread(main, ["bench", *argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def assert_ordered(latency: dict[str, Any], count: int) -> None:
    assert latency["count"] == count
    values = [latency[name] for name, _ in PERCENTILES] + [latency["max"]]
    assert values == sorted(values), latency
    assert values[0] > 0 and values[-1] < 60_000  # milliseconds: above 0, below a minute


@MODULE_LOOP
async def test_queue_bench_publishes_and_consumes_every_message(
        broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    code, summary, _ = await bench(
        capsys, "--url", broker.url, "--queue", unique("bench"), "--producers", "3",
        "--consumers", "2", "--size", "64", "--batch", "20", "--messages", "600",
        "--no-progress")
    assert code == 0
    published, consumed = summary["published"], summary["consumed"]
    assert published["sent"] == published["confirmed"] == 600
    assert (published["failed"], published["unknown"], published["unroutable"]) == (0, 0, 0)
    assert published["msgs_per_s"] > 0 and published["seconds"] > 0
    assert consumed["messages"] == consumed["expected"] == 600
    assert consumed["foreign"] == 0
    assert_ordered(summary["publish_latency_ms"], 600)
    assert_ordered(summary["end_to_end_latency_ms"], 600)
    # Every message was acked: the queue is empty.
    response, document = await broker.call("GET", f"/v1/queues/{summary['name']}")
    assert response.status == 200
    assert (document["ready"], document["leased"]) == (0, 0)


@MODULE_LOOP
async def test_pull_consumers_and_a_queue_with_old_messages(
        broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    queue = unique("bench-old")
    await broker.call("PUT", f"/v1/queues/{queue}", {})
    await broker.call("POST", f"/v1/queues/{queue}/publish",
                      {"messages": [{"body_b64": "b2xk"}] * 5})  # "old", from before the run
    code, summary, _ = await bench(
        capsys, "--url", broker.url, "--queue", queue, "--consumers", "1", "--pull",
        "--size", "32", "--batch", "10", "--messages", "50", "--no-progress")
    assert code == 0
    assert summary["published"]["confirmed"] == 50
    # The consumer took the old messages too, but counts only this run's.
    assert (summary["consumed"]["messages"], summary["consumed"]["foreign"]) == (50, 5)

    await broker.call("POST", f"/v1/queues/{queue}/publish",
                      {"messages": [{"body_b64": "b2xk"}] * 5})
    code, summary, _ = await bench(
        capsys, "--url", broker.url, "--queue", queue, "--purge", "--consumers", "1",
        "--size", "32", "--messages", "20", "--no-progress")
    assert code == 0
    assert (summary["consumed"]["messages"], summary["consumed"]["foreign"]) == (20, 0)


@MODULE_LOOP
async def test_stream_bench_every_consumer_reads_every_record(
        broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    code, summary, _ = await bench(
        capsys, "--url", broker.url, "--stream", unique("bench-stream"), "--partitions", "2",
        "--producers", "2", "--consumers", "2", "--size", "100", "--batch", "25",
        "--messages", "300", "--payload", "random", "--no-progress")
    assert code == 0
    assert summary["published"]["sent"] == summary["published"]["confirmed"] == 300
    assert summary["consumed"]["messages"] == summary["consumed"]["expected"] == 600
    assert_ordered(summary["end_to_end_latency_ms"], 600)


@MODULE_LOOP
async def test_a_fixed_rate_runs_open_loop_with_a_progress_line(
        broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    code, summary, err = await bench(
        capsys, "--url", broker.url, "--queue", unique("bench-rate"), "--producers", "2",
        "--rate", "200", "--duration", "2.5", "--size", "16")
    assert code == 0
    published = summary["published"]
    # 200 msg/s for 2.5 s, scheduled: exactly 500 sends (1 either way for clock rounding).
    assert 499 <= published["sent"] <= 501
    assert published["confirmed"] == published["sent"]
    assert 150 <= published["msgs_per_s"] <= 250
    assert summary["rate"] == 200
    assert_ordered(summary["publish_latency_ms"], published["sent"])
    progress = [line for line in err.splitlines() if line.startswith("[")]
    assert len(progress) >= 2
    assert "pub" in progress[-1] and "in flight" in progress[-1] and "p99" in progress[-1]


@MODULE_LOOP
async def test_a_bench_whose_messages_fail_exits_1(
        broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    # Without declaring, publishing to a missing queue is unroutable: nothing is confirmed.
    code, summary, _ = await bench(
        capsys, "--url", broker.url, "--queue", unique("bench-missing"), "--no-declare",
        "--size", "16", "--messages", "20", "--no-progress")
    assert code == 1
    assert summary["published"]["unroutable"] == 20
    assert summary["published"]["confirmed"] == 0
    assert summary["publish_latency_ms"] is None


@MODULE_LOOP
async def test_text_summary(broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    code = await asyncio.to_thread(main, [
        "bench", "--url", broker.url, "--queue", unique("bench-text"), "--size", "16",
        "--messages", "40", "--batch", "10", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "published 40 msgs in" in out
    assert "publish confirm latency, from the send call (ms, 40 samples): p50" in out


@pytest.mark.parametrize("argv", [
    ["--producers", "0"], ["--size", "-1"], ["--in-flight", "33"], ["--duration", "0"],
    ["--prefetch", "0"], ["--stream", "s", "--purge"],
])
def test_bad_settings_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--url", "http://127.0.0.1:1", *argv]) == 2
    assert "raftmq bench: error:" in capsys.readouterr().err


def test_the_recorder_gives_the_histograms_own_percentiles() -> None:
    rng = random.Random(7)
    recorder = LatencyRecorder()
    direct = HdrHistogram(1, HIGHEST_US, 3)
    for _ in range(50_000):
        micros = int(rng.lognormvariate(8, 2.5)) + 1
        recorder.record_s(micros / 1e6)
        direct.record_value(min(micros, HIGHEST_US))
    summary = recorder.summary_ms()
    assert summary is not None and summary["count"] == 50_000
    for name, percentile in PERCENTILES:
        assert summary[name] == round(direct.get_value_at_percentile(percentile) / 1000, 3)
    assert summary["max"] == round(direct.get_max_value() / 1000, 3)


def test_the_recorder_clamps_what_the_histogram_cannot_hold() -> None:
    recorder = LatencyRecorder()
    recorder.record_s(-0.5)  # a clock step backwards
    recorder.record_s(10 * 3600.0)  # ten hours
    summary = recorder.summary_ms()
    assert summary is not None and summary["count"] == 2
    assert summary["p50"] == 0.001
    assert summary["max"] >= HIGHEST_US / 1000
    assert LatencyRecorder().summary_ms() is None
