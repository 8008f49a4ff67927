"""`raftmq streams` (list, `--describe`) and `raftmq consume --stream` (by offset, by time, or as
a consumer-group member that commits what it printed)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from raftmq.broker.cli_common import CliUsageError, format_body, jsonable, print_table, runner

if TYPE_CHECKING:
    from raftmq.client import Client
    from raftmq.client.stream_consumer import Assignment
    from raftmq.client.stream_wire import StreamRecord

__all__ = [
    "add_stream_consume_options",
    "add_streams_parser",
    "check_stream_options",
    "consume_stream",
    "parse_start",
    "parse_time_ms",
    "reject_stream_options",
]

# The list shows this many partitions' offset ranges per stream; --describe shows them all.
_LISTED_PARTITIONS = 4
_STREAM_ONLY_OPTIONS = ("group", "start", "from_time", "partition")


def add_streams_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
                       common: argparse.ArgumentParser) -> None:
    streams = subparsers.add_parser(
        "streams", parents=[common], help="list streams with partitions, offsets, bytes, groups",
        description="List every stream with its partitions' offset ranges, size and consumer "
        "groups; --describe NAME shows one stream's partitions, retention and each group's "
        "members, committed offsets and lag.")
    streams.add_argument("--describe", metavar="STREAM", help="show one stream in detail")
    streams.add_argument("--json", action="store_true", help="print the JSON documents")
    streams.set_defaults(handler=runner(_streams, writes=False))


def add_stream_consume_options(consume: argparse.ArgumentParser) -> None:
    group = consume.add_argument_group("stream options")
    group.add_argument("--stream", metavar="STREAM", help="read this stream instead of a queue")
    group.add_argument("--group", metavar="GROUP",
                       help="read as a member of this consumer group (partitions are shared "
                       "with the other members; what is printed is committed)")
    group.add_argument("--from", dest="start", type=parse_start, default=None,
                       metavar="earliest|latest|OFFSET",
                       help="where to start (for a group: where nothing is committed yet); "
                       "default earliest")
    group.add_argument("--from-time", type=parse_time_ms, metavar="TIME",
                       help="start at the first record stamped at or after TIME (ISO 8601, or "
                       "milliseconds since the epoch)")
    group.add_argument("--partition", type=int, metavar="P", help="read this partition only")
    group.add_argument("--no-commit", dest="commit", action="store_false",
                       help="with --group: do not commit offsets")


def parse_start(value: str) -> str | int:
    if value in ("earliest", "latest"):
        return value
    try:
        offset = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("expected earliest, latest or an offset") from None
    if offset < 0:
        raise argparse.ArgumentTypeError("an offset is >= 0")
    return offset


def parse_time_ms(value: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected ISO 8601 (2026-11-28T10:00:00Z) or milliseconds since the epoch") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a local time, as the user typed it
    return int(moment.timestamp() * 1000)


def reject_stream_options(args: argparse.Namespace) -> None:
    used = [name for name in _STREAM_ONLY_OPTIONS if getattr(args, name) is not None]
    if used or not args.commit:
        raise CliUsageError("--group, --from, --from-time, --partition and --no-commit need "
                            "--stream")


def check_stream_options(args: argparse.Namespace) -> None:
    if args.group is not None and args.partition is not None:
        raise CliUsageError("--partition and --group exclude each other (the group assigns)")


# ------------------------------------------------------------ listing


async def _streams(client: Client, args: argparse.Namespace) -> int:
    if args.describe is not None:
        return await _describe(client, args.describe, as_json=args.json)
    streams = await client.list_streams()
    if args.json:
        print(json.dumps(streams, indent=2, sort_keys=True))
        return 0
    if not streams:
        print("no streams")
        return 0
    rows: list[tuple[str, ...]] = [
        ("STREAM", "PARTITIONS", "MESSAGES", "BYTES", "PUBLISHED", "OFFSETS (first-next)", "GROUPS")]
    for stream in streams:
        partitions = stream.get("partitions") or []
        ranges = [f"{p.get('partition')}:{p.get('first_offset')}-{p.get('next_offset')}"
                  for p in partitions[:_LISTED_PARTITIONS]]
        if len(partitions) > _LISTED_PARTITIONS:
            ranges.append(f"+{len(partitions) - _LISTED_PARTITIONS} more")
        counters = stream.get("counters") or {}
        rows.append((
            str(stream.get("name")), str(len(partitions)), str(stream.get("messages", "")),
            str(stream.get("bytes", "")), str(counters.get("published", "")), " ".join(ranges),
            ",".join(str(g) for g in stream.get("groups") or []) or "-",
        ))
    print_table(rows)
    return 0


async def _describe(client: Client, name: str, *, as_json: bool) -> int:
    info = await client.stream_info(name)
    answer = await client.request("GET", f"/v1/streams/{quote(name, safe='')}/groups",
                                  write=False, idempotent=True)
    groups: list[dict[str, Any]] = answer.get("groups") or []
    if as_json:
        print(json.dumps({"stream": info, "groups": groups}, indent=2, sort_keys=True))
        return 0
    partitions: list[dict[str, Any]] = info.get("partitions") or []
    counters = info.get("counters") or {}
    print(f"stream {info.get('name')}: {len(partitions)} partitions, {info.get('messages')} "
          f"messages, {info.get('bytes')} bytes; published {counters.get('published')}, "
          f"trimmed {counters.get('trimmed')}")
    retention = info.get("args") or {}
    print("retention: " + ", ".join(
        f"{key} {'-' if retention.get(key) is None else retention.get(key)}"
        for key in ("max_age_ms", "max_bytes", "max_messages", "max_message_bytes")))
    rows: list[tuple[str, ...]] = [("PARTITION", "FIRST", "NEXT", "MESSAGES", "BYTES", "OLDEST")]
    next_offsets: dict[int, int] = {}
    for partition in partitions:
        next_offsets[int(partition["partition"])] = int(partition["next_offset"])
        rows.append((str(partition["partition"]), str(partition.get("first_offset")),
                     str(partition.get("next_offset")), str(partition.get("messages")),
                     str(partition.get("bytes")), _time_text(partition.get("first_timestamp_ms"))))
    print_table(rows)
    if groups:
        print()
        _print_groups(groups, next_offsets)
    return 0


def _print_groups(groups: list[dict[str, Any]], next_offsets: dict[int, int]) -> None:
    members: list[tuple[str, ...]] = [("GROUP", "GENERATION", "MEMBER", "PARTITIONS")]
    offsets: list[tuple[str, ...]] = [("GROUP", "PARTITION", "COMMITTED", "LAG")]
    for group in groups:
        name, generation = str(group.get("group")), str(group.get("generation"))
        for member in group.get("members") or []:
            members.append((name, generation, str(member.get("member")),
                            ",".join(str(p) for p in member.get("partitions") or []) or "-"))
        if not group.get("members"):
            members.append((name, generation, "(none)", "-"))
        committed = {int(p): int(o) for p, o in (group.get("committed") or {}).items()}
        for partition, next_offset in sorted(next_offsets.items()):
            done = committed.get(partition)
            offsets.append((name, str(partition), "-" if done is None else str(done),
                            "-" if done is None else str(max(0, next_offset - done))))
    print_table(members)
    print()
    print_table(offsets)


def _time_text(timestamp_ms: object) -> str:
    if not isinstance(timestamp_ms, int):
        return "-"
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")


# ------------------------------------------------------------ consuming


async def consume_stream(client: Client, args: argparse.Namespace) -> int:
    from raftmq.client.stream_consumer import StreamConsumer

    batch_limit = 1000 if args.count <= 0 else min(1000, args.count)
    consumer = StreamConsumer(
        client, args.stream, group=args.group,
        partitions=None if args.partition is None else (args.partition,),
        start="earliest" if args.start is None else args.start,
        start_timestamp_ms=args.from_time, wait_ms=args.wait_ms,
        fetch_max_messages=batch_limit,
        on_rebalance=_report_rebalance if args.group is not None else None)
    idle_s = args.wait_ms / 1000.0 if args.exit_when_empty else None
    received = 0
    await consumer.start()
    try:
        while args.count <= 0 or received < args.count:
            wanted = batch_limit if args.count <= 0 else min(batch_limit, args.count - received)
            records = await consumer.next_batch(wanted, timeout_s=idle_s)
            if not records:
                break
            for record in records:
                _print_record(record, as_json=args.json)
            received += len(records)
            if args.group is not None and args.commit:
                await consumer.commit()
    finally:
        await consumer.close()
    return 0


def _report_rebalance(assignment: Assignment) -> None:
    partitions = ",".join(str(p) for p in assignment.partitions) or "none"
    print(f"raftmq consume: generation {assignment.generation}: partitions {partitions} "
          f"({len(assignment.members)} members)", file=sys.stderr, flush=True)


def _print_record(record: StreamRecord, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({
            "partition": record.partition, "offset": record.offset,
            "timestamp_ms": record.timestamp_ms, "key": record.key,
            "headers": jsonable(record.headers), "body": jsonable(record.body),
        }), flush=True)
        return
    key = f" key={record.key!r}" if record.key is not None else ""
    headers = f" headers={record.headers}" if record.headers else ""
    print(f"[{record.partition}@{record.offset}] time={_time_text(record.timestamp_ms)}{key}"
          f"{headers}: {format_body(record.body)}", flush=True)
