"""Micro-benchmark: BrokerState.apply throughput for publish and claim+ack, no Raft, no I/O.

Run: .venv/bin/python bench/state_apply.py [--messages N] [--batch B] [--body-bytes S]
Prints messages per second for each phase (commands are encoded up front, as they would arrive
from the Raft log, so decode cost is included). `--no-gc` runs with the cyclic garbage collector
disabled, to show how much of the cost is the collector walking a large heap of queued messages.
"""

from __future__ import annotations

import argparse
import gc
import time

import msgpack

from raftmq.broker.commands import (
    CODEC_VERSION,
    KIND_ACK,
    Bind,
    Claim,
    DeclareExchange,
    DeclareQueue,
    OutMessage,
    Publish,
    QueueArgs,
    encode_command,
)
from raftmq.broker.results import ClaimResult, PublishResult, SettleResult
from raftmq.broker.state import BrokerState


def _publish_commands(count: int, batch: int, body: bytes, exchange: str, key: str) -> list[bytes]:
    commands = []
    for sequence, start in enumerate(range(0, count, batch)):
        messages = tuple(
            OutMessage(key, body, {"n": i}) for i in range(start, min(start + batch, count))
        )
        commands.append(encode_command(Publish(1 + sequence, exchange, messages, "bench", sequence)))
    return commands


def _rate(label: str, messages: int, seconds: float) -> None:
    print(f"{label:<34} {messages / seconds:>12,.0f} msg/s  ({seconds * 1e6 / messages:.2f} us/msg)")


def _bench_publish(state: BrokerState, commands: list[bytes], messages: int, label: str) -> None:
    started = time.perf_counter()
    for command in commands:
        result = state.apply(command)
        assert isinstance(result, PublishResult), result
    _rate(label, messages, time.perf_counter() - started)


def _bench_claim_ack(state: BrokerState, queue: str, messages: int, batch: int) -> None:
    """Times only the two apply calls (building the ack command is the API layer's cost)."""
    now = 10**6
    spent = 0.0
    done = 0
    while done < messages:
        now += 1
        claim = encode_command(Claim(now, queue, "bench", batch, 30_000))
        started = time.perf_counter()
        claimed = state.apply(claim)
        spent += time.perf_counter() - started
        assert isinstance(claimed, ClaimResult), claimed
        flat = [n for d in claimed.deliveries for n in (d.message_id, d.lease_id)]
        ack = msgpack.packb([CODEC_VERSION, KIND_ACK, now, queue, flat])
        started = time.perf_counter()
        acked = state.apply(ack)
        spent += time.perf_counter() - started
        assert isinstance(acked, SettleResult) and acked.settled == len(flat) // 2, acked
        done += len(flat) // 2
    _rate(f"claim+ack (batch {batch})", messages, spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--body-bytes", type=int, default=256)
    parser.add_argument("--no-gc", action="store_true")
    options = parser.parse_args()
    if options.no_gc:
        gc.disable()
    body = b"x" * options.body_bytes
    count, batch = options.messages, options.batch

    state = BrokerState()
    state.apply_command(DeclareQueue(0, "work", QueueArgs()))
    commands = _publish_commands(count, batch, body, "", "work")
    _bench_publish(state, commands, count, f"publish default exchange (batch {batch})")
    _bench_claim_ack(state, "work", count, batch)

    state = BrokerState()
    state.apply_command(DeclareQueue(0, "ttl", QueueArgs(message_ttl_ms=3_600_000, max_length=10**7)))
    commands = _publish_commands(count, batch, body, "", "ttl")
    _bench_publish(state, commands, count, f"publish TTL+max-length queue (batch {batch})")

    state = BrokerState()
    state.apply_command(DeclareExchange(0, "events", "topic"))
    for name, pattern in (("all", "#"), ("orders", "orders.*"), ("eu", "*.eu.#")):
        state.apply_command(DeclareQueue(0, name, QueueArgs()))
        state.apply_command(Bind(0, "events", name, pattern))
    commands = _publish_commands(count, batch, body, "events", "orders.eu.created")
    _bench_publish(state, commands, count, "publish topic fan-out to 3 queues")

    state = BrokerState()
    state.apply_command(DeclareQueue(0, "single", QueueArgs()))
    single = _publish_commands(count // 10, 1, body, "", "single")
    _bench_publish(state, single, count // 10, "publish (batch 1)")


if __name__ == "__main__":
    main()
