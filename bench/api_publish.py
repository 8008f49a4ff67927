"""Micro-benchmark: the API's per-message cost of a msgpack publish, no HTTP, no Raft.

Run: .venv/bin/python bench/api_publish.py [--messages N] [--body-bytes S] [--rounds R]
Times what the publish handler does between reading the body and proposing: decode the msgpack
document, validate it, run the last check before Raft and encode the Publish command. Prints
messages per second for the fast path (what the handler runs) and for the general path
(per-message Fields + an OutMessage each + validate_command + encode_command, as the handler
ran before the fast path existed), and the time per message of each step of the fast path.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from unittest import mock

import msgpack

from raftmq.broker.api import publish_codec
from raftmq.broker.api.context import raw_publish_command_problem
from raftmq.broker.api.limits import ApiLimits
from raftmq.broker.api.publish_codec import parse_publish
from raftmq.broker.commands import OutMessage, Publish, encode_command, encode_raw_publish
from raftmq.broker.queue_validation import validate_command
from raftmq.broker.queue_wire import RawPublish
from raftmq.client.wire import WireFormat, decode_document

LIMITS = ApiLimits()
NOW_MS = 1_700_000_000_000


def _request_body(messages: int, body_bytes: int) -> bytes:
    document = {
        "exchange": "bench-ex",
        "messages": [{"routing_key": "orders.eu", "body": bytes(body_bytes)}
                     for _ in range(messages)],
    }
    data: bytes = msgpack.packb(document, use_bin_type=True)
    return data


def _fields(data: bytes) -> RawPublish:
    parsed = parse_publish(decode_document(data, WireFormat.MSGPACK), LIMITS)
    return (parsed.exchange, parsed.messages, parsed.producer_id, parsed.sequence,
            LIMITS.max_total_body_bytes)


def fast_path(data: bytes) -> bytes:
    fields = _fields(data)
    if raw_publish_command_problem(NOW_MS, fields) is not None:
        raise AssertionError("the benchmark's publish is valid")
    return encode_raw_publish(NOW_MS, fields)


def _never_plain(*_args: object) -> None:
    return None


def general_path(data: bytes) -> bytes:
    with mock.patch.object(publish_codec, "_plain_message", new=_never_plain):
        exchange, messages, producer_id, sequence, max_total_bytes = _fields(data)
    command = Publish(NOW_MS, exchange, tuple(OutMessage(*m) for m in messages), producer_id,
                      sequence, max_total_bytes)
    if validate_command(command) is not None:
        raise AssertionError("the benchmark's publish is valid")
    return encode_command(command)


def _seconds_per_call(action: Callable[[], object], rounds: int) -> float:
    """Best of three runs: the least disturbed by whatever else the machine is doing."""
    best_s = float("inf")
    for _ in range(3):
        started_s = time.perf_counter()
        for _ in range(rounds):
            action()
        best_s = min(best_s, (time.perf_counter() - started_s) / rounds)
    return best_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--body-bytes", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    data = _request_body(args.messages, args.body_bytes)
    if fast_path(data) != general_path(data):
        raise AssertionError("the two paths must write the same command bytes")
    print(f"publish of {args.messages} x {args.body_bytes} B, msgpack ({len(data):,} B body)")
    for name, path in (("general path (before)", general_path), ("fast path (after)", fast_path)):
        seconds = _seconds_per_call(lambda path=path: path(data), args.rounds)  # type: ignore[misc]
        per_message_us = seconds / args.messages * 1e6
        print(f"  {name:22} {args.messages / seconds:>12,.0f} msg/s  {per_message_us:6.2f} us/msg")
    document = decode_document(data, WireFormat.MSGPACK)
    fields = _fields(data)
    steps: dict[str, Callable[[], object]] = {
        "decode msgpack": lambda: decode_document(data, WireFormat.MSGPACK),
        "parse_publish": lambda: parse_publish(document, LIMITS),
        "last check": lambda: raw_publish_command_problem(NOW_MS, fields),
        "encode command": lambda: encode_raw_publish(NOW_MS, fields),
    }
    for name, step in steps.items():
        per_message_us = _seconds_per_call(step, args.rounds) / args.messages * 1e6
        print(f"    {name:20} {per_message_us:6.2f} us/msg")


if __name__ == "__main__":
    main()
