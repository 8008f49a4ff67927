"""`raftmq publish` and `raftmq consume` (the queue side; `consume --stream` is in cli_streams).

`publish` sends through the batching, idempotent `Producer`, so a failover retry never stores
a message twice, and reports every message's outcome: accepted, unroutable, rejected, failed
(certainly not stored) or unknown (may be stored). `consume` uses `QueueConsumer`, pushed over a
WebSocket (default) or pulled with long-polls, and acks what it printed; whatever it received
but did not print (past --count, or everything with --no-ack) goes back to the queue at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from raftmq.broker import cli_streams
from raftmq.broker.cli_common import CliUsageError, describe_error, format_body, jsonable, runner

if TYPE_CHECKING:
    from raftmq.client import Client, Message, RaftMQError
    from raftmq.client.producer import Outcome

__all__ = ["add_consume_parser", "add_publish_parser", "print_message"]

DEFAULT_PUBLISH_BATCH = 100
# Leftover messages are handed back in one nack; the buffer holds at most `prefetch` of them.
_DRAIN_LIMIT = 10_000


def add_publish_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
                       common: argparse.ArgumentParser) -> None:
    publish = subparsers.add_parser(
        "publish", parents=[common], help="publish messages to a queue, exchange or stream",
        description="Publish each BODY argument as one message; with no BODY (or '-'), each "
        "line of standard input is one message. Messages go out in idempotent batches: a retry "
        "after a failover never stores one twice. Exit status 1 if any message was not stored.")
    target = publish.add_mutually_exclusive_group()
    target.add_argument("--queue", help="publish straight to this queue (default exchange)")
    target.add_argument("--exchange", help="publish to this exchange (default: '')")
    target.add_argument("--stream", help="append to this stream")
    publish.add_argument("--routing-key", default="", help="routing key of every message")
    publish.add_argument("--key", help="stream record key (chooses the partition)")
    publish.add_argument("--partition", type=int, help="stream partition (instead of --key)")
    publish.add_argument("--header", action="append", default=[], metavar="KEY=VALUE",
                         help="a string header (repeatable)")
    publish.add_argument("--ttl-ms", type=int, help="per-message time to live (queues)")
    publish.add_argument("--delay-ms", type=int, help="deliver only after this delay (queues)")
    publish.add_argument("--batch", type=int, default=DEFAULT_PUBLISH_BATCH, metavar="N",
                         help=f"at most N messages per request (default {DEFAULT_PUBLISH_BATCH})")
    publish.add_argument("bodies", nargs="*", metavar="BODY", help="message bodies")
    publish.set_defaults(handler=runner(_publish, writes=True, check=_check_publish_args))


def add_consume_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
                       common: argparse.ArgumentParser) -> None:
    consume = subparsers.add_parser(
        "consume", parents=[common], help="print messages from a queue (or a stream)",
        description="Receive messages from QUEUE, print them and ack them (Ctrl-C stops), or "
        "read a stream with --stream. Messages received but not printed go back to the queue.")
    consume.add_argument("queue", metavar="QUEUE", nargs="?", help="the queue to consume")
    consume.add_argument("--count", type=int, default=0,
                         help="stop after this many messages (default: run until Ctrl-C)")
    consume.add_argument("--exit-when-empty", action="store_true",
                         help="stop when nothing arrives for --wait-ms")
    consume.add_argument("--wait-ms", type=int, default=5_000,
                         help="long-poll wait per request, and the idle time of "
                         "--exit-when-empty (default 5000)")
    consume.add_argument("--json", action="store_true", help="print one JSON document per message")
    queue = consume.add_argument_group("queue options")
    mode = queue.add_mutually_exclusive_group()
    mode.add_argument("--push", dest="mode", action="store_const", const="push", default="push",
                      help="messages are pushed over a WebSocket (default)")
    mode.add_argument("--pull", dest="mode", action="store_const", const="pull",
                      help="claim messages with long-polling HTTP requests instead")
    acking = queue.add_mutually_exclusive_group()
    acking.add_argument("--ack", dest="ack", action="store_true", default=True,
                        help="ack every printed message: it leaves the queue (default)")
    acking.add_argument("--no-ack", "--requeue", dest="ack", action="store_false",
                        help="look without taking: hold up to --prefetch messages, then give "
                        "them all back to the queue")
    queue.add_argument("--prefetch", type=int, default=100,
                       help="unacked messages held at once (default 100; at most --count)")
    queue.add_argument("--lease-ms", type=int, default=30_000,
                       help="lease per delivery: unacked after this long, a message is redelivered")
    queue.add_argument("--consumer", default="raftmq-cli", help="consumer name")
    cli_streams.add_stream_consume_options(consume)
    consume.set_defaults(handler=runner(_consume, writes=True, check=_check_consume_args))


# ------------------------------------------------------------ publish


def _headers(pairs: Sequence[str]) -> dict[str, str | int | float | bool | bytes | None]:
    headers: dict[str, str | int | float | bool | bytes | None] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliUsageError(f"--header expects KEY=VALUE, got {pair!r}")
        headers[key] = value
    return headers


async def _bodies(args: argparse.Namespace) -> AsyncIterator[bytes]:
    if args.bodies and args.bodies != ["-"]:
        for body in args.bodies:
            yield body.encode()
        return
    while True:
        # A thread reads, so batches already taken keep going out while stdin is quiet.
        line = await asyncio.to_thread(sys.stdin.buffer.readline)
        if not line:
            return
        yield line.rstrip(b"\r\n")


def _check_publish_args(args: argparse.Namespace) -> None:
    if args.stream is None and (args.key is not None or args.partition is not None):
        raise CliUsageError("--key and --partition apply to --stream only")
    if args.stream is not None and (args.ttl_ms is not None or args.delay_ms is not None
                                    or args.routing_key):
        raise CliUsageError("--routing-key, --ttl-ms and --delay-ms apply to queues and exchanges")
    if args.batch < 1:
        raise CliUsageError("--batch must be at least 1")
    _headers(args.header)


async def _publish(client: Client, args: argparse.Namespace) -> int:
    from raftmq.client.producer import Producer, ProducerSettings

    headers = _headers(args.header)
    if args.queue is not None:
        await client.queue_info(args.queue)  # a missing queue: queue_not_found, not "unroutable"
    settings = ProducerSettings(max_batch_messages=args.batch,
                                max_buffered_messages=max(10 * args.batch, 1000),
                                deadline_s=args.timeout)
    if args.stream is not None:
        producer = Producer(client, stream=args.stream, settings=settings)
    else:
        producer = Producer(client, exchange=args.exchange or "", settings=settings)
    tally = _Tally()
    async with producer:
        async for body in _bodies(args):
            future = await producer.send(_item(args, body, headers))
            tally.sent += 1
            future.add_done_callback(tally.record)
    return tally.report(args)


def _item(args: argparse.Namespace, body: bytes, headers: dict[str, Any]) -> Any:
    from raftmq.client import OutgoingMessage
    from raftmq.client.stream_wire import OutgoingRecord

    if args.stream is not None:
        return OutgoingRecord(body, key=args.key, partition=args.partition, headers=headers)
    routing_key = args.queue if args.queue is not None else args.routing_key
    return OutgoingMessage(body, routing_key=routing_key, headers=headers, ttl_ms=args.ttl_ms,
                           delay_ms=args.delay_ms)


class _Tally:
    """Every message's outcome, counted as its future settles (no list of futures is kept)."""

    def __init__(self) -> None:
        self.sent = 0
        self.outcomes: Counter[str] = Counter()
        self.offsets: dict[int, tuple[int, int]] = {}  # stream partition -> first, last offset
        self.errors: dict[tuple[str, bool], tuple[RaftMQError, int]] = {}

    def record(self, future: asyncio.Future[Outcome]) -> None:
        from raftmq.client import RaftMQError
        from raftmq.client.producer import AppendedRecord

        error = None if future.cancelled() else future.exception()
        if future.cancelled() or (error is not None and not isinstance(error, RaftMQError)):
            self.outcomes["unknown"] += 1  # the producer reports every outcome; be safe anyway
            return
        if isinstance(error, RaftMQError):
            self.outcomes["failed" if error.definite else "unknown"] += 1
            key = (error.code, error.definite)
            first, count = self.errors.get(key, (error, 0))
            self.errors[key] = (first, count + 1)
            return
        outcome = future.result()
        if isinstance(outcome, AppendedRecord):
            self.outcomes["appended"] += 1
            low, high = self.offsets.get(outcome.partition, (outcome.offset, outcome.offset))
            self.offsets[outcome.partition] = (min(low, outcome.offset), max(high, outcome.offset))
        else:
            self.outcomes[outcome.status] += 1

    def report(self, args: argparse.Namespace) -> int:
        counts = self.outcomes
        if args.stream is not None:
            print(f"records {self.sent}, appended {counts['appended']}, failed {counts['failed']}, "
                  f"unknown {counts['unknown']}")
            for partition in sorted(self.offsets):
                low, high = self.offsets[partition]
                print(f"  partition {partition}: offsets {low}-{high}")
            stored = counts["appended"]
        else:
            print(f"messages {self.sent}, accepted {counts['accepted']}, "
                  f"unroutable {counts['unroutable']}, rejected {counts['rejected']}, "
                  f"failed {counts['failed']}, unknown {counts['unknown']}")
            stored = counts["accepted"]
        for error, count in self.errors.values():
            print(f"raftmq publish: error: {describe_error(error, writes=True)} "
                  f"({count} message{'s' if count != 1 else ''})", file=sys.stderr)
        return 0 if stored == self.sent else 1


