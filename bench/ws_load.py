"""Publish load over the WebSocket endpoint (`GET /v1/ws`), for the broker benchmark.

`ws_latency_at_rate` is open loop: message i is due at start + i/rate whatever happened to the
ones before, and its latency runs from that due time to its confirm, so a stall counts against
every message scheduled behind it (no coordinated omission). `ws_throughput` is closed loop:
`window` publishes of `batch` messages each stay in flight.

Both publish to `routing_key` through `exchange` (the default exchange: a queue of that name);
the caller declares the queue. Standalone, against a fresh 3-node cluster:

    .venv/bin/python -m bench.ws_load --fsync always --rate 2000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from collections.abc import Callable

import aiohttp

from bench.launcher import BenchCluster
from raftmq.client import OutgoingMessage, PublishReceipt, WsPublisher

__all__ = ["BODY", "QUEUE", "ws_latency_at_rate", "ws_throughput"]

BODY = (b"raftmq-ws-bench-" * 70)[:1024]
QUEUE = "bench"
# Enough that the client never holds back an open-loop send; the server bounds its own share.
_OPEN_LOOP_WINDOW = 65_536


class _Tally:
    def __init__(self) -> None:
        self.latencies_s: list[float] = []
        self.confirmed_messages = 0
        self.failures = 0
        self.first_failure: BaseException | None = None

    def recorder(
        self, started_s: float, clock: Callable[[], float]
    ) -> Callable[[asyncio.Future[PublishReceipt]], None]:
        def record(confirm: asyncio.Future[PublishReceipt]) -> None:
            if confirm.cancelled() or confirm.exception() is not None:
                self.failures += 1
                if self.first_failure is None and not confirm.cancelled():
                    self.first_failure = confirm.exception()
                return
            self.latencies_s.append(clock() - started_s)
            self.confirmed_messages += confirm.result().accepted

        return record

    def check(self, what: str) -> None:
        if self.failures:
            raise RuntimeError(f"{what}: {self.failures} publishes failed, the first with "
                               f"{self.first_failure!r}")


async def ws_latency_at_rate(
    url: str,
    rate: float,
    duration_s: float,
    *,
    exchange: str = "",
    routing_key: str = QUEUE,
    body: bytes = BODY,
) -> list[float]:
    """Confirm latencies (seconds, from each message's due time) of single-message publishes
    sent at `rate` per second for `duration_s`; raises if any publish failed."""
    loop = asyncio.get_running_loop()
    messages = [OutgoingMessage(body, routing_key)]
    tally = _Tally()
    async with WsPublisher(url, window=_OPEN_LOOP_WINDOW) as publisher:
        interval_s = 1.0 / rate
        start_s = loop.time()
        for number in range(int(rate * duration_s)):
            due_s = start_s + number * interval_s
            delay_s = due_s - loop.time()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            confirm = await publisher.publish(exchange, messages)
            confirm.add_done_callback(tally.recorder(due_s, loop.time))
        await publisher.flush()
    tally.check("ws_latency_at_rate")
    return tally.latencies_s


async def ws_throughput(
    url: str,
    duration_s: float,
    window: int,
    batch: int,
    *,
    exchange: str = "",
    routing_key: str = QUEUE,
    body: bytes = BODY,
) -> float:
    """Confirmed messages per second with `window` publishes of `batch` messages in flight,
    publishing for `duration_s` (the confirms of the last ones count, and their wait too)."""
    loop = asyncio.get_running_loop()
    messages = [OutgoingMessage(body, routing_key)] * batch
    tally = _Tally()
    async with WsPublisher(url, window=window) as publisher:
        start_s = loop.time()
        deadline_s = start_s + duration_s
        while loop.time() < deadline_s:
            confirm = await publisher.publish(exchange, messages)
            confirm.add_done_callback(tally.recorder(start_s, loop.time))
        await publisher.flush()
        elapsed_s = loop.time() - start_s
    tally.check("ws_throughput")
    return tally.confirmed_messages / elapsed_s


def _percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


async def _run(args: argparse.Namespace) -> dict[str, object]:
    cluster = BenchCluster(fsync=args.fsync)
    cluster.start()
    try:
        async with aiohttp.ClientSession() as session:
            leader = await cluster.wait_leader(session)
            async with session.put(f"{leader.http_url}/v1/queues/{QUEUE}", json={}) as response:
                response.raise_for_status()
        url = leader.http_url
        results: dict[str, object] = {"fsync": args.fsync}
        for window, batch in ((1024, 1), (64, 100)):
            rate = await ws_throughput(url, args.seconds, window, batch)
            results[f"throughput_msgs_per_s_window{window}_batch{batch}"] = round(rate)
        latencies = sorted(await ws_latency_at_rate(url, args.rate, args.seconds))
        results[f"latency_at_{args.rate:g}_per_s_ms"] = {
            "p50": round(1000 * statistics.median(latencies), 2),
            "p99": round(1000 * _percentile(latencies, 0.99), 2),
            "max": round(1000 * latencies[-1], 2),
            "count": len(latencies),
        }
        return results
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsync", default="always", choices=["always", "never"])
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    print(json.dumps(asyncio.run(_run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
