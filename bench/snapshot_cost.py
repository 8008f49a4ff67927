"""Cost of a snapshot of a large broker state (the pickle pysyncobj would take: 12 s, +1.1 GB for 200 MB).

    .venv/bin/python -m bench.snapshot_cost [--messages 200000] [--repeat 1]

Builds a state holding N messages of 1 KiB (JSON-like bodies), then times BrokerState.snapshot()
(what the forked child runs), the file it makes, and restore(). With --repeat N, both are timed
N times and the best times are shown (timings on a shared machine are noisy).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import time

from raftmq.broker.commands import DeclareQueue, OutMessage, Publish, QueueArgs
from raftmq.broker.state import BrokerState


def _body(rng: random.Random, i: int) -> bytes:
    event = {"order": i, "customer": f"c-{rng.randrange(10**6)}", "total": rng.random() * 100,
             "items": [f"SKU-{rng.randrange(10**5)}" for _ in range(30)]}
    return json.dumps(event).encode()[:1024].ljust(1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=1, help="time N times, show the best")
    args = parser.parse_args()
    gc.set_threshold(50_000, 20, 100)
    rng = random.Random(1)
    state = BrokerState()
    state.apply_command(DeclareQueue(now_ms=1, name="q", args=QueueArgs()))
    for start in range(0, args.messages, 1000):
        batch = tuple(OutMessage("q", _body(rng, i)) for i in range(start, start + 1000))
        state.apply_command(Publish(now_ms=2, exchange="", messages=batch))
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    snapshot_s = restore_s = float("inf")
    for _ in range(max(1, args.repeat)):
        began = time.perf_counter()
        blob = state.snapshot()
        snapshot_s = min(snapshot_s, time.perf_counter() - began)
        restored = BrokerState()
        began = time.perf_counter()
        restored.restore(blob)
        restore_s = min(restore_s, time.perf_counter() - began)
        del restored
        gc.collect()  # a BrokerState is a reference cycle: free the copy before the next round
    print(f"{args.messages:,} messages of 1 KiB: snapshot {snapshot_s:.2f} s, {len(blob) / 2**20:.0f} MiB "
          f"written, restore {restore_s:.2f} s (process max RSS {rss_before_mb:.0f} MiB before)"
          + (f", best of {args.repeat}" if args.repeat > 1 else ""))


if __name__ == "__main__":
    main()
