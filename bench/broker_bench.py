"""End-to-end broker benchmark: a real 3-node cluster and a load generator on this machine.

    .venv/bin/python -m bench.broker_bench --fsync always --fsync never

For 1 KiB messages it prints: confirmed publishes per second (pipelined, batched) through the
leader and through a follower, confirm latency p50/p99 at a fixed 2,000 msg/s (open loop, so a
slow reply cannot hide the requests queued behind it), claim+ack throughput, and the publish
stall after `kill -9` of the leader. Also: elections during the run and follower log
truncations (both must be 0 in steady state).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import msgpack

from bench.launcher import BenchCluster, NodeProcess
from bench.ws_load import ws_latency_at_rate, ws_throughput

MSGPACK = "application/msgpack"
HEADERS = {"Content-Type": MSGPACK, "Accept": MSGPACK}
BODY = (b"raftmq-bench-" * 80)[:1024]
QUEUE = "bench"


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def publish_payload(count: int, body: bytes = BODY) -> bytes:
    messages = [{"routing_key": QUEUE, "body": body}] * count
    packed: bytes = msgpack.packb({"exchange": "", "messages": messages}, use_bin_type=True)
    return packed


async def post(session: aiohttp.ClientSession, url: str, payload: bytes) -> tuple[int, object]:
    async with session.post(url, data=payload, headers=HEADERS) as response:
        return response.status, msgpack.unpackb(await response.read(), raw=False)


async def setup_queue(session: aiohttp.ClientSession, url: str) -> None:
    body = msgpack.packb({}, use_bin_type=True)
    async with session.put(f"{url}/v1/queues/{QUEUE}", data=body, headers=HEADERS) as response:
        assert response.status in (200, 201), await response.read()
    async with session.post(f"{url}/v1/queues/{QUEUE}/purge", data=body, headers=HEADERS) as response:
        assert response.status == 200, await response.read()


async def publish_throughput(session: aiohttp.ClientSession, url: str, duration_s: float,
                             concurrency: int, batch: int) -> float:
    payload = publish_payload(batch)
    confirmed = 0
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        nonlocal confirmed
        while time.perf_counter() < deadline:
            status, _ = await post(session, f"{url}/v1/publish", payload)
            if status == 200:
                confirmed += batch

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return confirmed / (time.perf_counter() - start)


async def latency_at_rate(session: aiohttp.ClientSession, url: str, rate: int,
                          duration_s: float) -> list[float]:
    payload = publish_payload(1)
    latencies: list[float] = []
    failures = 0

    async def one(scheduled: float) -> None:
        nonlocal failures
        status, _ = await post(session, f"{url}/v1/publish", payload)
        if status == 200:
            latencies.append(time.perf_counter() - scheduled)
        else:
            failures += 1

    tasks = []
    start = time.perf_counter()
    total = int(rate * duration_s)
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    if failures:
        print(f"    ({failures} publishes failed during the latency run)")
    return sorted(latencies)


async def claim_ack_throughput(session: aiohttp.ClientSession, url: str, total: int,
                               consumers: int, batch: int) -> float:
    acked = 0
    claim = msgpack.packb({"max_messages": batch, "lease_ms": 60_000, "wait_ms": 0}, use_bin_type=True)

    async def worker() -> None:
        nonlocal acked
        while acked < total:
            status, doc = await post(session, f"{url}/v1/queues/{QUEUE}/claim", claim)
            assert status == 200 and isinstance(doc, dict), doc
            messages = doc["messages"]
            if not messages:
                return
            leases = [[m["message_id"], m["lease_id"]] for m in messages]
            status, _ = await post(session, f"{url}/v1/queues/{QUEUE}/ack",
                                   msgpack.packb({"leases": leases}, use_bin_type=True))
            assert status == 200
            acked += len(leases)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(consumers)))
    return acked / (time.perf_counter() - start)


@dataclass
class StallResult:
    stall_s: float
    failed_requests: int
    election_s: float


async def failover_stall(cluster: BenchCluster, session: aiohttp.ClientSession) -> StallResult:
    """Publish continuously (batches of 10 every ~5 ms) and kill -9 the leader; the stall is
    the longest gap between two confirmed publishes around the kill. On an error the publisher
    moves to the next node at once, like a client with failover."""
    leader = await cluster.wait_leader(session)
    payload = publish_payload(10)
    alive = [n for n in cluster.nodes if n is not leader]
    confirms: list[float] = []
    failures = 0
    stop_at = time.perf_counter() + 6.0
    kill_at = time.perf_counter() + 2.0
    killed_at = 0.0

    async def publisher(offset: int) -> None:
        nonlocal failures
        turn = offset
        while time.perf_counter() < stop_at:
            node = alive[turn % len(alive)] if killed_at else cluster.nodes[turn % len(cluster.nodes)]
            try:
                status, _ = await asyncio.wait_for(post(session, f"{node.http_url}/v1/publish", payload), 2.0)
            except (aiohttp.ClientError, OSError, TimeoutError):
                status = 0
            if status == 200:
                confirms.append(time.perf_counter())
                await asyncio.sleep(0.005)
            else:
                failures += 1
                turn += 1

    async def killer() -> None:
        nonlocal killed_at
        await asyncio.sleep(max(0.0, kill_at - time.perf_counter()))
        cluster.kill(leader)
        killed_at = time.perf_counter()

    await asyncio.gather(killer(), *(publisher(i) for i in range(4)))
    new_leader = await cluster.wait_leader(session)
    election_s = 0.0
    # The stall is the longest gap between consecutive confirms that ends after the kill (the
    # first gap may start before it: requests committed just before the kill still answer).
    confirms.sort()
    gaps = [b - a for a, b in itertools.pairwise(confirms) if b > killed_at]
    stall = max(gaps) if gaps else float("inf")
    cluster.start_node(leader)
    del new_leader
    return StallResult(stall, failures, election_s)


async def term_of(cluster: BenchCluster, session: aiohttp.ClientSession, node: NodeProcess) -> int:
    view = await cluster.cluster_view(session, node)
    return int(str(view.get("term", 0)))


async def run(fsync: str, duration_s: float, extra_env: dict[str, str]) -> dict[str, object]:
    cluster = BenchCluster(fsync=fsync, extra_env=extra_env)
    cluster.start()
    results: dict[str, object] = {"fsync": fsync}
    try:
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(connector=connector) as session:
            leader = await cluster.wait_leader(session)
            follower = next(n for n in cluster.nodes if n is not leader)
            await setup_queue(session, leader.http_url)
            await asyncio.sleep(1.0)
            term_before = await term_of(cluster, session, leader)
            for name, url in (("leader", leader.http_url), ("follower", follower.http_url)):
                rate = await publish_throughput(session, url, duration_s, concurrency=16, batch=100)
                results[f"publish_batched_via_{name}_msgs_per_s"] = round(rate)
                print(f"  HTTP publish, batches of 100, 16 in flight, via {name}: {rate:,.0f} msg/s")
            rate = await publish_throughput(session, leader.http_url, duration_s, concurrency=64, batch=1)
            results["publish_single_64_inflight_msgs_per_s"] = round(rate)
            print(f"  HTTP publish, single messages, 64 in flight: {rate:,.0f} msg/s")
            for name, url in (("leader", leader.http_url), ("follower", follower.http_url)):
                rate = await ws_throughput(url, duration_s, window=64, batch=100)
                results[f"ws_publish_batched_via_{name}_msgs_per_s"] = round(rate)
                print(f"  WebSocket publish, batches of 100, 64 in flight, via {name}: {rate:,.0f} msg/s")
            rate = await ws_throughput(leader.http_url, duration_s, window=256, batch=1)
            results["ws_publish_single_msgs_per_s"] = round(rate)
            print(f"  WebSocket publish, single messages, 256 in flight: {rate:,.0f} msg/s")
            for label, url in (("WebSocket", leader.http_url),):
                latencies = sorted(await ws_latency_at_rate(url, 2000, duration_s))
                p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
                results.update(confirm_p50_ms=round(p50, 2), confirm_p99_ms=round(p99, 2))
                print(f"  confirm latency at 2,000 msg/s ({label}, via the leader): p50 {p50:.2f} ms, "
                      f"p99 {p99:.2f} ms, mean {statistics.mean(latencies) * 1000:.2f} ms")
            latencies = await latency_at_rate(session, follower.http_url, 1000, duration_s)
            p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
            results.update(http_confirm_p50_ms_at_1000=round(p50, 2),
                           http_confirm_p99_ms_at_1000=round(p99, 2))
            print(f"  confirm latency at 1,000 msg/s (one HTTP request per message, via a follower): "
                  f"p50 {p50:.2f} ms, p99 {p99:.2f} ms")
            await setup_queue(session, leader.http_url)
            await publish_throughput(session, leader.http_url, duration_s, concurrency=16, batch=100)
            rate = await claim_ack_throughput(session, follower.http_url, 100_000, consumers=8, batch=100)
            results["claim_ack_msgs_per_s"] = round(rate)
            print(f"  claim+ack, batches of 100, 8 consumers, via a follower: {rate:,.0f} msg/s")
            term_after = await term_of(cluster, session, leader)
            results["elections_during_load"] = term_after - term_before
            print(f"  elections during the load phases: {term_after - term_before}")
            truncations = []
            for node in cluster.nodes:
                view = await cluster.cluster_view(session, node)
                truncations.append(int(str(view.get("log_truncations", 0))))
            results["log_truncations"] = sum(truncations)
            print(f"  follower log truncations: {truncations}")
            stall = await failover_stall(cluster, session)
            results["leader_kill_stall_s"] = round(stall.stall_s, 3)
            print(f"  publish stall after kill -9 of the leader: {stall.stall_s:.3f} s "
                  f"({stall.failed_requests} failed requests, retried on another node)")
    finally:
        cluster.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fsync", action="append", choices=["always", "never"])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per load phase")
    parser.add_argument("--env", action="append", default=[], help="extra NAME=VALUE for the nodes")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)
    all_results = []
    for fsync in args.fsync or ["always", "never"]:
        print(f"fsync={fsync} ({os.cpu_count()} CPUs, 3 nodes + load generator on this machine)")
        all_results.append(asyncio.run(run(fsync, args.duration, extra_env)))
    if args.json:
        args.json.write_text(json.dumps(all_results, indent=2))


if __name__ == "__main__":
    main()
