"""`PacedPublisher`: one idempotent `Producer` publishing at an open-loop rate, recording every
publish as an invoke and, when its future settles, exactly one ok / fail / unknown.

Open loop: messages are due at a fixed rate whatever the broker does, so a stall shows as a gap
in oks rather than as a slower workload. While the producer's buffer is full the due messages
wait (the buffer is the bound); past `MAX_LAG_S` of backlog the schedule skips ahead instead of
bursting thousands of messages after a long fault (counted as `publish_skipped`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from raftmq.chaos.history import HistoryWriter
from raftmq.chaos.workload_common import Counters, body_for, error_code, is_definite, wait_event
from raftmq.client import Client
from raftmq.client.producer import AppendedRecord, Outcome, Producer, ProducerSettings, PublishedMessage
from raftmq.client.stream_wire import OutgoingRecord
from raftmq.client.wire import OutgoingMessage

__all__ = [
    "MAX_BUFFERED_MESSAGES",
    "MAX_LAG_S",
    "PUBLISH_DEADLINE_S",
    "Item",
    "PacedPublisher",
    "Plan",
    "outcome_fields",
    "producer_settings",
]

# A publish stuck in a partition ends unknown after this, instead of hanging the run.
PUBLISH_DEADLINE_S = 20.0
MAX_BUFFERED_MESSAGES = 2_000
MAX_LAG_S = 1.0
_TICK_S = 0.01
_ROOM_POLL_S = 0.02
NOT_SENT = "not_sent"

Item = OutgoingMessage | OutgoingRecord
# (publish id, body) -> the item to send and the routing fields of its `publish` value
# (exchange, routing_key, key, targets).
Plan = Callable[[str, bytes], tuple[Item, dict[str, Any]]]


def producer_settings() -> ProducerSettings:
    # One batch in flight: batches apply in send order through failovers (the checker's
    # order check relies on it).
    return ProducerSettings(linger_ms=5.0, max_batch_messages=200, max_in_flight_batches=1,
                            max_buffered_messages=MAX_BUFFERED_MESSAGES,
                            deadline_s=PUBLISH_DEADLINE_S)


def outcome_fields(outcome: Outcome) -> dict[str, Any]:
    """What a publish ok adds to the invoke's value (contract)."""
    if isinstance(outcome, AppendedRecord):
        return {"partition": outcome.partition, "offset": outcome.offset,
                "duplicate": outcome.duplicate}
    assert isinstance(outcome, PublishedMessage)
    return {"status": outcome.status, "duplicate": outcome.duplicate}


class PacedPublisher:
    def __init__(
        self, *, client: Client, writer: HistoryWriter, workload: str, index: int,
        rate_per_s: float, message_bytes: int, plan: Plan, counters: Counters,
        exchange: str | None = None, stream: str | None = None,
    ) -> None:
        self.process = f"{workload}-producer-{index}"
        self._id_prefix = f"{workload}-p{index}-"
        self._client = client
        self._writer = writer
        self._rate_per_s = rate_per_s
        self._message_bytes = message_bytes
        self._plan = plan
        self._counters = counters
        self._exchange = exchange
        self._stream = stream
        self._producer: Producer | None = None
        self._next_seq = 0
        self._detached = False

    async def run(self, stop: asyncio.Event) -> None:
        """Publish at the rate until `stop` is set; outcomes keep arriving afterwards
        (`finish` waits for them)."""
        self._producer = Producer(self._client, exchange=self._exchange, stream=self._stream,
                                  settings=producer_settings())
        loop = asyncio.get_running_loop()
        started_s = loop.time()
        scheduled = 0
        max_lag = max(1, int(self._rate_per_s * MAX_LAG_S))
        while not stop.is_set():
            due = int((loop.time() - started_s) * self._rate_per_s) - scheduled
            if due <= 0:
                await wait_event(stop, _TICK_S)
                continue
            if due > max_lag:
                self._counters["publish_skipped"] += due - max_lag
                scheduled += due - max_lag
                due = max_lag
            for _ in range(due):
                if not await self._room(self._producer, stop):
                    return
                await self._send_one(self._producer)
                scheduled += 1

    async def finish(self) -> None:
        """Flush and close the producer: every publish has its outcome once this returns
        (each batch gives up after PUBLISH_DEADLINE_S)."""
        if self._producer is not None:
            await self._producer.close()

    def detach(self) -> None:
        """Record nothing more: the run is over while some publishes are still unsettled
        (they stay open in the history, which the checker reads as unknown)."""
        self._detached = True

    async def _room(self, producer: Producer, stop: asyncio.Event) -> bool:
        """Wait (not inside `send`, where stop could not interrupt) for buffer space;
        False when stop came first."""
        while producer.unsettled >= MAX_BUFFERED_MESSAGES:
            if await wait_event(stop, _ROOM_POLL_S):
                return False
        return not stop.is_set()

    async def _send_one(self, producer: Producer) -> None:
        seq = self._next_seq
        self._next_seq += 1
        publish_id = f"{self._id_prefix}{seq}"
        item, routing = self._plan(publish_id, body_for(publish_id, self._message_bytes))
        value = {"id": publish_id, "producer": self.process, "seq": seq, **routing}
        # Recorded before the message can leave: an invoke always precedes its storage.
        self._writer.invoke(self.process, "publish", value)
        self._counters["publish_invoked"] += 1
        try:
            future = await producer.send(item)
        except asyncio.CancelledError:
            self._complete("unknown", value, {"error": "cancelled"})
            raise
        except Exception:
            # `send` raised before queueing the message: it was never sent.
            self._complete("fail", value, {"error": NOT_SENT})
            return
        future.add_done_callback(functools.partial(self._settled, value))

    def _settled(self, value: dict[str, Any], future: asyncio.Future[Outcome]) -> None:
        if future.cancelled():
            self._complete("unknown", value, {"error": "cancelled"})
            return
        error = future.exception()
        if error is None:
            self._complete("ok", value, outcome_fields(future.result()))
        elif is_definite(error):
            self._complete("fail", value, {"error": error_code(error)})
        else:
            self._complete("unknown", value, {"error": error_code(error)})

    def _complete(self, kind: str, value: dict[str, Any], extra: dict[str, Any]) -> None:
        if self._detached:
            self._counters["publish_unrecorded"] += 1
            return
        record = {"ok": self._writer.ok, "fail": self._writer.fail, "unknown": self._writer.unknown}[kind]
        record(self.process, "publish", {**value, **extra})
        self._counters[f"publish_{kind}"] += 1
