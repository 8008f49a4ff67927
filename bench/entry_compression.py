"""What lz4 buys for Raft entries: size on disk / in RAM / in snapshots, and its CPU cost.

    .venv/bin/python -m bench.entry_compression

Each entry is a group-committed batch of 100 publish commands with 1 KiB bodies, encoded as the
cluster layer does (`encode_entry`). Three body kinds: random bytes (incompressible), JSON-like
event text (typical application payloads) and one repeated byte pattern (best case). Compared with
the transport's own zlib pass (pysyncobj compresses every message at level 3 by default).
"""

from __future__ import annotations

import json
import os
import random
import time
import zlib

from raftmq.broker.commands import OutMessage, Publish, encode_command
from raftmq.cluster.entry_codec import APP, decode_entry, encode_entry

MESSAGES = 100


def _bodies(kind: str, rng: random.Random) -> list[bytes]:
    if kind == "random":
        return [os.urandom(1024) for _ in range(MESSAGES)]
    if kind == "repeated":
        return [(b"raftmq-bench-" * 80)[:1024] for _ in range(MESSAGES)]
    bodies = []
    for i in range(MESSAGES):
        event = {"order_id": rng.randrange(10**9), "customer": f"customer-{rng.randrange(10**5)}",
                 "items": [{"sku": f"SKU-{rng.randrange(10**4):05d}", "qty": rng.randrange(1, 9),
                            "price": round(rng.uniform(1, 500), 2)} for _ in range(8)],
                 "status": rng.choice(["new", "paid", "shipped"]), "seq": i}
        bodies.append(json.dumps(event).encode()[:1024].ljust(1024))
    return bodies


def _time_us(action: object, repeat: int = 200) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        action()  # type: ignore[operator]
    return (time.perf_counter() - start) / repeat * 1e6


def main() -> None:
    rng = random.Random(7)
    print(f"{'bodies':10} {'raw entry':>10} {'lz4 entry':>10} {'ratio':>6} {'lz4 enc+dec':>12} "
          f"{'zlib-3 of raw':>14} {'zlib-3 time':>12}")
    for kind in ("random", "json", "repeated"):
        command = encode_command(Publish(now_ms=1, exchange="", messages=tuple(
            OutMessage("q", body) for body in _bodies(kind, rng))))
        commands = [(APP, command)]
        raw = encode_entry(commands, compress_min_bytes=1 << 30)
        packed = encode_entry(commands, compress_min_bytes=2048)
        codec_us = _time_us(lambda c=commands: decode_entry(
            encode_entry(c, compress_min_bytes=2048), max_entry_bytes=1 << 24))
        zlib_us = _time_us(lambda r=raw: zlib.compress(r, 3))
        print(f"{kind:10} {len(raw):>10,} {len(packed):>10,} {len(raw) / len(packed):>6.2f} "
              f"{codec_us:>10.0f}us {len(zlib.compress(raw, 3)):>14,} {zlib_us:>10.0f}us")


if __name__ == "__main__":
    main()
