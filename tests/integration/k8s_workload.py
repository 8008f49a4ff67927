"""A producer and a consumer for the StatefulSet test, run in a client namespace like an
application pod: it reaches the brokers by their headless-Service DNS names only.

Usage: `python k8s_workload.py OUT_DIR QUEUE SEED_URL [SEED_URL...]`.
Declares QUEUE, prints `READY`, then publishes numbered messages through an idempotent
`Producer` (via the default exchange) while a push `QueueConsumer` acks them. Every confirmed
id is appended to OUT_DIR/confirmed, every received id to OUT_DIR/received (one per line,
flushed, so the driver sees progress while it runs). A `STOP` line on stdin ends publishing;
the consumer keeps going until every confirmed id was received or 30 s passed, then one JSON
line summarises: confirmed, received, missing (first 20 ids), unknown (outcome unknown: not
counted as confirmed), failed (definite failures). Exits when stdin closes too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import TextIO

from raftmq.client import (
    Client,
    IndefiniteError,
    OutgoingMessage,
    Producer,
    ProducerSettings,
    PublishedMessage,
    QueueConsumer,
    RaftMQError,
    RetryPolicy,
)

PUBLISH_PAUSE_S = 0.004
DRAIN_DEADLINE_S = 30.0
MAX_IN_FLIGHT = 200


class Tally:
    def __init__(self, out_dir: Path) -> None:
        self.confirmed: set[int] = set()
        self.received: set[int] = set()
        self.unknown = 0
        self.failed: list[str] = []
        self._confirmed_file: TextIO = open(out_dir / "confirmed", "a")  # noqa: SIM115
        self._received_file: TextIO = open(out_dir / "received", "a")  # noqa: SIM115

    def confirm(self, message_id: int) -> None:
        self.confirmed.add(message_id)
        self._confirmed_file.write(f"{message_id}\n")
        self._confirmed_file.flush()

    def receive(self, message_id: int) -> None:
        if message_id not in self.received:
            self.received.add(message_id)
            self._received_file.write(f"{message_id}\n")
            self._received_file.flush()


async def produce(producer: Producer, queue: str, tally: Tally, stop: asyncio.Event) -> None:
    in_flight: set[asyncio.Future[object]] = set()
    message_id = 0

    def settled(future: asyncio.Future[object], sent_id: int) -> None:
        in_flight.discard(future)
        error = future.exception()
        if error is None and isinstance(future.result(), PublishedMessage):
            tally.confirm(sent_id)
        elif isinstance(error, IndefiniteError):
            tally.unknown += 1
        else:
            tally.failed.append(f"{sent_id}: {error!r}")

    while not stop.is_set():
        if len(in_flight) >= MAX_IN_FLIGHT:
            await asyncio.sleep(PUBLISH_PAUSE_S)
            continue
        message_id += 1
        future = await producer.send(OutgoingMessage(str(message_id).encode(), routing_key=queue))
        in_flight.add(future)  # type: ignore[arg-type]
        future.add_done_callback(lambda done, sent=message_id: settled(done, sent))  # type: ignore[misc]
        await asyncio.sleep(PUBLISH_PAUSE_S)
    await producer.flush()


async def consume(consumer: QueueConsumer, tally: Tally, published: asyncio.Event,
                  all_received: asyncio.Event) -> None:
    while True:
        batch = await consumer.next_batch(100, timeout_s=0.2)
        for message in batch:
            tally.receive(int(message.body))
        if batch:
            # Unacked messages come again when their lease ends: still not lost.
            with contextlib.suppress(RaftMQError):
                await consumer.ack(batch)
        if published.is_set() and tally.confirmed <= tally.received:
            all_received.set()


async def read_stop(stop: asyncio.Event) -> None:
    line = await asyncio.to_thread(sys.stdin.readline)
    del line  # "STOP" or end of input: either way, stop
    stop.set()


async def main(out_dir: Path, queue: str, seeds: list[str]) -> None:
    tally = Tally(out_dir)
    retry = RetryPolicy(deadline_s=60.0)
    async with Client.connect(seeds, retry=retry, request_timeout_s=5.0) as client:
        await client.declare_queue(queue)
        producer = Producer(client, exchange="", settings=ProducerSettings(deadline_s=60.0))
        consumer = await QueueConsumer(client, queue, prefetch=200, lease_ms=10_000).start()
        print("READY", flush=True)
        stop, published, all_received = asyncio.Event(), asyncio.Event(), asyncio.Event()
        consuming = asyncio.create_task(consume(consumer, tally, published, all_received))
        stopper = asyncio.create_task(read_stop(stop))
        await produce(producer, queue, tally, stop)
        await producer.close()
        published.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_received.wait(), DRAIN_DEADLINE_S)
        consuming.cancel()
        stopper.cancel()
        await consumer.close()
    missing = sorted(tally.confirmed - tally.received)
    print(json.dumps({"confirmed": len(tally.confirmed), "received": len(tally.received),
                      "missing": missing[:20], "missing_count": len(missing),
                      "unknown": tally.unknown, "failed": tally.failed[:20],
                      "reconnects": consumer.reconnects}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:]))
