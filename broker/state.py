"""`BrokerState`: the broker's pure, deterministic replicated state machine.

Every replica applies the same commands in the same order and must end in the same state, so
nothing here reads a clock, draws randomness or iterates a set: time is the largest `now_ms`
seen in a command, and every container is an insertion-ordered dict or a list.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from raftmq.broker import queue_flow, stream_flow, topology
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
    INTERNAL_ERROR,
    INVALID_ARGUMENT,
    BindingInfo,
    ErrorResult,
    ExchangeInfo,
    OkResult,
    QueueInfo,
    Result,
)
from raftmq.broker.routing import DIRECT, Exchange
from raftmq.broker.snapshot_codec import decode_snapshot, encode_snapshot
from raftmq.broker.stream_commands import (
    KIND_STREAM_PUBLISH,
    CommitOffsets,
    DeclareStream,
    DeleteStream,
    GroupHeartbeat,
    JoinGroup,
    LeaveGroup,
    StreamPublish,
    read_stream_publish_fields,
)
from raftmq.broker.stream_reader import StreamReader
from raftmq.broker.stream_validation import decoded_stream_publish_problem

__all__ = ["BrokerState"]

_SETTLE_KINDS = (KIND_ACK, KIND_NACK, KIND_EXTEND_LEASE)


class BrokerState:
    """Implements the cluster's StateMachine protocol (apply / snapshot / restore).

    `drop_publish_every=N` is a deliberate bug for testing the chaos checker (`--test-fault`):
    every message whose id is a multiple of N is silently removed from the queues it was just
    stored in, while the publish is still confirmed. Ids are replicated state, so every
    replica drops the same messages and the replicas still agree with each other."""

    def __init__(self, *, drop_publish_every: int | None = None) -> None:
        if drop_publish_every is not None and drop_publish_every < 1:
            raise ValueError("drop_publish_every must be at least 1")
        self._drop_publish_every = drop_publish_every
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
            DeclareExchange: lambda c: topology.declare_exchange(self._core, c),
            DeleteExchange: lambda c: topology.delete_exchange(self._core, c),
            DeclareQueue: lambda c: topology.declare_queue(self._core, c),
            DeleteQueue: lambda c: topology.delete_queue(self._core, c),
            PurgeQueue: lambda c: topology.purge_queue(self._core, c),
            Bind: lambda c: topology.bind(self._core, c),
            Unbind: lambda c: topology.unbind(self._core, c),
            DeclareStream: lambda c: stream_flow.declare_stream(self._core, c),
            DeleteStream: lambda c: stream_flow.delete_stream(self._core, c),
            StreamPublish: lambda c: stream_flow.stream_publish(
                self._core,
                c.stream,
                [[m.key, m.partition, m.body, m.headers] for m in c.messages],
                c.producer_id,
                c.sequence,
                c.max_total_bytes,
            ),
            JoinGroup: lambda c: stream_flow.join_group(self._core, c),
            GroupHeartbeat: lambda c: stream_flow.group_heartbeat(self._core, c),
            LeaveGroup: lambda c: stream_flow.leave_group(self._core, c),
            CommitOffsets: lambda c: stream_flow.commit_offsets(self._core, c),
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
            if kind == KIND_STREAM_PUBLISH:
                return self._apply_raw_stream_publish(items[2], items[3:])
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
            self._with_test_fault(lambda: queue_flow.publish(
                self._core, exchange, messages, producer_id, sequence, max_total_bytes
            )),
        )

    def _apply_raw_stream_publish(self, now_ms: int, raw_fields: list[Any]) -> Result:
        fields = read_stream_publish_fields(raw_fields)
        return self._execute(
            now_ms,
            lambda: decoded_stream_publish_problem(fields),
            lambda: stream_flow.stream_publish(self._core, *fields),
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
            stream_flow.fire_stream_deadlines(core)
            return action()
        except Exception as error:  # a bug must not take the replica down; same on every replica
            self._core.pending_dead_letters.clear()
            return ErrorResult(INTERNAL_ERROR, f"{type(error).__name__}: {error}")

    def _publish(self, cmd: Publish) -> Result:
        messages = [[m.routing_key, m.body, m.headers, m.ttl_ms, m.delay_ms] for m in cmd.messages]
        return self._with_test_fault(lambda: queue_flow.publish(
            self._core, cmd.exchange, messages, cmd.producer_id, cmd.sequence, cmd.max_total_bytes
        ))()

    def _with_test_fault(self, publish: Callable[[], Result]) -> Callable[[], Result]:
        every = self._drop_publish_every
        if every is None:
            return publish

        def publish_then_drop() -> Result:
            core = self._core
            first_id = core.next_message_id
            result = publish()
            # A replayed (duplicate) publish stores nothing and takes no new ids.
            dropped = [i for i in range(first_id, core.next_message_id) if i % every == 0]
            for queue in core.queues.values():
                for message_id in dropped:
                    msg = queue.messages.get(message_id)
                    if msg is not None:
                        core.discard(queue, msg)
            return result

        return publish_then_drop

    def snapshot(self) -> bytes:
        return encode_snapshot(self._core)

    def restore(self, data: bytes) -> None:
        self._core = decode_snapshot(data)  # raises SnapshotError; leaves self untouched then

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

    def streams(self) -> StreamReader:
        """Read-only stream queries; call under the state lock and drop it with the lock."""
        return StreamReader(self._core)

    def drain_stream_appends(self) -> list[tuple[str, int]]:
        appended = list(self._core.stream_appends)
        self._core.stream_appends.clear()
        return appended

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
