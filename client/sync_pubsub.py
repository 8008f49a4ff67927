"""Blocking twins of `Producer`, `QueueConsumer` and `StreamConsumer` for `SyncClient`.

Each wraps the asyncio object, which lives on the SyncClient's loop thread; every method blocks
the calling thread until the async call ends, with the same outcomes and errors. Futures
handed out by `SyncProducer.send` are `concurrent.futures.Future`s, safe to wait on from any
thread. Callbacks (a stream group's `on_rebalance`) run on the loop thread: keep them short.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator, Sequence

from raftmq.client.producer import Item, Outcome, Producer
from raftmq.client.queue_consumer import QueueConsumer
from raftmq.client.stream_consumer import Assignment, StreamConsumer
from raftmq.client.stream_wire import StreamRecord
from raftmq.client.sync_loop import LoopThread
from raftmq.client.wire import Message, SettleReceipt

__all__ = ["SyncProducer", "SyncQueueConsumer", "SyncStreamConsumer"]

OutcomeFuture = concurrent.futures.Future[Outcome]


class SyncProducer:
    def __init__(self, producer: Producer, runner: LoopThread) -> None:
        """Made by `SyncClient.producer`."""
        self._producer = producer
        self._runner = runner

    @property
    def producer_id(self) -> str:
        return self._producer.producer_id

    @property
    def unsettled(self) -> int:
        return self._producer.unsettled

    def send(self, item: Item) -> OutcomeFuture:
        """Queue one message (blocking while the buffer is full); the future settles with its
        outcome. One thread hop per call: for many messages `send_many` is far cheaper."""
        return self.send_many([item])[0]

    def send_many(self, items: Sequence[Item]) -> list[OutcomeFuture]:
        return self._runner.run(self._send_many(items))

    def publish(self, item: Item) -> Outcome:
        """Send one message and wait for its outcome."""
        return self.send(item).result()

    def flush(self) -> None:
        self._runner.run(self._producer.flush())

    def close(self) -> None:
        self._runner.run(self._producer.close())

    def __enter__(self) -> SyncProducer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    async def _send_many(self, items: Sequence[Item]) -> list[OutcomeFuture]:
        futures = await self._producer.send_many(items)
        return [_thread_safe(future) for future in futures]


def _thread_safe(future: asyncio.Future[Outcome]) -> OutcomeFuture:
    twin: OutcomeFuture = concurrent.futures.Future()

    def copy(done: asyncio.Future[Outcome]) -> None:
        if done.cancelled():
            twin.cancel()
        elif (error := done.exception()) is not None:
            twin.set_exception(error)
        else:
            twin.set_result(done.result())

    future.add_done_callback(copy)
    return twin


class SyncQueueConsumer:
    def __init__(self, consumer: QueueConsumer, runner: LoopThread) -> None:
        """Made by `SyncClient.queue_consumer` (already started)."""
        self._consumer = consumer
        self._runner = runner

    @property
    def queue(self) -> str:
        return self._consumer.queue

    @property
    def consumer(self) -> str:
        return self._consumer.consumer

    @property
    def node_url(self) -> str | None:
        return self._consumer.node_url

    def next_batch(self, max_messages: int = 100, timeout_s: float | None = None) -> list[Message]:
        return self._runner.run(self._consumer.next_batch(max_messages, timeout_s))

    def __iter__(self) -> Iterator[Message]:
        """Every message as it comes, until the consumer fails or is closed."""
        while True:
            yield from self.next_batch()

    def ack(self, messages: Sequence[Message]) -> SettleReceipt:
        return self._runner.run(self._consumer.ack(messages))

    def nack(self, messages: Sequence[Message], *, requeue: bool = True,
             delay_ms: int = 0) -> SettleReceipt:
        return self._runner.run(self._consumer.nack(messages, requeue=requeue, delay_ms=delay_ms))

    def extend(self, messages: Sequence[Message], lease_ms: int) -> SettleReceipt:
        return self._runner.run(self._consumer.extend(messages, lease_ms))

    def close(self) -> None:
        self._runner.run(self._consumer.close())

    def __enter__(self) -> SyncQueueConsumer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class SyncStreamConsumer:
    def __init__(self, consumer: StreamConsumer, runner: LoopThread) -> None:
        """Made by `SyncClient.stream_consumer` (already started)."""
        self._consumer = consumer
        self._runner = runner

    @property
    def stream(self) -> str:
        return self._consumer.stream

    @property
    def assignment(self) -> Assignment | None:
        return self._consumer.assignment

    def next_batch(self, max_records: int = 1000,
                   timeout_s: float | None = None) -> list[StreamRecord]:
        return self._runner.run(self._consumer.next_batch(max_records, timeout_s))

    def __iter__(self) -> Iterator[StreamRecord]:
        while True:
            yield from self.next_batch()

    def commit(self) -> None:
        self._runner.run(self._consumer.commit())

    def close(self) -> None:
        self._runner.run(self._consumer.close())

    def __enter__(self) -> SyncStreamConsumer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()