# ------------------------------------------------------------ consume


def _check_consume_args(args: argparse.Namespace) -> None:
    if (args.queue is None) == (args.stream is None):
        raise CliUsageError("give a QUEUE or --stream NAME (one of them)")
    if args.count < 0 or args.prefetch < 1 or args.wait_ms < 0:
        raise CliUsageError("--count must be >= 0, --prefetch >= 1 and --wait-ms >= 0")
    if args.stream is None:
        cli_streams.reject_stream_options(args)
    else:
        cli_streams.check_stream_options(args)


async def _consume(client: Client, args: argparse.Namespace) -> int:
    if args.stream is not None:
        return await cli_streams.consume_stream(client, args)
    from raftmq.client.queue_consumer import QueueConsumer

    prefetch = min(args.prefetch, args.count) if args.count > 0 else args.prefetch
    consumer = QueueConsumer(client, args.queue, consumer=args.consumer, prefetch=prefetch,
                             lease_ms=args.lease_ms, mode=args.mode, wait_ms=args.wait_ms)
    idle_s = args.wait_ms / 1000.0 if args.exit_when_empty else None
    printed: list[Message] = []  # printed and not yet settled
    received = 0
    await consumer.start()
    try:
        while args.count <= 0 or received < args.count:
            wanted = prefetch if args.count <= 0 else min(prefetch, args.count - received)
            batch = await consumer.next_batch(wanted, timeout_s=idle_s)
            if not batch:
                break  # idle for --wait-ms with --exit-when-empty
            for message in batch:
                print_message(message, as_json=args.json)
            received += len(batch)
            printed.extend(batch)
            last = 0 < args.count <= received
            if args.ack and not last:
                # The last batch is acked after unsubscribing: an ack frees credit, and the
                # broker would push more messages only for them to wait out their leases.
                await _ack(consumer, printed)
                printed = []
            elif not args.ack and len(printed) >= prefetch:
                break  # the broker sends no more until these are settled
    finally:
        await _finish(consumer, printed, ack=args.ack)
    return 0


