"""Stream benchmark: a real 3-node cluster and a load generator on this machine.

    .venv/bin/python -m bench.stream_bench --fsync always

For 1 KiB records it prints: confirmed stream publishes per second (HTTP, keyed batches of
100, 16 in flight) through the leader and through a follower, and the rate at which one
consumer reads a preloaded partition from a follower: sequential HTTP fetches of up to 1,000
records (each response decoded, every record touched), and the same over the WebSocket push
subscription with credit, when the server offers it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import aiohttp
import msgpack

from bench.launcher import BenchCluster

MSGPACK = "application/msgpack"
HEADERS = {"Content-Type": MSGPACK, "Accept": MSGPACK}
BODY = (b"raftmq-stream-" * 80)[:1024]
PUBLISH_STREAM = "bench-publish"
FETCH_STREAM = "bench-fetch"


async def call(session: aiohttp.ClientSession, method: str, url: str,
               body: object | None = None) -> tuple[int, object]:
    data = None if body is None else msgpack.packb(body, use_bin_type=True)
    async with session.request(method, url, data=data, headers=HEADERS) as response:
        raw = await response.read()
        return response.status, msgpack.unpackb(raw, raw=False) if raw else None


def publish_payload(count: int, *, keyed: bool) -> bytes:
    messages = [{"body": BODY, **({"key": f"key-{i}"} if keyed else {})} for i in range(count)]
    packed: bytes = msgpack.packb({"messages": messages}, use_bin_type=True)
    return packed


async def publish_throughput(session: aiohttp.ClientSession, url: str, stream: str,
                             duration_s: float, concurrency: int, batch: int) -> float:
    payload = publish_payload(batch, keyed=True)
    confirmed = 0
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        nonlocal confirmed
        while time.perf_counter() < deadline:
            async with session.post(f"{url}/v1/streams/{stream}/publish", data=payload,
                                    headers=HEADERS) as response:
                await response.read()
                if response.status == 200:
                    confirmed += batch

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return confirmed / (time.perf_counter() - start)


async def preload(session: aiohttp.ClientSession, url: str, total: int) -> None:
    payload = publish_payload(500, keyed=False)
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while sent < total:
            sent += 500
            async with session.post(f"{url}/v1/streams/{FETCH_STREAM}/publish", data=payload,
                                    headers=HEADERS) as response:
                assert response.status == 200, await response.read()

    await asyncio.gather(*(worker() for _ in range(8)))


async def wait_replicated(session: aiohttp.ClientSession, url: str, total: int) -> None:
    while True:
        status, info = await call(session, "GET", f"{url}/v1/streams/{FETCH_STREAM}")
        if status == 200 and isinstance(info, dict) and info["partitions"][0]["next_offset"] >= total:
            return
        await asyncio.sleep(0.2)


async def fetch_throughput(session: aiohttp.ClientSession, url: str, total: int) -> float:
    """One consumer, one request at a time, from offset 0 to `total`."""
    offset = 0
    body_bytes = 0
    start = time.perf_counter()
    while offset < total:
        async with session.get(
            f"{url}/v1/streams/{FETCH_STREAM}/partitions/0/messages",
            params={"offset": offset, "max_messages": 1000}, headers={"Accept": MSGPACK},
        ) as response:
            document = msgpack.unpackb(await response.read(), raw=False)
        assert response.status == 200, document
        messages = document["messages"]
        body_bytes += sum(len(m["body"]) for m in messages)
        offset = document["next_fetch_offset"]
    elapsed = time.perf_counter() - start
    assert body_bytes == offset * len(BODY)
    return offset / elapsed


async def ws_push_throughput(session: aiohttp.ClientSession, url: str, total: int) -> float | None:
    """The WebSocket push subscription with a window of credit; None if the server lacks it."""
    async with session.ws_connect(f"{url}/v1/ws", max_msg_size=0) as ws:
        await ws.send_bytes(msgpack.packb({"op": "stream_subscribe", "id": 1, "stream": FETCH_STREAM,
                                           "partition": 0, "offset": 0, "credit": 20_000}))
        received = 0
        start = time.perf_counter()
        next_id = 2
        while received < total:
            frame = msgpack.unpackb(await ws.receive_bytes(), raw=False)
            if frame.get("id") == 1 and "error" in frame:
                return None
            messages = frame.get("messages")
            if messages:
                received += len(messages)
                await ws.send_bytes(msgpack.packb({"op": "credit", "id": next_id,
                                                   "subscription": frame["subscription"],
                                                   "messages": len(messages)}))
                next_id += 1
        return received / (time.perf_counter() - start)


async def run(fsync: str, duration_s: float, fetch_total: int) -> dict[str, object]:
    cluster = BenchCluster(fsync=fsync)
    cluster.start()
    results: dict[str, object] = {"fsync": fsync}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
            leader = await cluster.wait_leader(session)
            follower = next(n for n in cluster.nodes if n is not leader)
            # Retention keeps the publish phases inside the node's 1 GiB memory limit.
            for name, args in ((PUBLISH_STREAM, {"partitions": 6, "max_bytes": 32 * 2**20}),
                               (FETCH_STREAM, {"partitions": 1})):
                status, reply = await call(session, "PUT", f"{leader.http_url}/v1/streams/{name}",
                                           args)
                assert status in (200, 201), reply
            for label, node in (("leader", leader), ("follower", follower)):
                rate = await publish_throughput(session, node.http_url, PUBLISH_STREAM,
                                                duration_s, concurrency=16, batch=100)
                results[f"stream_publish_via_{label}_msgs_per_s"] = round(rate)
                print(f"  stream publish, keyed batches of 100, 16 in flight, via {label}: "
                      f"{rate:,.0f} msg/s")
            await preload(session, leader.http_url, fetch_total)
            await wait_replicated(session, follower.http_url, fetch_total)
            rate = await fetch_throughput(session, follower.http_url, fetch_total)
            results["fetch_from_follower_msgs_per_s"] = round(rate)
            print(f"  one consumer, HTTP fetch of 1,000 at a time from a follower: {rate:,.0f} msg/s "
                  f"({rate * len(BODY) / 2**20:,.0f} MiB/s)")
            push_rate = await ws_push_throughput(session, follower.http_url, fetch_total)
            if push_rate is not None:
                results["ws_push_from_follower_msgs_per_s"] = round(push_rate)
                print(f"  one consumer, WebSocket push with 20,000 credit from a follower: "
                      f"{push_rate:,.0f} msg/s")
    finally:
        cluster.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fsync", action="append", choices=["always", "never"])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per publish phase")
    parser.add_argument("--fetch-total", type=int, default=400_000, help="records to read back")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    all_results = []
    for fsync in args.fsync or ["always"]:
        print(f"fsync={fsync} ({os.cpu_count()} CPUs, 3 nodes + load generator on this machine)")
        all_results.append(asyncio.run(run(fsync, args.duration, args.fetch_total)))
    if args.json:
        args.json.write_text(json.dumps(all_results, indent=2))


if __name__ == "__main__":
    main()
