"""Streams over HTTP: declare, inspect and delete; publish; fetch by offset or time from the
local replica (with long-poll and read-your-writes); consumer groups and committed offsets."""

from __future__ import annotations

import asyncio

from aiohttp import web

from raftmq.broker.api.codec import check_name
from raftmq.broker.api.content import read_document, request_format, respond
from raftmq.broker.api.context import ApiContext, context_of
from raftmq.broker.api.errors import ApiError, from_state_error
from raftmq.broker.api.stream_codec import (
    EARLIEST,
    LATEST,
    OFFSET,
    FetchRequest,
    parse_commit,
    parse_fetch_query,
    parse_join,
    parse_member,
    parse_partition,
    parse_stream_args,
    parse_stream_publish,
)
from raftmq.broker.api.stream_views import (
    assignment_view,
    fetch_view,
    group_view,
    stream_publish_view,
    stream_view,
)
from raftmq.broker.results import ErrorResult, OkResult
from raftmq.broker.stream_commands import (
    CommitOffsets,
    DeclareStream,
    DeleteStream,
    GroupHeartbeat,
    JoinGroup,
    LeaveGroup,
)
from raftmq.broker.stream_reader import StreamReader
from raftmq.broker.stream_results import FetchResult, GroupAssignment, OffsetOutOfRange
from raftmq.client import errors as codes

__all__ = ["DEFAULT_CATCH_UP_MS", "ROUTES"]

# How long a fetch with min_applied_index and no wait_ms waits for the replica to catch up.
DEFAULT_CATCH_UP_MS = 5_000


# -- streams ------------------------------------------------------------------------------------


async def list_streams(request: web.Request) -> web.Response:
    streams = context_of(request).read(lambda state: state.streams().list_all())
    return respond(request, {"streams": [stream_view(info) for info in streams]})


async def get_stream(request: web.Request) -> web.Response:
    name = check_name("stream", request.match_info["name"])
    info = context_of(request).read(lambda state: state.streams().info(name))
    if info is None:
        raise ApiError(codes.STREAM_NOT_FOUND, f"no stream {name!r}")
    return respond(request, stream_view(info))


async def declare_stream(request: web.Request) -> web.Response:
    ctx = context_of(request)
    name = check_name("stream", request.match_info["name"], declaring=True)
    args = parse_stream_args(await read_document(request, ctx.limits.max_request_bytes))
    result, index = await ctx.propose(DeclareStream(ctx.clock_ms(), name, args), OkResult)
    return respond(request, {"created": result.created, "index": index},
                   status=201 if result.created else 200)


async def delete_stream(request: web.Request) -> web.Response:
    ctx = context_of(request)
    name = check_name("stream", request.match_info["name"], declaring=True)
    _, index = await ctx.propose(DeleteStream(ctx.clock_ms(), name), OkResult)
    return respond(request, {"deleted": True, "index": index})


async def publish(request: web.Request) -> web.Response:
    ctx = context_of(request)
    stream = check_name("stream", request.match_info["name"])
    document = await read_document(request, ctx.limits.max_request_bytes)
    parsed = parse_stream_publish(document, ctx.limits)
    fields = (stream, parsed.messages, parsed.producer_id, parsed.sequence,
              ctx.limits.max_total_body_bytes)
    result, index = await ctx.propose_stream_publish(ctx.clock_ms(), fields)
    return respond(request, stream_publish_view(result, index))


# -- fetch --------------------------------------------------------------------------------------


async def fetch(request: web.Request) -> web.Response:
    """Served by the local replica, no proposal: whatever it applied is committed."""
    ctx = context_of(request)
    stream = check_name("stream", request.match_info["name"])
    partition = parse_partition(request.match_info["partition"])
    parsed = parse_fetch_query(request.query, ctx.limits)
    loop = asyncio.get_running_loop()
    deadline_s = loop.time() + parsed.wait_ms / 1000.0
    if parsed.min_applied_index is not None:
        await _catch_up(ctx, parsed.min_applied_index, parsed.wait_ms)
    # None until the start is a number: `earliest` is looked up again on every read, so that
    # a wait across retention does not turn it into an out-of-range offset.
    offset = parsed.position if parsed.start == OFFSET else None
    while True:
        result, applied_index = _read(ctx, stream, partition, offset, parsed)
        remaining_s = deadline_s - loop.time()
        # No `await` between the read and the wait's registration (see StreamWaits).
        if result.records or remaining_s <= 0 or not await ctx.stream_waits.wait_for_append(
            stream, partition, remaining_s
        ):
            return respond(request, fetch_view(result, applied_index, request_format(request)))
        if parsed.start != EARLIEST:
            offset = result.offset


def _read(
    ctx: ApiContext, stream: str, partition: int, offset: int | None, parsed: FetchRequest
) -> tuple[FetchResult, int]:
    """One fetch from the local replica, with the applied index it reflects."""
    found, applied_index = ctx.read(
        lambda state: _read_locked(ctx, state.streams(), stream, partition, offset, parsed)
    )
    return _fetched(found), applied_index


