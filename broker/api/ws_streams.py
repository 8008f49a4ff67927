"""Stream records pushed over `/v1/ws`, with credit-based flow control (docs/websocket.md).

A subscription is a task owned by its connection. It replies to its request from that task,
then reads the local replica (no proposal) and pushes frames of records; each record takes one
credit, and with no credit left nothing is read or sent until the client grants more. Every
push awaits its socket write (`_Connection.push`), so a client that stops reading stops its
subscriptions rather than filling a buffer. Bounds: `MAX_SUBSCRIPTIONS` per connection,
`MAX_CREDIT` granted and unused per subscription, `MAX_PUSH_MESSAGES` and the frame body budget
per frame, and one stream wait per waiting subscription (`StreamWaits`, bounded per node).

Ops here: stream_subscribe (one partition from an offset or a timestamp), credit, unsubscribe.
Consumer-group subscriptions and commits live in ws_stream_group.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType

from raftmq.broker.api.codec import MAX_NAME_FIELD_CHARS, Fields, check_name
from raftmq.broker.api.errors import ApiError, bad_request, from_state_error
from raftmq.broker.api.stream_views import record_views
from raftmq.broker.results import OFFSET_OUT_OF_RANGE, ErrorResult
from raftmq.broker.state import BrokerState
from raftmq.broker.stream_results import FetchResult, OffsetOutOfRange
from raftmq.broker.stream_validation import MAX_PARTITIONS
from raftmq.broker.value_checks import MAX_COUNT
from raftmq.client import errors as codes
from raftmq.client.wire import WireFormat

if TYPE_CHECKING:
    from raftmq.broker.api.ws import _Connection, _Request

__all__ = [
    "MAX_CREDIT",
    "MAX_PUSH_BODY_BYTES",
    "MAX_PUSH_MESSAGES",
    "MAX_SUBSCRIPTIONS",
    "STREAM_OPS",
    "Credit",
    "StreamSubscription",
    "StreamSubscriptions",
    "Subscription",
    "credit_field",
    "out_of_range",
    "subscription_of",
]

MAX_SUBSCRIPTIONS = 64
MAX_CREDIT = 100_000
MAX_PUSH_MESSAGES = 1_000
# Body bytes per push frame (also capped by ApiLimits.max_request_bytes); one larger record
# still goes alone. Well under the 4 MiB aiohttp clients accept by default, even as JSON.
MAX_PUSH_BODY_BYTES = 1_048_576
# A waiting subscription looks at the state again this often, so that a deleted stream ends it.
IDLE_RECHECK_S = 10.0

_FORMAT_BY_OPCODE = {WSMsgType.BINARY: WireFormat.MSGPACK, WSMsgType.TEXT: WireFormat.JSON}

log = logging.getLogger(__name__)


def out_of_range(found: OffsetOutOfRange) -> ApiError:
    return ApiError(
        OFFSET_OUT_OF_RANGE,
        f"offset {found.offset} of partition {found.partition} is not readable; readable "
        f"offsets are {found.first_offset}..{found.next_offset}",
        extra={"partition": found.partition, "offset": found.offset,
               "first_offset": found.first_offset, "next_offset": found.next_offset},
    )


class Credit:
    """Messages the client accepts before it grants more."""

    def __init__(self, initial: int) -> None:
        self.available = initial
        self._granted = asyncio.Event()

    def grant(self, messages: int) -> None:
        if self.available + messages > MAX_CREDIT:
            raise bad_request(
                f"credit would reach {self.available + messages}; a subscription holds at most "
                f"{MAX_CREDIT} unused"
            )
        self.available += messages
        if messages:
            self._granted.set()

    def take(self, messages: int) -> None:
        self.available -= messages

    async def wait(self, timeout_s: float | None) -> None:
        """Until some credit is available (or the timeout passes)."""
        self._granted.clear()
        if self.available:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._granted.wait(), timeout_s)


class Subscription:
    """What every subscription shares: its id, request, credit, task and pushes."""

    def __init__(self, connection: _Connection, request: _Request, credit: int) -> None:
        self.connection = connection
        self.ctx = connection.ctx
        self.request_id = request.request_id
        self.opcode = request.opcode  # pushes go in the format of the subscribe request
        self.wire_format = _FORMAT_BY_OPCODE[request.opcode]
        self.sid = 0  # set by StreamSubscriptions.start
        self.credit = Credit(credit)
        self.replied = False
        self.pushed_messages = 0
        # What the task waits for: "credit", "data", or None while busy (tests look at it).
        self.waiting: str | None = None
        self.frame_body_bytes = min(MAX_PUSH_BODY_BYTES, self.ctx.limits.max_request_bytes)

    async def run(self) -> None:
        raise NotImplementedError

    def ended(self) -> None:
        """Called once the task is over, however it ended (a group member leaves here)."""

    async def reply(self, ok: dict[str, object]) -> bool:
        self.replied = True
        return await self.connection.send_reply(self.request_id, self.opcode, ok)

    def reply_error(self, error: ApiError) -> None:
        self.replied = True
        self.connection.reply_error(self.request_id, self.opcode, error)

    async def push_records(self, result: FetchResult) -> bool:
        records = result.records
        count = len(records)
        self.credit.take(count)
        self.pushed_messages += count
        frame: dict[str, object] = {
            "subscription": self.sid,
            "partition": result.partition,
            "messages": record_views(result.offset, records, self.wire_format),
            "next_offset": result.offset + count,
        }
        return await self.connection.push(frame, self.opcode)

    async def end_with(self, error: ApiError) -> None:
        """Reply with the error if the subscription has not replied yet, else push it in an
        error frame, after which it pushes nothing more."""
        if not self.replied:
            self.reply_error(error)
            return
        document = {**error.extra, "code": error.code, "message": error.message,
                    "definite": error.definite}
        await self.connection.push({"subscription": self.sid, "error": document}, self.opcode)


class StreamSubscription(Subscription):
    """One partition of a stream, from a start offset on."""

    def __init__(
        self, connection: _Connection, request: _Request, credit: int,
        stream: str, partition: int, offset: int,
    ) -> None:
        super().__init__(connection, request, credit)
        self.stream = stream
        self.partition = partition
        self.offset = offset

    async def run(self) -> None:
        if not await self.reply({"subscription": self.sid, "offset": self.offset}):
            return
        stream, partition, waits = self.stream, self.partition, self.ctx.stream_waits
        while not waits.closed:
            if not self.credit.available:
                self.waiting = "credit"
                await self.credit.wait(None)
                self.waiting = None
                continue
            result = self._fetch()
            if result.records:
                if not await self.push_records(result):
                    return
                self.offset = result.offset + len(result.records)
                continue
            self.waiting = "data"
            # Right after the read, with no await in between: no append can be missed.
            await waits.wait_for_append(stream, partition, IDLE_RECHECK_S)
            self.waiting = None

    def _fetch(self) -> FetchResult:
        stream, partition, offset = self.stream, self.partition, self.offset
        count = min(self.credit.available, MAX_PUSH_MESSAGES)
        body_bytes = self.frame_body_bytes
        result = self.ctx.read(
            lambda s: s.streams().fetch(stream, partition, offset, count, body_bytes)
        )
        if isinstance(result, OffsetOutOfRange):
            raise out_of_range(result)
        if isinstance(result, ErrorResult):
            raise from_state_error(result.code, result.message)
        return result


class StreamSubscriptions:
    """The subscriptions of one connection, each with its task; all end with the connection."""

    def __init__(self) -> None:
        self._by_id: dict[int, Subscription] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._ids = itertools.count(1)
        # Work that outlives a subscription (a group member's leave): strong references.
        self.background: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, sid: int) -> Subscription | None:
        return self._by_id.get(sid)

    def start(self, subscription: Subscription) -> None:
        if len(self._by_id) >= MAX_SUBSCRIPTIONS:
            raise ApiError(
                codes.RESOURCE_EXHAUSTED,
                f"a connection holds at most {MAX_SUBSCRIPTIONS} subscriptions",
            )
        sid = next(self._ids)
        subscription.sid = sid
        self._by_id[sid] = subscription
        task = asyncio.get_running_loop().create_task(
            _serve(subscription), name=f"raftmq-ws-subscription-{sid}"
        )
        self._tasks[sid] = task
        task.add_done_callback(lambda done: self._on_done(subscription, done))

    def cancel(self, sid: int) -> bool:
        task = self._tasks.get(sid)
        if task is None:
            return False
        task.cancel()
        return True

    def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()

    def run_in_background(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = asyncio.get_running_loop().create_task(work())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def _on_done(self, subscription: Subscription, task: asyncio.Task[None]) -> None:
        sid = subscription.sid
        self._by_id.pop(sid, None)
        self._tasks.pop(sid, None)
        if not subscription.replied:
            # Cancelled before it could answer (mostly: the connection closed): free the slot.
            subscription.reply_error(
                bad_request("the subscription was cancelled before it started")
            )
        if not task.cancelled() and task.exception() is not None:
            log.error("stream subscription failed to end cleanly", exc_info=task.exception())
        subscription.ended()


async def _serve(subscription: Subscription) -> None:
    """Run a subscription; whatever ends it is answered (`end_with`)."""
    try:
        await subscription.run()
    except ApiError as error:  # a failed join, a deleted stream, too_many_waiters, ...
        await subscription.end_with(error)
    except Exception:
        log.exception("stream subscription failed")
        await subscription.end_with(
            ApiError(codes.INTERNAL_ERROR, "internal error; see the node's log", definite=False)
        )


def subscription_of(connection: _Connection, fields: Fields) -> Subscription:
    sid = fields.optional_int("subscription", 0, MAX_COUNT)
    if sid is None:
        raise bad_request("'subscription' is required")
    found = connection.subscriptions.get(sid)
    if found is None:
        raise ApiError(codes.NOT_FOUND, f"no subscription {sid} on this connection (it may "
                       "have ended)")
    return found


def credit_field(fields: Fields) -> int:
    return fields.int_("credit", 0, 0, MAX_CREDIT)


# -- ops ------------------------------------------------------------------------------------------

_SUBSCRIBE_FIELDS = frozenset({"stream", "partition", "offset", "timestamp_ms", "credit"})


def _stream_subscribe(connection: _Connection, request: _Request) -> None:
    fields = Fields(request.document, _SUBSCRIBE_FIELDS)
    stream = check_name("stream", fields.str_("stream", MAX_NAME_FIELD_CHARS))
    partition = fields.int_("partition", 0, 0, MAX_PARTITIONS - 1)
    credit = credit_field(fields)
    start = _start_of(fields)
    offset = connection.ctx.read(lambda s: _start_offset(s, stream, partition, start))
    if isinstance(offset, OffsetOutOfRange):
        raise out_of_range(offset)
    connection.subscriptions.start(
        StreamSubscription(connection, request, credit, stream, partition, offset)
    )


def _start_of(fields: Fields) -> int | str | tuple[str, int]:
    """An offset, "earliest", "latest", or ("timestamp_ms", T)."""
    timestamp_ms = fields.optional_int("timestamp_ms", 0, MAX_COUNT)
    offset = fields.raw("offset")
    if timestamp_ms is not None:
        if offset is not None:
            raise bad_request("give 'offset' or 'timestamp_ms', not both")
        return ("timestamp_ms", timestamp_ms)
    if offset is None or offset in ("earliest", "latest"):
        return "latest" if offset is None else str(offset)
    if type(offset) is not int or not 0 <= offset <= MAX_COUNT:
        raise bad_request(f"'offset' must be \"earliest\", \"latest\" or an integer in 0..{MAX_COUNT}")
    return offset


def _start_offset(
    state: BrokerState, stream: str, partition: int, start: int | str | tuple[str, int]
) -> int | OffsetOutOfRange:
    """Under the state lock: where a subscription starts. Raises ApiError."""
    reader = state.streams()
    end = reader.next_offset(stream, partition)
    if isinstance(end, ErrorResult):
        raise from_state_error(end.code, end.message)
    if isinstance(start, tuple):
        found = reader.offset_for_timestamp(stream, partition, start[1])
        if isinstance(found, ErrorResult):
            raise from_state_error(found.code, found.message)
        return found
    probe = reader.fetch(stream, partition, end, 0, 0)
    assert isinstance(probe, FetchResult), "reading at the next offset is always in range"
    if start == "latest":
        return end
    if start == "earliest":
        return probe.first_offset
    assert isinstance(start, int)
    if not probe.first_offset <= start <= end:
        return OffsetOutOfRange(partition, start, probe.first_offset, end)
    return start


def _credit(connection: _Connection, request: _Request) -> None:
    fields = Fields(request.document, frozenset({"subscription", "messages"}))
    subscription = subscription_of(connection, fields)
    messages = fields.optional_int("messages", 0, MAX_CREDIT)
    if messages is None:
        raise bad_request("'messages' is required")
    subscription.credit.grant(messages)
    connection.reply(request.request_id, request.opcode, {"credit": subscription.credit.available})


def _unsubscribe(connection: _Connection, request: _Request) -> None:
    fields = Fields(request.document, frozenset({"subscription"}))
    subscription = subscription_of(connection, fields)
    # Cancelled now: the task pushes nothing more, so nothing follows this reply.
    connection.subscriptions.cancel(subscription.sid)
    connection.reply(request.request_id, request.opcode, {})


STREAM_OPS: dict[str, Callable[[_Connection, _Request], None]] = {
    "stream_subscribe": _stream_subscribe,
    "credit": _credit,
    "unsubscribe": _unsubscribe,
}
