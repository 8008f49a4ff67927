"""`Producer`: batching, lz4-compressed, idempotent publishing with per-message futures.

Messages queue up in a bounded buffer (`send` waits when it is full: back-pressure reaches the
caller) and leave in batches: a batch goes when it is full (`max_batch_messages`,
`max_batch_bytes`) or `linger_ms` after its first message, while at most
`max_in_flight_batches` batches are unanswered. Each batch carries the producer's id and the
next sequence number, and keeps them for every retry, so the broker stores a batch once however
often a failover makes the client send it (the broker remembers the last 64 sequences of each
producer). With one batch in flight (the default) batches apply in the order they were sent,
so order holds through failovers; more in flight trades that for throughput.

Every message's future ends in exactly one of: its outcome (`PublishedMessage` or
`AppendedRecord`), a definite `RaftMQError` (certainly not stored), or an `IndefiniteError`
(unknown: it may be stored; never reported as either of the others).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import lz4.frame
import msgpack

from raftmq.client import errors
from raftmq.client.client import Client
from raftmq.client.stream_wire import OutgoingRecord, StreamPublishReceipt
from raftmq.client.wire import OutgoingMessage, PublishReceipt, WireFormat, WireValueError

__all__ = ["AppendedRecord", "Producer", "ProducerSettings", "PublishedMessage"]

_TOO_LARGE = frozenset({errors.BATCH_TOO_LARGE, errors.REQUEST_TOO_LARGE})
ACCEPTED = "accepted"
UNROUTABLE = "unroutable"
REJECTED = "rejected"


@dataclass(frozen=True)
class ProducerSettings:
    linger_ms: float = 5.0
    max_batch_messages: int = 1000  # the broker's default batch limit
    max_batch_bytes: int = 1_048_576
    max_in_flight_batches: int = 1
    max_buffered_messages: int = 10_000
    # Batches whose msgpack form is at least this big travel lz4-compressed.
    compress_min_bytes: int = 4096
    idempotent: bool = True
    # Per batch, across every retry; past it the batch's outcome is reported, unknown if unknown.
    deadline_s: float = 30.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_in_flight_batches <= 32:
            raise ValueError("max_in_flight_batches must be in 1..32 (the broker remembers 64)")
        if self.max_batch_messages < 1 or self.max_batch_bytes < 1 or self.linger_ms < 0:
            raise ValueError("batch limits must be positive and linger_ms non-negative")
        if self.max_buffered_messages < self.max_batch_messages:
            raise ValueError("max_buffered_messages must hold at least one full batch")


@dataclass(frozen=True)
class PublishedMessage:
    """A message published to an exchange: accepted (stored in at least one queue or stream),
    unroutable (no binding matched) or rejected (every target refused it, e.g. a full queue)."""

    status: str
    duplicate: bool  # answered from the broker's memory of this batch (a retry)
    raft_index: int


@dataclass(frozen=True)
class AppendedRecord:
    partition: int
    offset: int
    duplicate: bool
    raft_index: int


Item = OutgoingMessage | OutgoingRecord
Outcome = PublishedMessage | AppendedRecord


@dataclass(slots=True)
class _Pending:
    item: Item
    size: int
    future: asyncio.Future[Outcome]


class Producer:
    """Publishes to one exchange (`OutgoingMessage`) or one stream (`OutgoingRecord`)."""

    def __init__(
        self, client: Client, *, exchange: str | None = None, stream: str | None = None,
        settings: ProducerSettings | None = None, producer_id: str | None = None,
    ) -> None:
        if (exchange is None) == (stream is None):
            raise ValueError("a producer publishes to an exchange or to a stream: give one")
        self._client = client
        self._exchange = exchange
        self._stream = stream
        self.settings = settings or ProducerSettings()
        self.producer_id = producer_id or f"producer-{secrets.token_hex(8)}"
        self._next_sequence = 1
        # Lowered when the broker refuses a batch as too large (its limit is configurable).
        self._max_batch_messages = self.settings.max_batch_messages
        self._buffer: deque[_Pending] = deque()
        self._buffered_bytes = 0
        self._unsettled = 0  # buffered plus in flight: what the bound counts
        self._space = asyncio.Condition()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self.settings.max_in_flight_batches)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._item_type: type[Item] = OutgoingMessage if exchange is not None else OutgoingRecord
        self.batches_sent = 0
        self.compressed_batches = 0
        self._sender = asyncio.create_task(self._send_loop(), name=f"raftmq-{self.producer_id}")

    # ------------------------------------------------------------ public API

    async def send(self, item: Item) -> asyncio.Future[Outcome]:
        """Queue one message; waits while the buffer is full. The returned future settles with
        the message's outcome or error (see the module docstring)."""
        self._check_item(item)
        if self._closed or self._unsettled >= self.settings.max_buffered_messages:
            await self._wait_for_space()
        # No await from the check above to here: on one event loop the space is still ours.
        return self._enqueue(item)

    async def send_many(self, items: Sequence[Item]) -> list[asyncio.Future[Outcome]]:
        """`send` for several messages, in order; cheaper per message than separate sends."""
        futures: list[asyncio.Future[Outcome]] = []
        limit = self.settings.max_buffered_messages
        item_type, enqueue = self._item_type, self._enqueue
        for item in items:
            if type(item) is not item_type:
                self._check_item(item)
            if self._closed or self._unsettled >= limit:
                await self._wait_for_space()
            futures.append(enqueue(item))
        return futures

    async def _wait_for_space(self) -> None:
        async with self._space:
            await self._space.wait_for(
                lambda: self._closed or self._unsettled < self.settings.max_buffered_messages)
        if self._closed:
            raise RuntimeError("the producer is closed")

    def _enqueue(self, item: Item) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = self._loop.create_future()
        size = len(item.body) + 64  # the body dominates; the rest is a rough allowance
        self._buffer.append(_Pending(item, size, future))
        self._buffered_bytes += size
        self._unsettled += 1
        self._wake.set()
        return future

    @property
    def unsettled(self) -> int:
        """Messages sent and not yet settled (buffered or in flight)."""
        return self._unsettled

    async def publish(self, item: Item) -> Outcome:
        """`send` and wait for the outcome."""
        return await asyncio.shield(await self.send(item))

    async def flush(self) -> None:
        """Wait until everything sent so far has its outcome."""
        self._wake.set()
        async with self._space:
            await self._space.wait_for(lambda: self._unsettled == 0 or self._sender.done())

    async def close(self) -> None:
        """Flush, then stop. Messages already sent still get their outcomes."""
        if not self._closed:
            await self.flush()
            self._closed = True
            self._wake.set()
            async with self._space:
                self._space.notify_all()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sender
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ batching

    def _check_item(self, item: Item) -> None:
        if type(item) is not self._item_type and not isinstance(item, self._item_type):
            raise TypeError(f"this producer takes {self._item_type.__name__}, "
                            f"not {type(item).__name__}")

    async def _send_loop(self) -> None:
        try:
            while not (self._closed and not self._buffer):
                await self._wake.wait()
                self._wake.clear()
                if not self._buffer:
                    continue
                await self._linger()
                await self._slots.acquire()
                batch = self._take_batch()
                sequence = self._take_sequence()
                task = asyncio.create_task(self._send_batch(batch, sequence))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
                if self._buffer:
                    self._wake.set()
        except BaseException as exc:
            # A bug here must not leave callers waiting forever.
            self._fail_buffer(exc if isinstance(exc, Exception) else RuntimeError("stopped"))
            raise

    async def _linger(self) -> None:
        """Let a batch fill up for linger_ms after its first message, unless it is full."""
        settings = self.settings
        if self._closed or self._batch_full():
            return
        deadline = asyncio.get_running_loop().time() + settings.linger_ms / 1000.0
        while not self._closed and not self._batch_full():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)
            self._wake.clear()

    def _batch_full(self) -> bool:
        settings = self.settings
        return (len(self._buffer) >= self._max_batch_messages
                or self._buffered_bytes >= settings.max_batch_bytes)

    def _take_batch(self) -> list[_Pending]:
        settings = self.settings
        batch: list[_Pending] = []
        size = 0
        while self._buffer and len(batch) < self._max_batch_messages:
            pending = self._buffer[0]
            if batch and size + pending.size > settings.max_batch_bytes:
                break
            self._buffer.popleft()
            self._buffered_bytes -= pending.size
            size += pending.size
            batch.append(pending)
        return batch

    # ------------------------------------------------------------ one batch

    def _take_sequence(self) -> int:
        sequence = self._next_sequence
        self._next_sequence += 1
        return sequence

    async def _send_batch(self, batch: list[_Pending], sequence: int) -> None:
        try:
            parts = [(batch, sequence)]
            while parts:
                part, part_sequence = parts.pop()
                parts += reversed(await self._send_part(part, part_sequence))
        finally:
            self._slots.release()
            async with self._space:
                self._unsettled -= len(batch)
                self._space.notify_all()

    async def _send_part(self, batch: list[_Pending], sequence: int
                         ) -> list[tuple[list[_Pending], int]]:
        """Sends one batch and settles its futures; returns the halves to send instead when
        the broker refused it as too large (definite: nothing stored, so the first half may
        reuse its sequence), and remembers the smaller size for later batches."""
        try:
            outcomes = await self._publish(batch, sequence)
        except errors.RaftMQError as error:
            if error.code in _TOO_LARGE and error.definite and len(batch) > 1:
                half = len(batch) // 2
                self._max_batch_messages = min(self._max_batch_messages, half)
                return [(batch[:half], sequence), (batch[half:], self._take_sequence())]
            self._settle(batch, error)
        except Exception as error:  # an unexpected answer: the batch may well be stored
            self._settle(batch, errors.error_for(
                errors.UNEXPECTED_RESPONSE, f"{type(error).__name__}: {error}", definite=False))
        except asyncio.CancelledError:
            self._settle(batch, errors.error_for(
                errors.CONNECTION_ERROR, "the producer was cancelled mid-send", definite=False))
            raise
        else:
            for pending, outcome in zip(batch, outcomes, strict=True):
                if not pending.future.done():
                    pending.future.set_result(outcome)
        return []

    async def _publish(self, batch: list[_Pending], sequence: int) -> list[Outcome]:
        fmt = WireFormat.MSGPACK
        document: dict[str, object] = {"messages": [p.item.to_wire(fmt) for p in batch]}
        idempotent = self.settings.idempotent
        if idempotent:
            document |= {"producer_id": self.producer_id, "sequence": sequence}
        if self._exchange is not None:
            document["exchange"] = self._exchange
            path = "/v1/publish"
        else:
            path = f"/v1/streams/{self._stream}/publish"
        packed: bytes = msgpack.packb(document, use_bin_type=True)
        encoding = None
        if len(packed) >= self.settings.compress_min_bytes:
            packed, encoding = lz4.frame.compress(packed), "lz4"
            self.compressed_batches += 1
        self.batches_sent += 1
        answer = await self._client.request(
            "POST", path, raw_body=packed, content_encoding=encoding, write=True,
            idempotent=idempotent, deadline_s=self.settings.deadline_s)
        if self._exchange is not None:
            return _message_outcomes(PublishReceipt.from_wire(answer), len(batch))
        receipt = StreamPublishReceipt.from_wire(answer)
        if len(receipt.offsets) != len(batch):
            raise errors.error_for(errors.UNEXPECTED_RESPONSE, "receipt size differs from batch",
                                   definite=False)
        return [AppendedRecord(p, o, receipt.duplicate, receipt.index)
                for p, o in zip(receipt.partitions, receipt.offsets, strict=True)]

    def _settle(self, batch: list[_Pending], error: Exception) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(error)

    def _fail_buffer(self, error: Exception) -> None:
        while self._buffer:
            pending = self._buffer.popleft()
            if not pending.future.done():
                pending.future.set_exception(error)
        self._buffered_bytes = 0


def _message_outcomes(receipt: PublishReceipt, count: int) -> list[Outcome]:
    # Outcomes are immutable, so the messages of one batch share one object per status.
    by_status = {status: PublishedMessage(status, receipt.duplicate, receipt.index)
                 for status in (ACCEPTED, UNROUTABLE, REJECTED)}
    if any(not 0 <= index < count for index in (*receipt.unroutable, *receipt.rejected)):
        raise WireValueError("a receipt names a message outside the batch")
    outcomes: list[Outcome] = [by_status[ACCEPTED]] * count
    for index in receipt.unroutable:
        outcomes[index] = by_status[UNROUTABLE]
    for index in receipt.rejected:
        outcomes[index] = by_status[REJECTED]
    return outcomes