def _read_locked(
    ctx: ApiContext,
    reader: StreamReader,
    stream: str,
    partition: int,
    offset: int | None,
    parsed: FetchRequest,
) -> tuple[FetchResult | OffsetOutOfRange | ErrorResult, int]:
    # The node raises its applied index only after releasing the lock, so the index read
    # under it is never above what the state holds.
    applied_index = ctx.node.applied_index
    if offset is None:
        found = (
            reader.next_offset(stream, partition) if parsed.start == LATEST
            # The first readable record is stamped at or after 0: that is the first offset.
            else reader.offset_for_timestamp(
                stream, partition, 0 if parsed.start == EARLIEST else parsed.position
            )
        )
        if isinstance(found, ErrorResult):
            return found, applied_index
        offset = found
    result = reader.fetch(stream, partition, offset, parsed.max_messages, parsed.max_bytes)
    return result, applied_index


def _fetched(found: FetchResult | OffsetOutOfRange | ErrorResult) -> FetchResult:
    if isinstance(found, FetchResult):
        return found
    if isinstance(found, ErrorResult):
        raise from_state_error(found.code, found.message)
    raise ApiError(
        codes.OFFSET_OUT_OF_RANGE,
        f"offset {found.offset} of partition {found.partition} is outside the readable range "
        f"{found.first_offset}..{found.next_offset}",
        extra={"first_offset": found.first_offset, "next_offset": found.next_offset},
    )


async def _catch_up(ctx: ApiContext, index: int, wait_ms: int) -> None:
    """Read-your-writes: wait until this replica applied `index`, or answer not_caught_up."""
    node = ctx.node
    if node.applied_index >= index:
        return
    timeout_ms = wait_ms or min(DEFAULT_CATCH_UP_MS, ctx.limits.max_wait_ms)
    with ctx.stream_waits.slot():  # bounded like every other parked request
        reached = await node.wait_applied(index, timeout_ms / 1000.0)
    if not reached:
        raise ApiError(
            codes.NOT_CAUGHT_UP,
            f"this node has applied the log up to index {node.applied_index}, not yet "
            f"{index}; retry, or read from another node",
        )


# -- consumer groups ----------------------------------------------------------------------------


async def list_groups(request: web.Request) -> web.Response:
    stream = check_name("stream", request.match_info["name"])
    groups = context_of(request).read(lambda state: state.streams().groups(stream))
    if groups is None:
        raise ApiError(codes.STREAM_NOT_FOUND, f"no stream {stream!r}")
    return respond(request, {"groups": [group_view(info) for info in groups]})


async def get_group(request: web.Request) -> web.Response:
    stream = check_name("stream", request.match_info["name"])
    group = check_name("group", request.match_info["group"])
    found = context_of(request).read(
        lambda state: (state.streams().has_stream(stream), state.streams().group(stream, group))
    )
    has_stream, info = found
    if not has_stream:
        raise ApiError(codes.STREAM_NOT_FOUND, f"no stream {stream!r}")
    if info is None:
        raise ApiError(codes.GROUP_NOT_FOUND, f"stream {stream!r} has no group {group!r}")
    return respond(request, group_view(info))


async def group_action(request: web.Request) -> web.Response:
    ctx = context_of(request)
    stream = check_name("stream", request.match_info["name"])
    group = check_name("group", request.match_info["group"])
    action = request.match_info["action"]
    document = await read_document(request, ctx.limits.max_request_bytes)
    now_ms = ctx.clock_ms()
    if action == "join":
        member, session_timeout_ms = parse_join(document)
        join = JoinGroup(now_ms, stream, group, member, session_timeout_ms)
        assignment, index = await ctx.propose(join, GroupAssignment)
        return respond(request, assignment_view(assignment, index))
    if action == "heartbeat":
        heartbeat = GroupHeartbeat(now_ms, stream, group, parse_member(document))
        assignment, index = await ctx.propose(heartbeat, GroupAssignment)
        return respond(request, assignment_view(assignment, index))
    if action == "leave":
        await ctx.propose(LeaveGroup(now_ms, stream, group, parse_member(document)), OkResult)
        return respond(request, {})
    parsed = parse_commit(document)
    commit = CommitOffsets(now_ms, stream, group, parsed.member, parsed.generation, parsed.offsets)
    _, index = await ctx.propose(commit, OkResult)
    return respond(request, {"index": index})


ROUTES = (
    web.get("/v1/streams", list_streams),
    web.get("/v1/streams/{name}", get_stream),
    web.put("/v1/streams/{name}", declare_stream),
    web.delete("/v1/streams/{name}", delete_stream),
    web.post("/v1/streams/{name}/publish", publish),
    web.get("/v1/streams/{name}/partitions/{partition}/messages", fetch),
    web.get("/v1/streams/{name}/groups", list_groups),
    web.get("/v1/streams/{name}/groups/{group}", get_group),
    web.post("/v1/streams/{name}/groups/{group}/{action:join|heartbeat|leave|commit}",
             group_action),
)
