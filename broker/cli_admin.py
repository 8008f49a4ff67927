"""Small admin commands over the HTTP API: `queues`, `cluster status`, `publish`, `consume`.

They talk to one node (`--url`, or RAFTMQ_URL); any node answers reads and forwards writes
to the leader. Failures print the server's stable error code and exit with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence

from raftmq.client import Message, OutgoingMessage, RaftMQ, RaftMQError

__all__ = ["DEFAULT_URL", "add_admin_parsers", "format_body"]

DEFAULT_URL = "http://127.0.0.1:8001"
MAX_PUBLISH_BATCH = 1_000
BODY_PREVIEW_CHARS = 200
Handler = Callable[[RaftMQ, argparse.Namespace], Awaitable[int]]


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("RAFTMQ_URL", DEFAULT_URL),
                        help=f"any node's HTTP URL [env RAFTMQ_URL, default {DEFAULT_URL}]")
    common.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="per-request timeout (default 10)")
    return common


def add_admin_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = _common_options()
    queues = subparsers.add_parser("queues", parents=[common], help="list queues and counts",
                                   description="List every queue with its message counts.")
    queues.add_argument("--json", action="store_true", help="print the raw JSON documents")
    queues.set_defaults(handler=_runner(_queues))

    cluster = subparsers.add_parser("cluster", help="cluster commands",
                                    description="Inspect the cluster.")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", metavar="COMMAND",
                                              required=True)
    status = cluster_commands.add_parser(
        "status", parents=[common], help="leader, term, indexes and peers as one node sees them",
        description="Show the cluster as the node at --url sees it.")
    status.add_argument("--json", action="store_true", help="print the raw JSON document")
    status.set_defaults(handler=_runner(_cluster_status))

    _add_publish_parser(subparsers, common)
    _add_consume_parser(subparsers, common)


def _add_publish_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
                        common: argparse.ArgumentParser) -> None:
    publish = subparsers.add_parser(
        "publish", parents=[common], help="publish messages",
        description="Publish each BODY argument as one message; with no BODY (or '-'), each "
        "line of standard input is one message.")
    target = publish.add_mutually_exclusive_group()
    target.add_argument("--queue", help="publish straight to this queue (default exchange)")
    target.add_argument("--exchange", default="", help="exchange to publish to (default '')")
    publish.add_argument("--routing-key", default="", help="routing key of every message")
    publish.add_argument("--header", action="append", default=[], metavar="KEY=VALUE",
                         help="a string header (repeatable)")
    publish.add_argument("--ttl-ms", type=int, help="per-message time to live")
    publish.add_argument("--delay-ms", type=int, help="deliver only after this delay")
    publish.add_argument("bodies", nargs="*", metavar="BODY", help="message bodies")
    publish.set_defaults(handler=_runner(_publish))


def _add_consume_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
                        common: argparse.ArgumentParser) -> None:
    consume = subparsers.add_parser(
        "consume", parents=[common], help="claim, print and ack messages",
        description="Claim messages from QUEUE, print them and ack them (Ctrl-C stops).")
    consume.add_argument("queue", metavar="QUEUE")
    consume.add_argument("--count", type=int, default=0,
                         help="stop after this many messages (default: run until Ctrl-C)")
    consume.add_argument("--max-messages", type=int, default=10, help="per claim (default 10)")
    consume.add_argument("--wait-ms", type=int, default=5_000, help="long-poll wait per claim")
    consume.add_argument("--lease-ms", type=int, default=30_000, help="lease per delivery")
    consume.add_argument("--consumer", default="raftmq-cli", help="consumer name")
    consume.add_argument("--requeue", action="store_true",
                         help="nack with requeue instead of ack (look without taking)")
    consume.add_argument("--exit-when-empty", action="store_true",
                         help="stop when a claim returns nothing")
    consume.set_defaults(handler=_runner(_consume))


def _runner(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(_with_client(handler, args))

    return run


async def _with_client(handler: Handler, args: argparse.Namespace) -> int:
    async with RaftMQ(args.url, timeout_s=args.timeout) as client:
        try:
            return await handler(client, args)
        except RaftMQError as exc:
            hint = f" (leader: {exc.leader})" if exc.leader else ""
            certainty = "" if exc.definite else " [outcome unknown: it may have happened]"
            print(f"raftmq {args.command}: error: {exc.code}: {exc.message}{hint}{certainty}",
                  file=sys.stderr)
            return 1
        except ValueError as exc:
            print(f"raftmq {args.command}: error: {exc}", file=sys.stderr)
            return 2


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())


async def _queues(client: RaftMQ, args: argparse.Namespace) -> int:
    queues = await client.list_queues()
    if args.json:
        print(json.dumps(queues, indent=2, sort_keys=True))
        return 0
    if not queues:
        print("no queues")
        return 0
    rows: list[tuple[str, ...]] = [(
        "QUEUE", "READY", "DELAYED", "LEASED", "BYTES", "CONSUMERS", "PUBLISHED", "ACKED",
        "DEAD-LETTERED",
    )]
    for queue in queues:
        counters = queue.get("counters") or {}
        rows.append((
            str(queue.get("name")),
            *(str(queue.get(key, "")) for key in
              ("ready", "delayed", "leased", "bytes", "consumers")),
            *(str(counters.get(key, "")) for key in ("published", "acked", "dead_lettered")),
        ))
    _print_table(rows)
    return 0


async def _cluster_status(client: RaftMQ, args: argparse.Namespace) -> int:
    view = await client.cluster()
    if args.json:
        print(json.dumps(view, indent=2, sort_keys=True))
        return 0
    print(f"node {view.get('node_id')} ({view.get('role')}), term {view.get('term')}, "
          f"leader {view.get('leader_id') or 'unknown'} {view.get('leader_url') or ''}".rstrip())
    print(f"commit index {view.get('commit_index')}, applied index {view.get('applied_index')}, "
          f"quorum {'yes' if view.get('has_quorum') else 'NO'}, "
          f"ready {'yes' if view.get('ready') else 'no'}")
    peers = view.get("peers") or []
    if peers:
        rows: list[tuple[str, ...]] = [("PEER", "ADDRESS", "CONNECTED", "MATCH INDEX", "HTTP")]
        rows += [(str(peer.get("node_id")), str(peer.get("address")),
                  "yes" if peer.get("connected") else "no", str(peer.get("match_index")),
                  str(peer.get("http_url") or "")) for peer in peers]
        _print_table(rows)
    return 0


def _headers(pairs: Sequence[str]) -> dict[str, str | int | float | bool | bytes | None]:
    headers: dict[str, str | int | float | bool | bytes | None] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--header expects KEY=VALUE, got {pair!r}")
        headers[key] = value
    return headers


def _bodies(args: argparse.Namespace) -> Iterator[bytes]:
    if args.bodies and args.bodies != ["-"]:
        yield from (body.encode() for body in args.bodies)
        return
    for line in sys.stdin.buffer:
        yield line.rstrip(b"\r\n")


def _chunks(bodies: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for body in bodies:
        chunk.append(body)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _publish(client: RaftMQ, args: argparse.Namespace) -> int:
    headers = _headers(args.header)
    totals = {"messages": 0, "accepted": 0, "unroutable": 0, "rejected": 0}
    for chunk in _chunks(_bodies(args), MAX_PUBLISH_BATCH):
        messages = [OutgoingMessage(body, routing_key=args.routing_key, headers=headers,
                                    ttl_ms=args.ttl_ms, delay_ms=args.delay_ms)
                    for body in chunk]
        if args.queue is not None:
            receipt = await client.publish_to_queue(args.queue, messages)
        else:
            receipt = await client.publish(args.exchange, messages)
        totals["messages"] += len(messages)
        totals["accepted"] += receipt.accepted
        totals["unroutable"] += len(receipt.unroutable)
        totals["rejected"] += len(receipt.rejected)
    print(", ".join(f"{key} {value}" for key, value in totals.items()))
    return 0 if totals["accepted"] == totals["messages"] else 1


def format_body(body: bytes) -> str:
    """A printable preview: text as is, binary as a hex prefix."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(body)} bytes: {body[:32].hex()}{'...' if len(body) > 32 else ''}>"
    return text if len(text) <= BODY_PREVIEW_CHARS else text[:BODY_PREVIEW_CHARS] + "..."


def _print_message(message: Message) -> None:
    headers = f" headers={message.headers}" if message.headers else ""
    print(f"[{message.message_id}] exchange={message.exchange!r} "
          f"routing_key={message.routing_key!r} delivery={message.delivery_count}{headers}: "
          f"{format_body(message.body)}", flush=True)


async def _consume(client: RaftMQ, args: argparse.Namespace) -> int:
    received = 0
    while args.count <= 0 or received < args.count:
        wanted = args.max_messages if args.count <= 0 else min(args.max_messages,
                                                               args.count - received)
        messages = await client.claim(
            args.queue, max_messages=wanted, lease_ms=args.lease_ms, wait_ms=args.wait_ms,
            consumer=args.consumer)
        if not messages and args.exit_when_empty:
            break
        for message in messages:
            _print_message(message)
        if messages:
            if args.requeue:
                await client.nack(args.queue, messages, requeue=True)
            else:
                await client.ack(args.queue, messages)
        received += len(messages)
    return 0
