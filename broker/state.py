"""`BrokerState`: the broker's pure, deterministic replicated state machine.

Every replica applies the same commands in the same order and must end in the same state, so
nothing here reads a clock, draws randomness or iterates a set: time is the largest `now_ms`
seen in a command, and every container is an insertion-ordered dict or a list.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from raftmq.broker import queue_flow
from raftmq.broker.commands import (
    KIND_ACK,
    KIND_EXTEND_LEASE,
    KIND_NACK,
    KIND_PUBLISH,
    Ack,
    Bind,
    Claim,
    Command,
    CommandDecodeError,
    DeclareExchange,
    DeclareQueue,
    DeleteExchange,
    DeleteQueue,
    ExtendLease,
    Nack,
    Publish,
    PurgeQueue,
    Tick,
    Unbind,
    decode_items,
    unpack_command,
)
from raftmq.broker.names import DEFAULT_EXCHANGE
from raftmq.broker.queue_core import BrokerCore
from raftmq.broker.queue_message import DELAYED, LEASED, READY
from raftmq.broker.queue_state import QueueState
from raftmq.broker.queue_validation import (
    extend_problem,
    flatten_leases,
    nack_problem,
    raw_publish_problem,
    settle_problem,
    validate_command,
)
from raftmq.broker.queue_wire import (
    RawPublish,
    read_bool,
    read_lease_pairs,
    read_publish_fields,
    read_str,
    read_uint,
)
from raftmq.broker.results import (
    DECODE_ERROR,
    EXCHANGE_NOT_FOUND,
    IN_USE,
    INTERNAL_ERROR,
    INVALID_ARGUMENT,
    PRECONDITION_FAILED,
    QUEUE_NOT_FOUND,
    BindingInfo,
    ErrorResult,
    ExchangeInfo,
    OkResult,
    PurgeResult,
    QueueInfo,
    Result,
)
from raftmq.broker.routing import DIRECT, Exchange
from raftmq.broker.snapshot_codec import decode_snapshot, encode_snapshot

__all__ = ["BrokerState"]

_SETTLE_KINDS = (KIND_ACK, KIND_NACK, KIND_EXTEND_LEASE)


class BrokerState:
    """Implements the cluster's StateMachine protocol (apply / snapshot / restore)."""

    def __init__(self) -> None:
        self._core = BrokerCore()
        self._handlers: dict[type, Callable[[Any], Result]] = {
            Publish: self._publish,
            Claim: lambda c: queue_flow.claim(self._core, c),
            Ack: lambda c: queue_flow.ack(self._core, c.queue, flatten_leases(c.leases)),
            Nack: lambda c: queue_flow.nack(
                self._core, c.queue, flatten_leases(c.leases), c.requeue, c.delay_ms
            ),
            ExtendLease: lambda c: queue_flow.extend_lease(
                self._core, c.queue, flatten_leases(c.leases), c.lease_ms
            ),
            Tick: lambda c: OkResult(),
            DeclareExchange: self._declare_exchange,
            DeleteExchange: self._delete_exchange,
            DeclareQueue: self._declare_queue,
            DeleteQueue: self._delete_queue,
            PurgeQueue: self._purge_queue,
            Bind: self._bind,
            Unbind: self._unbind,
        }

    # ------------------------------------------------------------ StateMachine protocol

    def apply(self, command: bytes) -> object:
        """Decode and apply one command from the log. Publish and settle commands skip the
        dataclasses and run on the checked wire form; results are identical either way."""
        try:
            items = unpack_command(command)
            kind = items[1]
            if kind == KIND_PUBLISH:
                return self._apply_raw_publish(items[2], read_publish_fields(items[3:]))
            if kind in _SETTLE_KINDS:
                return self._apply_raw_settle(items)
            cmd = decode_items(items)
        except CommandDecodeError as error:
            return ErrorResult(DECODE_ERROR, str(error))
        except Exception as error:  # never raise into the replication layer
            return ErrorResult(INTERNAL_ERROR, f"{type(error).__name__}: {error}")
        return self.apply_command(cmd)

    def apply_command(self, cmd: Command) -> Result:
        """Apply a typed command (validated here, like everything that reaches the state)."""
        return self._execute(
            cmd.now_ms, lambda: validate_command(cmd), lambda: self._handlers[type(cmd)](cmd)
        )

    def _apply_raw_publish(self, now_ms: int, fields: RawPublish) -> Result:
        exchange, messages, producer_id, sequence, max_total_bytes = fields
        return self._execute(
            now_ms,
            lambda: raw_publish_problem(now_ms, fields),
            lambda: queue_flow.publish(
                self._core, exchange, messages, producer_id, sequence, max_total_bytes
            ),
        )

    def _apply_raw_settle(self, items: list[Any]) -> Result:
        # Same field order and checks as the Ack / Nack / ExtendLease decoders and validators.
        kind, now_ms, fields = items[1], items[2], items[3:]
        queue = read_str(fields[0], "queue")
        leases = read_lease_pairs(fields[1])
        core = self._core
        action: Callable[[], Result]
        extra_problem: str | None = None
        if kind == KIND_ACK:
            action = partial(queue_flow.ack, core, queue, leases)
        elif kind == KIND_NACK:
            requeue, delay_ms = read_bool(fields[2], "requeue"), read_uint(fields[3], "delay_ms")
            extra_problem = nack_problem(requeue, delay_ms)
            action = partial(queue_flow.nack, core, queue, leases, requeue, delay_ms)
        else:
            lease_ms = read_uint(fields[2], "lease_ms")
            extra_problem = extend_problem(lease_ms)
            action = partial(queue_flow.extend_lease, core, queue, leases, lease_ms)
        return self._execute(
            now_ms, lambda: settle_problem(now_ms, queue, leases) or extra_problem, action
        )

    def _execute(
        self, now_ms: int, problem: Callable[[], str | None], action: Callable[[], Result]
    ) -> Result:
        try:
            invalid = problem()
            if invalid is not None:
                return ErrorResult(INVALID_ARGUMENT, invalid)
            core = self._core
            if now_ms > core.now_ms:
                core.now_ms = now_ms
            core.producers.expire_idle(core.now_ms)
            core.fire_due_timers()
            return action()
        except Exception as error:  # a bug must not take the replica down; same on every replica
            self._core.pending_dead_letters.clear()
            return ErrorResult(INTERNAL_ERROR, f"{type(error).__name__}: {error}")

    def _publish(self, cmd: Publish) -> Result:
        messages = [[m.routing_key, m.body, m.headers, m.ttl_ms, m.delay_ms] for m in cmd.messages]
        return queue_flow.publish(
            self._core, cmd.exchange, messages, cmd.producer_id, cmd.sequence, cmd.max_total_bytes
        )

    def snapshot(self) -> bytes:
        return encode_snapshot(self._core)

    def restore(self, data: bytes) -> None:
        self._core = decode_snapshot(data)  # raises SnapshotError; leaves self untouched then

    # ------------------------------------------------------------ admin commands

    def _declare_exchange(self, cmd: DeclareExchange) -> Result:
        exchanges = self._core.router.exchanges
        found = exchanges.get(cmd.name)
        if found is None:
            exchanges[cmd.name] = Exchange(cmd.name, cmd.type, cmd.alternate_exchange)
            return OkResult(created=True)
        if found.type != cmd.type or found.alternate_exchange != cmd.alternate_exchange:
            return ErrorResult(
                PRECONDITION_FAILED,
                f"exchange {cmd.name!r} exists as type {found.type!r} with alternate exchange "
                f"{found.alternate_exchange!r}",
            )
        return OkResult(created=False)

    def _delete_exchange(self, cmd: DeleteExchange) -> Result:
        router = self._core.router
        found = router.exchanges.get(cmd.name)
        if found is None:
            return _no_exchange(cmd.name)
        if cmd.if_unused and found.bindings:
            return ErrorResult(IN_USE, f"exchange {cmd.name!r} has {len(found.bindings)} bindings")
        router.remove_exchange(cmd.name)
        return OkResult()

    def _declare_queue(self, cmd: DeclareQueue) -> Result:
        queues = self._core.queues
        found = queues.get(cmd.name)
        if found is None:
            queues[cmd.name] = QueueState(cmd.name, cmd.args)
            return OkResult(created=True)
        if found.args != cmd.args:
            return ErrorResult(
                PRECONDITION_FAILED, f"queue {cmd.name!r} exists with other args {found.args}"
            )
        return OkResult(created=False)

    def _delete_queue(self, cmd: DeleteQueue) -> Result:
        core = self._core
        queue = core.queues.get(cmd.name)
        if queue is None:
            return _no_queue(cmd.name)
        if cmd.if_empty and queue.messages:
            return ErrorResult(IN_USE, f"queue {cmd.name!r} holds {len(queue.messages)} messages")
        core.router.remove_queue(cmd.name)
        for msg in queue.messages.values():
            core.release(msg.stored)
        core.message_count -= len(queue.messages)
        del core.queues[cmd.name]
        core.ready_notifications.pop(cmd.name, None)
        return OkResult()

    def _purge_queue(self, cmd: PurgeQueue) -> Result:
        core = self._core
        queue = core.queues.get(cmd.name)
        if queue is None:
            return _no_queue(cmd.name)
        removed = queue.remove_unleased()
        for msg in removed:
            core.release(msg.stored)
        core.message_count -= len(removed)
        return PurgeResult(len(removed))

    def _binding_targets_exist(self, exchange: str, queue: str) -> ErrorResult | None:
        if exchange not in self._core.router.exchanges:
            return _no_exchange(exchange)
        if queue not in self._core.queues:
            return _no_queue(queue)
        return None

    def _bind(self, cmd: Bind) -> Result:
        missing = self._binding_targets_exist(cmd.exchange, cmd.queue)
        if missing is not None:
            return missing
        return OkResult(created=self._core.router.bind(cmd.exchange, cmd.queue, cmd.binding_key))

    def _unbind(self, cmd: Unbind) -> Result:
        missing = self._binding_targets_exist(cmd.exchange, cmd.queue)
        if missing is not None:
            return missing
        self._core.router.unbind(cmd.exchange, cmd.queue, cmd.binding_key)
        return OkResult()

    # ------------------------------------------------------------ queries

    def list_exchanges(self) -> list[ExchangeInfo]:
        default = ExchangeInfo(DEFAULT_EXCHANGE, DIRECT, None, 0)
        return [default, *(_exchange_info(e) for e in self._core.router.exchanges.values())]

    def exchange_info(self, name: str) -> ExchangeInfo | None:
        if name == DEFAULT_EXCHANGE:
            return ExchangeInfo(DEFAULT_EXCHANGE, DIRECT, None, 0)
        found = self._core.router.exchanges.get(name)
        return None if found is None else _exchange_info(found)

    def list_queues(self) -> list[QueueInfo]:
        now = self._core.now_ms
        return [_queue_info(q, now) for q in self._core.queues.values()]

    def queue_info(self, name: str) -> QueueInfo | None:
        found = self._core.queues.get(name)
        return None if found is None else _queue_info(found, self._core.now_ms)

    def list_bindings(
        self, exchange: str | None = None, queue: str | None = None
    ) -> list[BindingInfo]:
        found: list[BindingInfo] = []
        for name, ex in self._core.router.exchanges.items():
            if exchange is not None and name != exchange:
                continue
            for bound_queue, key in ex.bindings:
                if queue is None or bound_queue == queue:
                    found.append(BindingInfo(name, bound_queue, key))
        return found

    def ready_count(self, queue: str) -> int:
        found = self._core.queues.get(queue)
        return 0 if found is None else found.count[READY]

    def has_queue(self, name: str) -> bool:
        return name in self._core.queues

    def has_exchange(self, name: str) -> bool:
        return name == DEFAULT_EXCHANGE or name in self._core.router.exchanges

    def next_deadline_ms(self) -> int | None:
        return self._core.next_deadline_ms()

    def drain_ready_notifications(self) -> list[str]:
        names = list(self._core.ready_notifications)
        self._core.ready_notifications.clear()
        return names

    @property
    def now_ms(self) -> int:
        return self._core.now_ms

    @property
    def total_body_bytes(self) -> int:
        return self._core.total_body_bytes

    @property
    def message_count(self) -> int:
        return self._core.message_count

    @property
    def dead_letter_dropped(self) -> int:
        return self._core.dead_letter_dropped

    @property
    def producer_count(self) -> int:
        return len(self._core.producers)


def _exchange_info(exchange: Exchange) -> ExchangeInfo:
    return ExchangeInfo(
        exchange.name, exchange.type, exchange.alternate_exchange, len(exchange.bindings)
    )


def _queue_info(queue: QueueState, now_ms: int) -> QueueInfo:
    c = queue.counters
    return QueueInfo(
        name=queue.name,
        args=queue.args,
        ready=queue.count[READY],
        delayed=queue.count[DELAYED],
        leased=queue.count[LEASED],
        bytes=sum(queue.size),
        consumers=queue.active_consumers(now_ms),
        published=c.published,
        delivered=c.delivered,
        redelivered=c.redelivered,
        acked=c.acked,
        nacked=c.nacked,
        expired=c.expired,
        dead_lettered=c.dead_lettered,
        dropped=c.dropped,
    )


def _no_queue(name: str) -> ErrorResult:
    return ErrorResult(QUEUE_NOT_FOUND, f"queue {name!r} does not exist")


def _no_exchange(name: str) -> ErrorResult:
    return ErrorResult(EXCHANGE_NOT_FOUND, f"exchange {name!r} does not exist")
