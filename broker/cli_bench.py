"""`raftmq bench`: a load generator in the manner of `nats bench` and `kafka-producer-perf-test`.

N producers (the library's batching, idempotent `Producer`) publish to a queue or a stream, M
consumers (`QueueConsumer` pushed over a WebSocket, or pulled; `StreamConsumer` for a stream,
each reading every record) take the messages. Without `--rate` each producer sends as fast as
its bounded buffer lets it (closed loop: latency counts from the send call); with `--rate` the
sends follow a fixed schedule (open loop: latency counts from the *scheduled* send time, so a
stall shows up as the latency of every message it delayed, not as a gap nobody measured).

Each body starts with the run's 8-byte tag and its scheduled send time, so consumers count only
this run's messages and measure end-to-end latency; the rest is filler (`--payload`).
"""

from __future__ import annotations

import argparse
import contextlib
from typing import TYPE_CHECKING

from raftmq.broker.cli_bench_report import summary_json, summary_text
from raftmq.broker.cli_bench_run import DEFAULT_DURATION_S, BenchRun
from raftmq.broker.cli_common import CliUsageError, runner

if TYPE_CHECKING:
    from raftmq.client import Client

__all__ = ["add_bench_parser"]


def add_bench_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
                     common: argparse.ArgumentParser) -> None:
    bench = subparsers.add_parser(
        "bench", parents=[common], help="load generator: publish/consume throughput and latency",
        description="Publish with N producers (and consume with M consumers) for a while, "
        "showing progress once a second on stderr, then print throughput and publish-confirm "
        "latency percentiles (HDR histogram). Consumers take (ack) every message of the queue: "
        "use a queue of its own. Exit status 1 if any message was not stored.")
    target = bench.add_mutually_exclusive_group()
    target.add_argument("--queue", default="bench", help="queue to load (default 'bench')")
    target.add_argument("--stream", help="load this stream instead of a queue")
    bench.add_argument("--partitions", type=int, default=1,
                       help="partitions of the stream when the bench declares it (default 1)")
    bench.add_argument("--purge", action="store_true",
                       help="purge the queue before the run (its ready messages are dropped)")
    bench.add_argument("--no-declare", dest="declare", action="store_false",
                       help="do not declare the queue or stream (it must exist)")
    bench.add_argument("--producers", type=int, default=1, help="producers (default 1)")
    bench.add_argument("--consumers", type=int, default=0, help="consumers (default 0)")
    bench.add_argument("--size", type=int, default=128, metavar="BYTES",
                       help="message body size (default 128)")
    bench.add_argument("--payload", choices=("text", "random"), default="text",
                       help="body filler: repetitive text, which lz4 shrinks as it would JSON "
                       "(as the foundation's benchmark sent), or incompressible random bytes "
                       "(default text)")
    bench.add_argument("--batch", type=int, default=100, metavar="N",
                       help="messages per publish request, at most (default 100)")
    bench.add_argument("--linger-ms", type=float, default=5.0,
                       help="how long a batch waits to fill up (default 5)")
    bench.add_argument("--in-flight", type=int, default=1, metavar="N",
                       help="unanswered batches per producer (default 1; >1 gives up ordering)")
    bench.add_argument("--rate", type=float, default=0.0, metavar="MSGS_PER_S",
                       help="total target publish rate, open loop (default: as fast as possible)")
    bench.add_argument("--duration", type=float, metavar="SECONDS",
                       help=f"how long to publish (default {DEFAULT_DURATION_S:g}, or unlimited "
                       "with --messages)")
    bench.add_argument("--messages", type=int, default=0, metavar="N",
                       help="stop after publishing N messages in total")
    bench.add_argument("--pull", action="store_true", help="queue consumers pull instead of push")
    bench.add_argument("--prefetch", type=int, default=1000,
                       help="unacked messages per queue consumer (default 1000)")
    bench.add_argument("--drain-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="after publishing, wait this long without progress for consumers "
                       "to catch up (default 10)")
    bench.add_argument("--no-idempotent", dest="idempotent", action="store_false",
                       help="publish without producer ids and sequence numbers")
    bench.add_argument("--no-compress", dest="compress", action="store_false",
                       help="never lz4-compress publish batches")
    bench.add_argument("--no-progress", dest="progress", action="store_false",
                       help="no progress line on stderr")
    bench.add_argument("--json", action="store_true", help="print the summary as JSON")
    bench.set_defaults(handler=runner(_bench, writes=True, check=_check))


def _check(args: argparse.Namespace) -> None:
    checks = [
        (args.producers >= 1, "--producers must be at least 1"),
        (args.consumers >= 0, "--consumers must be >= 0"),
        (args.size >= 0, "--size must be >= 0"),
        (args.batch >= 1, "--batch must be at least 1"),
        (1 <= args.in_flight <= 32, "--in-flight must be in 1..32"),
        (args.rate >= 0 and args.linger_ms >= 0, "--rate and --linger-ms must be >= 0"),
        (args.duration is None or args.duration > 0, "--duration must be > 0"),
        (args.messages >= 0, "--messages must be >= 0"),
        (1 <= args.prefetch <= 10_000, "--prefetch must be in 1..10000"),
        (args.partitions >= 1, "--partitions must be at least 1"),
        (not (args.purge and args.stream is not None), "--purge applies to queues only"),
    ]
    for ok, problem in checks:
        if not ok:
            raise CliUsageError(problem)


async def _bench(client: Client, args: argparse.Namespace) -> int:
    from raftmq.client import ConflictError

    if args.declare:
        with contextlib.suppress(ConflictError):  # it exists, declared otherwise: use it
            if args.stream is not None:
                await client.declare_stream(args.stream, partitions=args.partitions)
            else:
                await client.declare_queue(args.queue)
    if args.purge and args.stream is None:
        await client.purge_queue(args.queue)
    document = await BenchRun(client, args).run()
    print(summary_json(document) if args.json else summary_text(document), flush=True)
    published = document["published"]
    return 0 if published["confirmed"] == published["sent"] else 1
