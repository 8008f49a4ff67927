"""How streams, partitions, groups and stream records look on the wire (plain maps)."""

from __future__ import annotations

import dataclasses
from typing import Any

from raftmq.broker.stream_log import StreamRecord
from raftmq.broker.stream_results import (
    FetchResult,
    GroupAssignment,
    GroupInfo,
    PartitionInfo,
    StreamInfo,
    StreamPublishResult,
)
from raftmq.client.wire import WireFormat, body_to_wire, headers_to_wire

__all__ = [
    "assignment_view",
    "fetch_view",
    "group_view",
    "partition_view",
    "record_views",
    "stream_publish_view",
    "stream_view",
]


def stream_view(info: StreamInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "args": dataclasses.asdict(info.args),
        "partitions": [partition_view(p) for p in info.partitions],
        "groups": list(info.groups),
        "messages": sum(p.messages for p in info.partitions),
        "bytes": sum(p.bytes for p in info.partitions),
        "counters": {"published": info.published, "trimmed": info.trimmed},
    }


def partition_view(info: PartitionInfo) -> dict[str, object]:
    return {
        "partition": info.partition,
        "first_offset": info.first_offset,
        "next_offset": info.next_offset,
        "messages": info.messages,
        "bytes": info.bytes,
        "first_timestamp_ms": info.first_timestamp_ms,
    }


def record_views(
    first_offset: int, records: list[StreamRecord], wire_format: WireFormat
) -> list[dict[str, Any]]:
    """Records as maps: offset, timestamp_ms, key, headers and the body (bytes in msgpack;
    body_b64, plus body when it is UTF-8 text, in JSON)."""
    views: list[dict[str, Any]] = []
    append = views.append
    if wire_format is WireFormat.MSGPACK:
        # The hot path of every fetch: headers need no conversion in msgpack.
        for offset, (timestamp_ms, key, body, headers) in enumerate(records, first_offset):
            append({"offset": offset, "timestamp_ms": timestamp_ms, "key": key, "body": body,
                    "headers": headers})
        return views
    for offset, (timestamp_ms, key, body, headers) in enumerate(records, first_offset):
        view: dict[str, Any] = {"offset": offset, "timestamp_ms": timestamp_ms, "key": key,
                                "headers": headers_to_wire(headers, wire_format)}
        view.update(body_to_wire(body, wire_format))
        append(view)
    return views


def fetch_view(result: FetchResult, applied_index: int, wire_format: WireFormat) -> dict[str, object]:
    records = result.records
    return {
        "partition": result.partition,
        "offset": result.offset,
        "next_fetch_offset": result.offset + len(records),
        "first_offset": result.first_offset,
        "next_offset": result.next_offset,
        "applied_index": applied_index,
        "messages": record_views(result.offset, records, wire_format),
    }


def stream_publish_view(result: StreamPublishResult, index: int) -> dict[str, object]:
    return {
        "partitions": list(result.partitions),
        "offsets": list(result.offsets),
        "duplicate": result.duplicate,
        "index": index,
    }


def assignment_view(result: GroupAssignment, index: int) -> dict[str, object]:
    return {
        "generation": result.generation,
        "member": result.member,
        "partitions": list(result.partitions),
        "members": list(result.members),
        # Map keys are strings so the JSON and msgpack forms agree.
        "committed": {str(p): offset for p, offset in result.committed},
        "session_expires_ms": result.session_expires_ms,
        "index": index,
    }


def group_view(info: GroupInfo) -> dict[str, object]:
    return {
        "stream": info.stream,
        "group": info.group,
        "generation": info.generation,
        "members": [
            {"member": m.member, "partitions": list(m.partitions),
             "session_timeout_ms": m.session_timeout_ms,
             "session_expires_ms": m.session_expires_ms}
            for m in info.members
        ],
        "committed": {str(p): offset for p, offset in info.committed},
    }
