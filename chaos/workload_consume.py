"""`QueueConsumerRunner`: one queue consumer (push or pull) that records every delivery and
settles it (ack, nack with or without requeue, or abandon under a short lease) as the seeded
mix says, recording each ack and nack as an invoke and one ok / fail / unknown per message.

A consumer object that fails is closed and made again after a short backoff; what it held
comes back when its leases run out. Once `draining` is set every delivery is acked, so the
queues can empty.

Outcomes per message of a settle call that answered: ok unless the receipt lists a failure
for it. `lease_expired` on an ack or a reject proves it did not happen (had an earlier attempt
of this call removed the message, a retry would find it gone: `unknown_message`); any other
failure may be this call's own earlier attempt, so it is unknown. A nack with requeue leaves
the message in the queue, so even `lease_expired` may follow its own applied attempt: unknown.
A settle call still unanswered shortly after the first of its leases ran out is given up and
recorded unknown (`settle_timeout`), so a failover cannot hold the consumer up for long.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raftmq.chaos.history import HistoryWriter
from raftmq.chaos.workload_common import (
    Counters,
    death_fields,
    error_code,
    id_from_body,
    is_definite,
    wait_event,
)
from raftmq.client import Client, Message, QueueConsumer, SettleReceipt

__all__ = ["LEASE_EXPIRED", "SETTLE_TIMEOUT", "ConsumerFailed", "QueueConsumerRunner", "SettleMix",
           "settle_budget_s"]

LEASE_EXPIRED = "lease_expired"  # the broker's settle failure for a lease no longer current
_MAX_BATCH = 50
_MAX_PENDING_BATCHES = 4
_MIN_SETTLE_S = 1.0
_SETTLE_MARGIN_S = 0.5
SETTLE_TIMEOUT = "settle_timeout"
_TAKE_TIMEOUT_S = 0.25
_RESTART_PAUSE_S = (0.1, 0.25, 0.5, 1.0)
ACK, REQUEUE, REJECT, ABANDON = "ack", "requeue", "reject", "abandon"


@dataclass(frozen=True)
class SettleMix:
    """Fractions of deliveries settled otherwise than by an ack (the rest are acked)."""

    requeue: float = 0.0  # nack with requeue: redelivered
    reject: float = 0.0  # nack without requeue: dead-lettered, reason "rejected"
    abandon: float = 0.0  # never settled; the lease is cut to abandon_lease_ms
    abandon_lease_ms: int = 300

    def __post_init__(self) -> None:
        if min(self.requeue, self.reject, self.abandon) < 0 or self.requeue + self.reject + self.abandon > 1:
            raise ValueError("settle fractions must be >= 0 and sum to at most 1")

    def choose(self, rng: random.Random) -> str:
        draw = rng.random()
        for action, fraction in ((REQUEUE, self.requeue), (REJECT, self.reject), (ABANDON, self.abandon)):
            if draw < fraction:
                return action
            draw -= fraction
        return ACK


ACK_ALL = SettleMix()


def settle_budget_s(messages: Sequence[Message]) -> float:
    """How long a settle call may take: until the first of the messages' leases runs out (and
    a little more), since by then the broker is free to redeliver them. A settle stuck longer
    in a failover would hold up the recording of later deliveries; given up, it is unknown."""
    now_ms = time.time_ns() // 1_000_000
    first_expiry_ms = min(message.lease_expires_ms for message in messages)
    return max(_MIN_SETTLE_S, (first_expiry_ms - now_ms) / 1000.0) + _SETTLE_MARGIN_S


class ConsumerFailed(Exception):
    """The consumer object failed (its reader gave up): make a new one."""


class QueueConsumerRunner:
    def __init__(
        self, *, client: Client, writer: HistoryWriter, queue: str, process: str, mode: str,
        mix: SettleMix, rng: random.Random, counters: Counters, prefetch: int = 20,
        lease_ms: int = 10_000,
    ) -> None:
        self.queue = queue
        self.process = process
        self.draining = False
        self._client = client
        self._writer = writer
        self._mode = mode
        self._mix = mix
        self._rng = rng
        self._counters = counters
        self._prefetch = prefetch
        self._lease_ms = lease_ms

    async def run(self, stop: asyncio.Event) -> None:
        failures_in_row = 0
        while not stop.is_set():
            consumer = QueueConsumer(self._client, self.queue, consumer=self.process,
                                     prefetch=self._prefetch, lease_ms=self._lease_ms,
                                     mode=self._mode, wait_ms=1_000)
            try:
                await consumer.start()
                await self._consume(consumer, stop)
                failures_in_row = 0
            except ConsumerFailed:
                self._counters["consumer_restarts"] += 1
                failures_in_row += 1
            finally:
                await consumer.close()
            pause_s = _RESTART_PAUSE_S[min(failures_in_row, len(_RESTART_PAUSE_S) - 1)]
            await wait_event(stop, pause_s)

    async def _consume(self, consumer: QueueConsumer, stop: asyncio.Event) -> None:
        """Deliveries are recorded the moment they are taken, by this loop; a separate task
        settles them. Were they recorded only when a slow settle (a failover) let the loop
        come back, another consumer could record a later redelivery of the same message first,
        and the history would show its delivery count going down."""
        pending: asyncio.Queue[list[Message] | None] = asyncio.Queue(_MAX_PENDING_BATCHES)
        settler = asyncio.create_task(self._settle_batches(consumer, pending),
                                      name=f"{self.process}-settler")
        try:
            await self._read(consumer, stop, pending, settler)
        except ConsumerFailed:
            await self._finish_settling(pending, settler)
            raise
        except BaseException:
            settler.cancel()
            await asyncio.gather(settler, return_exceptions=True)
            raise
        await self._finish_settling(pending, settler)

    async def _read(self, consumer: QueueConsumer, stop: asyncio.Event,
                    pending: asyncio.Queue[list[Message] | None], settler: asyncio.Task[None]) -> None:
        while not stop.is_set() and not settler.done():
            try:
                batch = await consumer.next_batch(_MAX_BATCH, timeout_s=_TAKE_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                raise ConsumerFailed(error_code(error)) from error
            if not batch:
                continue
            for message in batch:
                self._record_delivery(message)
            # Bounded: a settler stuck in a failover holds the reader here (push consumers
            # hold at most `prefetch` leases anyway).
            putting = asyncio.ensure_future(pending.put(batch))
            await asyncio.wait({putting, settler}, return_when=asyncio.FIRST_COMPLETED)
            if not putting.done():
                putting.cancel()

    async def _finish_settling(self, pending: asyncio.Queue[list[Message] | None],
                               settler: asyncio.Task[None]) -> None:
        """Let the settler settle every batch already recorded, then end it (a settler that
        died of a recorder bug raises here)."""
        if not settler.done():
            putting = asyncio.ensure_future(pending.put(None))
            await asyncio.wait({putting, settler}, return_when=asyncio.FIRST_COMPLETED)
            if not putting.done():
                putting.cancel()
        await settler

    async def _settle_batches(self, consumer: QueueConsumer,
                              pending: asyncio.Queue[list[Message] | None]) -> None:
        while (batch := await pending.get()) is not None:
            await self._handle(consumer, batch)

    async def _handle(self, consumer: QueueConsumer, batch: Sequence[Message]) -> None:
        current: dict[int, Message] = {}
        for message in batch:
            held = current.get(message.message_id)
            # A message redelivered while its older copy waited here: only the newer lease
            # can still be settled (and one settle call must not name a message twice).
            if held is None or message.lease_id > held.lease_id:
                current[message.message_id] = message
        chosen: dict[str, list[Message]] = {ACK: [], REQUEUE: [], REJECT: [], ABANDON: []}
        for message in current.values():
            chosen[ACK if self.draining else self._mix.choose(self._rng)].append(message)
        await self._settle(consumer, "ack", chosen[ACK], None)
        await self._settle(consumer, "nack", chosen[REQUEUE], True)
        await self._settle(consumer, "nack", chosen[REJECT], False)
        await self._abandon(consumer, chosen[ABANDON])

    def _record_delivery(self, message: Message) -> None:
        death_reason, death_queue = death_fields(message.headers)
        self._writer.event(self.process, "deliver", {
            "queue": self.queue, "id": id_from_body(message.body), "message_id": message.message_id,
            "delivery_count": message.delivery_count, "consumer": self.process,
            "death_reason": death_reason, "death_queue": death_queue,
            # Beyond the contract, so a delivery observed only after its lease ran out (held in
            # a client buffer, or a claim answered late) can be told from a broker fault: both
            # are wall-clock ms, the broker's and ours (one host, or NTP).
            "lease_expires_ms": message.lease_expires_ms, "observed_wall_ms": time.time_ns() // 1_000_000})
        self._counters["delivered"] += 1
        if message.delivery_count > 1:
            self._counters["redelivered"] += 1

    async def _abandon(self, consumer: QueueConsumer, messages: list[Message]) -> None:
        """Leave messages unsettled; cutting their lease makes the broker redeliver them soon.
        An extend is not a history operation: whether it worked, the lease runs out."""
        if not messages:
            return
        self._counters["abandoned"] += len(messages)
        try:
            await asyncio.wait_for(consumer.extend(messages, lease_ms=self._mix.abandon_lease_ms),
                                   settle_budget_s(messages))
        except asyncio.CancelledError:
            raise
        except Exception:
            self._counters["abandon_extend_failed"] += 1

    async def _settle(self, consumer: QueueConsumer, f: str, messages: list[Message],
                      requeue: bool | None) -> None:
        if not messages:
            return
        values: list[dict[str, Any]] = []
        for message in messages:
            value: dict[str, Any] = {"queue": self.queue, "id": id_from_body(message.body),
                                     "message_id": message.message_id}
            if requeue is not None:
                value["requeue"] = requeue
            self._writer.invoke(self.process, f, value)
            values.append(value)
        call = consumer.ack(messages) if requeue is None else consumer.nack(messages, requeue=requeue)
        try:
            receipt = await asyncio.wait_for(call, settle_budget_s(messages))
        except asyncio.CancelledError:
            self._complete_all(f, values, "unknown", "cancelled")
            raise
        except TimeoutError:
            self._complete_all(f, values, "unknown", SETTLE_TIMEOUT)
            return
        except Exception as error:
            self._complete_all(f, values, "fail" if is_definite(error) else "unknown", error_code(error))
            return
        self._complete_from_receipt(f, values, receipt, requeue)

    def _complete_from_receipt(self, f: str, values: list[dict[str, Any]], receipt: SettleReceipt,
                               requeue: bool | None) -> None:
        failures = dict(receipt.failures)
        for value in values:
            code = failures.get(value["message_id"])
            if code is None:
                self._complete(f, value, "ok", None)
            elif code == LEASE_EXPIRED and not requeue:
                self._complete(f, value, "fail", code)
            else:
                self._complete(f, value, "unknown", code)

    def _complete_all(self, f: str, values: list[dict[str, Any]], kind: str, code: str) -> None:
        for value in values:
            self._complete(f, value, kind, code)

    def _complete(self, f: str, value: dict[str, Any], kind: str, code: str | None) -> None:
        record = {"ok": self._writer.ok, "fail": self._writer.fail, "unknown": self._writer.unknown}[kind]
        record(self.process, f, value if code is None else {**value, "error": code})
        name = f if f == "ack" else ("nack_requeue" if value["requeue"] else "nack_reject")
        self._counters[f"{name}_{kind}"] += 1
