"""One `raftmq bench` run: producers, consumers, the confirm callbacks, progress and drain.

The hot path (`_item`, `_produce`, `_on_outcome`, `_count_received`) runs tens of thousands of
times a second in one Python process, beside the library's per-message work: it imports
nothing, allocates little and records latencies through `LatencyRecorder`'s cheap path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import secrets
import signal
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from raftmq.broker.cli_bench_report import (
    BenchCounters,
    LatencyRecorder,
    progress_line,
    summary_document,
)

if TYPE_CHECKING:
    from raftmq.client import Client
    from raftmq.client.producer import Outcome, Producer

__all__ = ["DEFAULT_DURATION_S", "BenchRun"]

_STAMP = struct.Struct(">8sQ")  # the run's tag, the scheduled send time (perf_counter ns)
_STAMP_BYTES = _STAMP.size
_FILLER_POOL_BYTES = 1 << 20
_ITEM_RING = 256
_CONSUMER_POLL_S = 0.2
_DRAIN_POLL_S = 0.05
_PROGRESS_PERIOD_S = 1.0
DEFAULT_DURATION_S = 10.0


class BenchRun:
    def __init__(self, client: Client, args: argparse.Namespace) -> None:
        self._client = client
        self._args = args
        self.counters = BenchCounters()
        self.publish_latency = LatencyRecorder()
        self.end_to_end = LatencyRecorder()
        self._tag = secrets.token_bytes(8)
        # Stamps let consumers find this run's messages and time them end to end.
        self._stamped = args.size >= _STAMP_BYTES and args.consumers > 0
        self._filler = _filler(args.payload, max(_FILLER_POOL_BYTES, 2 * args.size))
        self._filler_at = 0
        self._filler_bytes = args.size - _STAMP_BYTES if self._stamped else args.size
        self._filler_span = len(self._filler) - self._filler_bytes + 1
        self._make_item = self._item_factory()
        # Unstamped messages never change: a ring of them (distinct slices, so random bodies
        # still differ) costs nothing per message. Items are immutable, so sharing is safe.
        self._ring: list[Any] = []
        self._ring_at = 0
        if not self._stamped:
            self._ring = [self._item(0.0) for _ in range(_ITEM_RING)]
        from raftmq.client.producer import PublishedMessage

        self._published_type = PublishedMessage
        self._started = 0.0
        self._stop = asyncio.Event()  # Ctrl-C: stop publishing, still report
        self._consumers_done = asyncio.Event()
        self._producers: list[Producer] = []

    # ------------------------------------------------------------ the run

    async def run(self) -> dict[str, Any]:
        args = self._args
        consumers: list[Any] = []
        readers: list[asyncio.Task[None]] = []
        self._producers = [self._new_producer() for _ in range(args.producers)]
        confirms = [_Confirms(self._on_outcome, self.publish_latency, ordered=args.in_flight == 1)
                    for _ in self._producers]
        progress: asyncio.Task[None] | None = None
        restore_sigint = self._catch_sigint()
        try:
            # Consumers first: a stream consumer starts at the end of the log as it is now.
            for _ in range(args.consumers):
                consumers.append(await self._open_consumer())
                readers.append(asyncio.create_task(self._read(consumers[-1])))
            if args.progress:
                progress = asyncio.create_task(self._report_progress())
            self._started = time.perf_counter()
            await self._publish(confirms)
            await self._drain(consumers)
        finally:
            restore_sigint()
            await self._stop_everything(consumers, readers, confirms, progress)
        return summary_document(
            self._settings(), self.counters, size_bytes=args.size, consumers=args.consumers,
            expected_consumed=self._expected_consumed(), publish_latency=self.publish_latency,
            end_to_end=self.end_to_end)

    async def _publish(self, confirms: list[_Confirms]) -> None:
        """Every producer's sends, then every outcome."""
        quotas = _split(self._args.messages, self._args.producers)
        await asyncio.gather(*(
            self._produce(index, producer, confirm, quota) for index, (producer, confirm, quota)
            in enumerate(zip(self._producers, confirms, quotas, strict=True))))
        for confirm in confirms:
            confirm.finish()
        await asyncio.gather(*(producer.close() for producer in self._producers))
        await asyncio.gather(*(confirm.task for confirm in confirms))

    async def _stop_everything(self, consumers: list[Any], readers: list[asyncio.Task[None]],
                               confirms: list[_Confirms],
                               progress: asyncio.Task[None] | None) -> None:
        self._consumers_done.set()
        await asyncio.gather(*readers, return_exceptions=True)
        if progress is not None:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
            if sys.stderr.isatty():
                print(file=sys.stderr)
        await asyncio.gather(*(consumer.close() for consumer in consumers),
                             *(producer.close() for producer in self._producers),
                             return_exceptions=True)
        for confirm in confirms:
            confirm.task.cancel()  # ended already, unless the run failed

    def _settings(self) -> dict[str, Any]:
        args = self._args
        return {
            "target": "stream" if args.stream is not None else "queue",
            "name": args.stream if args.stream is not None else args.queue,
            "producers": args.producers, "consumers": args.consumers, "size_bytes": args.size,
            "batch": args.batch, "linger_ms": args.linger_ms, "in_flight": args.in_flight,
            "rate": args.rate or None, "duration_s": self._duration_s(),
            "messages": args.messages or None, "idempotent": args.idempotent,
            "consumer_mode": "pull" if args.pull else "push", "payload": args.payload,
            "interrupted": self._stop.is_set(),
        }

    def _duration_s(self) -> float | None:
        if self._args.duration is not None:
            return float(self._args.duration)
        return None if self._args.messages else DEFAULT_DURATION_S

    def _catch_sigint(self) -> Any:
        """The first Ctrl-C stops publishing (the summary still comes); a second one aborts."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()

        def on_sigint() -> None:
            if self._stop.is_set() and main_task is not None:
                main_task.cancel()
            self._stop.set()

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        return lambda: loop.remove_signal_handler(signal.SIGINT)

    # ------------------------------------------------------------ publishing

    def _new_producer(self) -> Producer:
        from raftmq.client.producer import Producer, ProducerSettings

        args = self._args
        settings = ProducerSettings(
            linger_ms=args.linger_ms, max_batch_messages=args.batch,
            max_in_flight_batches=args.in_flight,
            max_buffered_messages=args.batch * (args.in_flight + 1),
            compress_min_bytes=4096 if args.compress else 2**62, idempotent=args.idempotent)
        if args.stream is not None:
            return Producer(self._client, stream=args.stream, settings=settings)
        return Producer(self._client, exchange="", settings=settings)

    def _item(self, scheduled_s: float) -> Any:
        """One message: this is the hot path (tens of thousands per second), kept lean."""
        if self._ring:
            self._ring_at = (self._ring_at + 1) % _ITEM_RING
            return self._ring[self._ring_at]
        filler_bytes = self._filler_bytes
        # Successive slices of the pool, so that random bodies differ and cannot be compressed.
        at = self._filler_at
        self._filler_at = (at + filler_bytes + 4099) % self._filler_span
        body = self._filler[at:at + filler_bytes]
        if self._stamped:
            body = _STAMP.pack(self._tag, int(scheduled_s * 1e9)) + body
        return self._make_item(body)

    def _item_factory(self) -> Callable[[bytes], Any]:
        from raftmq.client import OutgoingMessage
        from raftmq.client.stream_wire import OutgoingRecord

        if self._args.stream is not None:
            return OutgoingRecord
        return functools.partial(OutgoingMessage, routing_key=self._args.queue)

    async def _produce(self, index: int, producer: Producer, confirms: _Confirms,
                       quota: int | None) -> None:
        args = self._args
        duration_s = self._duration_s()
        end_s = None if duration_s is None else self._started + duration_s
        interval_s = args.producers / args.rate if args.rate else 0.0
        # Producers' schedules interleave rather than all firing at the same instants.
        first_s = self._started + interval_s * index / args.producers
        sent = 0
        while not self._stop.is_set() and (quota is None or sent < quota):
            now = time.perf_counter()
            if interval_s:
                scheduled_s = first_s + sent * interval_s  # multiplied: no drift from sums
                if end_s is not None and scheduled_s >= end_s:
                    break
                if scheduled_s > now:
                    await asyncio.sleep(scheduled_s - now)
                    continue
            else:
                if end_s is not None and now >= end_s:
                    break
                # Unlimited rate: hand the producer a batch's worth at once (one call
                # instead of one per message; each still gets its own future).
                count = args.batch if quota is None else min(args.batch, quota - sent)
                items = [self._item(now) for _ in range(count)]
                futures = await producer.send_many(items)
                self.counters.sent += count
                sent += count
                confirms.add_many(now, futures)
                continue
            future = await producer.send(self._item(scheduled_s))
            self.counters.sent += 1
            sent += 1
            confirms.add(scheduled_s, future)

    def _on_outcome(self, future: asyncio.Future[Outcome], now: float) -> bool:
        """Counts one outcome; True for a confirmed message, whose latency the caller records
        (in runs: the messages of one send share their scheduled time)."""
        counters = self.counters
        if future.cancelled():
            counters.note_error("cancelled", definite=False)
            return False
        error = future.exception()
        if error is not None:
            counters.note_error(str(getattr(error, "code", type(error).__name__)),
                                definite=bool(getattr(error, "definite", False)))
            return False
        outcome = future.result()
        if isinstance(outcome, self._published_type) and outcome.status != "accepted":
            if outcome.status == "unroutable":
                counters.unroutable += 1
            else:
                counters.rejected += 1
            return False
        counters.confirmed += 1
        counters.last_confirm_s = now - self._started
        return True

    # ------------------------------------------------------------ consuming

    async def _open_consumer(self) -> Any:
        from raftmq.client.queue_consumer import QueueConsumer
        from raftmq.client.stream_consumer import StreamConsumer

        args = self._args
        consumer: Any
        if args.stream is not None:
            # Started before publishing, at the end of every partition: it reads this run only.
            consumer = StreamConsumer(self._client, args.stream, start="latest",
                                      max_buffered_records=10_000, wait_ms=1_000)
        else:
            consumer = QueueConsumer(self._client, args.queue, prefetch=args.prefetch,
                                     mode="pull" if args.pull else "push", wait_ms=1_000)
        await consumer.start()
        return consumer

    async def _read(self, consumer: Any) -> None:
        from raftmq.client import RaftMQError

        acks = hasattr(consumer, "ack")
        try:
            while not self._consumers_done.is_set():
                batch = await consumer.next_batch(1000, timeout_s=_CONSUMER_POLL_S)
                if not batch:
                    continue
                self._count_received([item.body for item in batch])
                if acks:
                    await consumer.ack(batch)
        except RaftMQError as error:
            self.counters.consumer_errors[error.code] = (
                self.counters.consumer_errors.get(error.code, 0) + 1)

    def _count_received(self, bodies: list[bytes]) -> None:
        now = time.perf_counter()
        counters = self.counters
        for body in bodies:
            if not self._stamped:
                counters.consumed += 1
            elif body[:8] == self._tag:
                counters.consumed += 1
                self.end_to_end.record_s(now - _STAMP.unpack_from(body)[1] / 1e9)
            else:
                counters.foreign += 1
        counters.last_consume_s = now - self._started

    def _expected_consumed(self) -> int:
        args = self._args
        if args.consumers == 0:
            return 0
        # Every stream consumer reads every record; queue consumers share the messages.
        fan_out = args.consumers if args.stream is not None else 1
        return self.counters.confirmed * fan_out

    async def _drain(self, consumers: list[Any]) -> None:
        """Wait until the consumers have everything that was confirmed, or stop progressing."""
        if not consumers:
            return
        loop = asyncio.get_running_loop()
        last_count, last_progress = -1, loop.time()
        while not self._stop.is_set() and self.counters.consumed < self._expected_consumed():
            if self.counters.consumed != last_count:
                last_count, last_progress = self.counters.consumed, loop.time()
            elif loop.time() - last_progress > self._args.drain_timeout:
                return
            await asyncio.sleep(_DRAIN_POLL_S)

    # ------------------------------------------------------------ progress

    async def _report_progress(self) -> None:
        tty = sys.stderr.isatty()
        confirmed, consumed, at = 0, 0, time.perf_counter()
        while True:
            await asyncio.sleep(_PROGRESS_PERIOD_S)
            now = time.perf_counter()
            elapsed = max(now - at, 1e-9)
            counters = self.counters
            line = progress_line(
                now - self._started, (counters.confirmed - confirmed) / elapsed,
                (counters.consumed - consumed) / elapsed if self._args.consumers else None,
                sum(producer.unsettled for producer in self._producers), self.publish_latency)
            print(f"\r{line}" if tty else line, end="" if tty else "\n", file=sys.stderr,
                  flush=True)
            confirmed, consumed, at = counters.confirmed, counters.consumed, now


class _Confirms:
    """One producer's messages awaiting their outcomes.

    With one batch in flight the producer settles its futures in send order, a whole batch at
    once; so a task waiting on the oldest future, then taking every settled one behind it,
    sees each outcome at the same moment a per-message callback would, at a fraction of the
    cost (one wake-up per batch instead of one scheduled callback per message). With more in
    flight batches may finish out of order: then each message gets its callback."""

    def __init__(self, on_outcome: Callable[[asyncio.Future[Outcome], float], bool],
                 latency: LatencyRecorder, *, ordered: bool) -> None:
        self._on_outcome = on_outcome
        self._latency = latency
        self._ordered = ordered
        self._pending: deque[tuple[float, asyncio.Future[Outcome]]] = deque()
        self._more = asyncio.Event()
        self._idle = False
        self._finished = False
        self.task = asyncio.create_task(self._collect())

    def add(self, scheduled_s: float, future: asyncio.Future[Outcome]) -> None:
        if not self._ordered:
            future.add_done_callback(functools.partial(self._settled, scheduled_s))
            return
        self._pending.append((scheduled_s, future))  # bounded by the producer's buffer
        if self._idle:
            self._more.set()

    def add_many(self, scheduled_s: float, futures: list[asyncio.Future[Outcome]]) -> None:
        if not self._ordered:
            for future in futures:
                self.add(scheduled_s, future)
            return
        self._pending.extend((scheduled_s, future) for future in futures)
        if self._idle:
            self._more.set()

    def finish(self) -> None:
        """No more messages: the task ends once every outcome is in."""
        self._finished = True
        self._more.set()

    def _settled(self, scheduled_s: float, future: asyncio.Future[Outcome]) -> None:
        now = time.perf_counter()
        if self._on_outcome(future, now):
            self._latency.record_s(now - scheduled_s)

    async def _collect(self) -> None:
        pending = self._pending
        while True:
            if not pending:
                if self._finished:
                    return
                self._more.clear()
                self._idle = True
                await self._more.wait()
                self._idle = False
                continue
            oldest = pending[0][1]
            if not oldest.done():
                await asyncio.wait((oldest,))
            now = time.perf_counter()
            run_s, run_count = 0.0, 0  # consecutive confirmed messages sent at one time
            while pending and pending[0][1].done():
                scheduled_s, future = pending.popleft()
                if not self._on_outcome(future, now):
                    continue
                if scheduled_s != run_s and run_count:
                    self._latency.record_s(now - run_s, run_count)
                    run_count = 0
                run_s = scheduled_s
                run_count += 1
            if run_count:
                self._latency.record_s(now - run_s, run_count)


def _split(total: int, parts: int) -> list[int | None]:
    """Each producer's share of --messages (None: no limit)."""
    if total <= 0:
        return [None] * parts
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


def _filler(payload: str, size: int) -> bytes:
    if payload == "random":
        return os.urandom(size)
    text = b"raftmq-bench-"
    return text * (size // len(text) + 1)
