"""Consumer-group members over `/v1/ws`: join, heartbeats, rebalances, commits, leave.

`group_subscribe` proposes JoinGroup and replies with the assignment; the subscription then
pushes from its partitions (round robin, one frame at a time, sharing one credit), starting at
each partition's committed offset, or at `reset` when there is none or it is no longer
readable. While it lives, a second task proposes a heartbeat every third of the session
timeout (and joins again if the session ran out anyway). The pushing task reads its group from
the local replica every `GROUP_CHECK_S`; on a new generation it sends the assignment, keeps
its place in partitions it still owns and starts new ones from their committed offsets.
`commit` proposes CommitOffsets with the subscription's generation. When the subscription
ends (unsubscribe, connection closed, error), the member leaves, best effort.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from raftmq.broker.api.codec import MAX_NAME_FIELD_CHARS, Fields, check_name
from raftmq.broker.api.errors import ApiError, bad_request, from_state_error
from raftmq.broker.api.stream_views import assignment_view
from raftmq.broker.api.ws_streams import (
    MAX_PUSH_MESSAGES,
    Subscription,
    credit_field,
    subscription_of,
)
from raftmq.broker.results import STREAM_NOT_FOUND, UNKNOWN_MEMBER, ErrorResult, OkResult
from raftmq.broker.state import BrokerState
from raftmq.broker.stream_commands import CommitOffsets, GroupHeartbeat, JoinGroup, LeaveGroup
from raftmq.broker.stream_reader import StreamReader
from raftmq.broker.stream_results import FetchResult, GroupAssignment, GroupInfo, OffsetOutOfRange
from raftmq.broker.stream_validation import (
    MAX_PARTITIONS,
    MAX_SESSION_TIMEOUT_MS,
    MIN_SESSION_TIMEOUT_MS,
)
from raftmq.broker.value_checks import MAX_COUNT
from raftmq.client import errors as codes

if TYPE_CHECKING:
    from raftmq.broker.api.ws import _Connection, _Request

__all__ = ["DEFAULT_SESSION_TIMEOUT_MS", "GROUP_CHECK_S", "GROUP_OPS", "GroupSubscription"]

DEFAULT_SESSION_TIMEOUT_MS = 10_000
# How often a member looks for a new generation of its group (a local read, no proposal).
GROUP_CHECK_S = 0.25
RESETS = ("earliest", "latest")

log = logging.getLogger(__name__)


class GroupSubscription(Subscription):
    def __init__(
        self, connection: _Connection, request: _Request, credit: int, *,
        stream: str, group: str, member: str, session_timeout_ms: int, reset: str,
    ) -> None:
        super().__init__(connection, request, credit)
        self.stream = stream
        self.group = group
        self.member = member
        self.session_timeout_ms = session_timeout_ms
        self.reset = reset
        self.generation: int | None = None  # of the assignment pushed under
        self.positions: dict[int, int] = {}  # assigned partition -> next offset to push
        self._maybe_joined = False
        self._heartbeats: asyncio.Task[None] | None = None
        self._rotation = 0

    async def run(self) -> None:
        assignment, index = await self._join()
        self._adopt(assignment)
        reply = {"subscription": self.sid, "assignment": assignment_view(assignment, index)}
        if not await self.reply(reply):
            return
        self._heartbeats = asyncio.create_task(self._heartbeat(), name=f"raftmq-ws-heartbeat-{self.sid}")
        try:
            await self._pump()
        finally:
            self._heartbeats.cancel()

    def ended(self) -> None:
        if self._maybe_joined:
            self.connection.subscriptions.run_in_background(self._leave)

    # -- membership ---------------------------------------------------------------------------

    async def _join(self) -> tuple[GroupAssignment, int]:
        self._maybe_joined = True
        command = JoinGroup(self.ctx.clock_ms(), self.stream, self.group, self.member,
                            self.session_timeout_ms)
        try:
            return await self.ctx.propose(command, GroupAssignment)
        except ApiError as error:
            # A definite failure joined nobody: there is nothing to leave.
            self._maybe_joined = self._maybe_joined and not error.definite
            raise

    async def _heartbeat(self) -> None:
        interval_s = self.session_timeout_ms / 3000
        while True:
            await asyncio.sleep(interval_s)
            command = GroupHeartbeat(self.ctx.clock_ms(), self.stream, self.group, self.member)
            try:
                await self.ctx.propose(command, GroupAssignment)
            except ApiError as error:
                if error.code == STREAM_NOT_FOUND:
                    return  # the pushing task ends the subscription
                log.info("heartbeat of member %r of group %r failed: %s", self.member,
                         self.group, error)
                if error.code == UNKNOWN_MEMBER:
                    # The session ran out (a stall longer than the timeout): join again.
                    await self._join_quietly()

    async def _join_quietly(self) -> None:
        try:
            await self._join()
        except ApiError as error:
            log.info("member %r could not rejoin group %r: %s", self.member, self.group, error)

    async def _leave(self) -> None:
        command = LeaveGroup(self.ctx.clock_ms(), self.stream, self.group, self.member)
        try:
            await self.ctx.propose(command, OkResult)
        except ApiError as error:
            log.info("member %r did not leave group %r: %s", self.member, self.group, error)

    # -- assignments --------------------------------------------------------------------------

    async def _follow_group(self) -> None:
        """Adopt and announce a new generation of the group, if there is one."""
        heartbeats = self._heartbeats
        if heartbeats is not None and heartbeats.done() and not heartbeats.cancelled():
            error = heartbeats.exception()
            if error is not None:
                raise error
        stream, group, member, node = self.stream, self.group, self.member, self.ctx.node

        def look(state: BrokerState) -> tuple[GroupInfo | None, int] | None:
            reader = state.streams()
            if not reader.has_stream(stream):
                return None
            return reader.group(stream, group), node.applied_index

        found = self.ctx.read(look)
        if found is None:
            raise from_state_error(STREAM_NOT_FOUND, f"stream {stream!r} was deleted")
        info, index = found
        mine = _assignment_in(info, member)
        if mine is None:
            # Not a member (its session ran out): push nothing until the heartbeats rejoin.
            self.positions = {}
            self.generation = None
            return
        if mine.generation == self.generation:
            return
        self._adopt(mine)
        frame = {"subscription": self.sid, "assignment": assignment_view(mine, index)}
        await self.connection.push(frame, self.opcode)

    def _adopt(self, assignment: GroupAssignment) -> None:
        committed = dict(assignment.committed)
        kept = self.positions
        positions = {p: kept.get(p, committed.get(p)) for p in assignment.partitions}
        stream, reset = self.stream, self.reset

        def resolve(state: BrokerState) -> dict[int, int]:
            reader = state.streams()
            return {p: _reset_offset(reader, stream, p, reset) if offset is None else offset
                    for p, offset in positions.items()}

        self.positions = self.ctx.read(resolve)
        self.generation = assignment.generation

    # -- pushing ------------------------------------------------------------------------------

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        waits = self.ctx.stream_waits
        next_check_s = loop.time() + GROUP_CHECK_S
        while not waits.closed:
            if loop.time() >= next_check_s:
                await self._follow_group()
                next_check_s = loop.time() + GROUP_CHECK_S
            if not self.credit.available:
                self.waiting = "credit"
                await self.credit.wait(GROUP_CHECK_S)
                self.waiting = None
                continue
            result = self._fetch_next()
            if result is not None:
                if not await self.push_records(result):
                    return
                self.positions[result.partition] = result.offset + len(result.records)
                continue
            self.waiting = "data"
            keys = [(self.stream, p) for p in self.positions]
            # Right after the reads, with no await in between: no append can be missed.
            if keys:
                await waits.wait_for_any(keys, GROUP_CHECK_S)
            else:
                await asyncio.sleep(GROUP_CHECK_S)
            self.waiting = None

    def _fetch_next(self) -> FetchResult | None:
        """Records from the first partition that has any, in turns; None if none has."""
        partitions = list(self.positions)
        if not partitions:
            return None
        start = self._rotation % len(partitions)
        self._rotation += 1
        order = partitions[start:] + partitions[:start]
        count = min(self.credit.available, MAX_PUSH_MESSAGES)
        body_bytes, stream, positions, reset = self.frame_body_bytes, self.stream, self.positions, self.reset

        def read(state: BrokerState) -> FetchResult | None:
            reader = state.streams()
            for partition in order:
                result = reader.fetch(stream, partition, positions[partition], count, body_bytes)
                if isinstance(result, OffsetOutOfRange):
                    # Behind retention (or a commit that fell out of it): as Kafka's
                    # auto.offset.reset, go on from `reset`.
                    log.info("group %r partition %d: offset %d is not readable; resetting to "
                             "the %s offset", self.group, partition, result.offset, reset)
                    positions[partition] = _reset_offset(reader, stream, partition, reset)
                    result = reader.fetch(stream, partition, positions[partition], count,
                                          body_bytes)
                if isinstance(result, ErrorResult):
                    raise from_state_error(result.code, result.message)
                if isinstance(result, FetchResult) and result.records:
                    return result
            return None

        return self.ctx.read(read)


def _assignment_in(info: GroupInfo | None, member: str) -> GroupAssignment | None:
    """A member's assignment as its group's view shows it (None: not a member)."""
    if info is None:
        return None
    for found in info.members:
        if found.member == member:
            committed = dict(info.committed)
            return GroupAssignment(
                generation=info.generation,
                member=member,
                partitions=found.partitions,
                members=tuple(m.member for m in info.members),
                committed=tuple((p, committed[p]) for p in found.partitions if p in committed),
                session_expires_ms=found.session_expires_ms,
            )
    return None


def _reset_offset(reader: StreamReader, stream: str, partition: int, reset: str) -> int:
    end = reader.next_offset(stream, partition)
    if isinstance(end, ErrorResult):
        raise from_state_error(end.code, end.message)
    if reset == "latest":
        return end
    probe = reader.fetch(stream, partition, end, 0, 0)
    assert isinstance(probe, FetchResult), "reading at the next offset is always in range"
    return probe.first_offset


# -- ops ------------------------------------------------------------------------------------------

_SUBSCRIBE_FIELDS = frozenset({"stream", "group", "member", "session_timeout_ms", "reset", "credit"})


def _group_subscribe(connection: _Connection, request: _Request) -> None:
    fields = Fields(request.document, _SUBSCRIBE_FIELDS)
    stream = check_name("stream", fields.str_("stream", MAX_NAME_FIELD_CHARS))
    group = check_name("group", fields.str_("group", MAX_NAME_FIELD_CHARS))
    member = check_name("consumer", fields.str_("member", MAX_NAME_FIELD_CHARS))
    session_timeout_ms = fields.int_("session_timeout_ms", DEFAULT_SESSION_TIMEOUT_MS,
                                     MIN_SESSION_TIMEOUT_MS, MAX_SESSION_TIMEOUT_MS)
    reset = fields.str_("reset", 16, "latest")
    if reset not in RESETS:
        raise bad_request("'reset' must be \"earliest\" or \"latest\"")
    subscription = GroupSubscription(
        connection, request, credit_field(fields), stream=stream, group=group, member=member,
        session_timeout_ms=session_timeout_ms, reset=reset,
    )
    connection.subscriptions.start(subscription)


def _commit(connection: _Connection, request: _Request) -> None:
    fields = Fields(request.document, frozenset({"subscription", "offsets", "generation"}))
    subscription = subscription_of(connection, fields)
    if not isinstance(subscription, GroupSubscription):
        raise bad_request(f"subscription {subscription.sid} is not a group member's; only "
                          "group_subscribe subscriptions commit")
    offsets = _offsets(fields.raw("offsets"))
    generation = fields.optional_int("generation", 0, MAX_COUNT)
    if generation is None:
        generation = subscription.generation
    if generation is None:
        raise ApiError(UNKNOWN_MEMBER, f"{subscription.member!r} is not a member of group "
                       f"{subscription.group!r} at the moment (it is joining again)")
    ctx, request_id, opcode = connection.ctx, request.request_id, request.opcode
    command = CommitOffsets(ctx.clock_ms(), subscription.stream, subscription.group,
                            subscription.member, generation, offsets)

    def on_done(task: asyncio.Task[tuple[OkResult, int]]) -> None:
        error = connection.finish(task)
        if error is None:
            connection.reply(request_id, opcode, {"index": task.result()[1]})
        elif isinstance(error, ApiError):
            connection.reply_error(request_id, opcode, error)
        else:
            if not isinstance(error, asyncio.CancelledError):
                log.error("commit over WebSocket failed", exc_info=error)
            connection.reply_error(request_id, opcode, ApiError(
                codes.INTERNAL_ERROR, "internal error; see the node's log", definite=False))

    connection.start(ctx.propose(command, OkResult), on_done)


def _offsets(value: object) -> tuple[tuple[int, int], ...]:
    """`{"<partition>": next_offset}` (msgpack may also use integer keys), sorted."""
    if not isinstance(value, dict) or not value:
        raise bad_request("'offsets' must be a non-empty map of partition to next offset")
    if len(value) > MAX_PARTITIONS:
        raise bad_request(f"'offsets' has more than {MAX_PARTITIONS} partitions")
    offsets: dict[int, int] = {}
    for key, offset in value.items():
        partition = _partition_key(key)
        if partition in offsets:
            raise bad_request(f"partition {partition} appears twice in 'offsets'")
        if type(offset) is not int or not 0 <= offset <= MAX_COUNT:
            raise bad_request(f"offset of partition {partition} must be an integer in 0..{MAX_COUNT}")
        offsets[partition] = offset
    return tuple(sorted(offsets.items()))


def _partition_key(key: object) -> int:
    if type(key) is str and key.isascii() and key.isdigit() and len(key) <= 4:
        key = int(key)
    if type(key) is not int or not 0 <= key < MAX_PARTITIONS:
        raise bad_request(f"'offsets' keys must be partition numbers in 0..{MAX_PARTITIONS - 1}")
    return key


GROUP_OPS: dict[str, Callable[[_Connection, _Request], None]] = {
    "group_subscribe": _group_subscribe,
    "commit": _commit,
}