async def _ack(consumer: Any, messages: list[Message]) -> None:
    receipt = await consumer.ack(messages)
    for message_id, code in receipt.failures:
        print(f"raftmq consume: warning: ack of message {message_id} failed: {code} "
              "(it will be delivered again)", file=sys.stderr)


async def _finish(consumer: Any, printed: list[Message], *, ack: bool) -> None:
    """Unsubscribe; ack what was printed (or, with --no-ack, return it); return what arrived
    but was not printed, so that it is redelivered at once rather than when its lease ends."""
    from raftmq.client import RaftMQError

    await consumer.close()
    leftovers = [] if ack else list(printed)
    # A consumer that had failed raises here: that failure was (or is being) reported already.
    with contextlib.suppress(RaftMQError):
        leftovers += await consumer.next_batch(_DRAIN_LIMIT, timeout_s=0)
    if ack and printed:
        await _ack(consumer, printed)
    if not leftovers:
        return
    try:
        await consumer.nack(leftovers, requeue=True)
    except RaftMQError as error:
        print(f"raftmq consume: warning: could not return {len(leftovers)} unprinted messages "
              f"({error.code}); they are redelivered when their leases run out", file=sys.stderr)


def print_message(message: Message, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({
            "message_id": message.message_id, "exchange": message.exchange,
            "routing_key": message.routing_key, "delivery_count": message.delivery_count,
            "published_ms": message.published_ms, "headers": jsonable(message.headers),
            "body": jsonable(message.body),
        }), flush=True)
        return
    headers = f" headers={message.headers}" if message.headers else ""
    print(f"[{message.message_id}] exchange={message.exchange!r} "
          f"routing_key={message.routing_key!r} delivery={message.delivery_count}{headers}: "
          f"{format_body(message.body)}", flush=True)
