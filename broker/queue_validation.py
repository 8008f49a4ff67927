"""Argument checks for commands, run by `apply` before anything changes.

The HTTP layer can call `validate_command` before proposing, to answer 400 without a Raft round
trip; `apply` runs it again because the log is the only thing every replica trusts. It checks
types as well as ranges, so a command built from JSON input cannot sneak a float or a bool in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from raftmq.broker.commands import (
    Ack,
    Bind,
    Claim,
    Command,
    DeclareExchange,
    DeclareQueue,
    DeleteExchange,
    DeleteQueue,
    ExtendLease,
    LeaseRef,
    Nack,
    OutMessage,
    Publish,
    PurgeQueue,
    QueueArgs,
    Tick,
    Unbind,
)
from raftmq.broker.names import MAX_ROUTING_KEY_LEN
from raftmq.broker.queue_state import OVERFLOW_POLICIES
from raftmq.broker.queue_wire import RawPublish, message_type_problem
from raftmq.broker.routing import EXCHANGE_TYPES
from raftmq.broker.stream_validation import STREAM_CHECKS
from raftmq.broker.value_checks import (
    MAX_COUNT,
    MAX_DURATION_MS,
    MAX_TIME_MS,
    count_problem,
    declare_name_problem,
    encodable_problem,
    first_problem,
    flag_problem,
    key_problem,
    name_problem,
    opt_count_problem,
)

__all__ = [
    "MAX_CLAIM_MESSAGES",
    "MAX_COUNT",
    "MAX_DURATION_MS",
    "MAX_LEASE_MS",
    "MAX_PUBLISH_MESSAGES",
    "MAX_SETTLE_LEASES",
    "MAX_TIME_MS",
    "extend_problem",
    "flatten_leases",
    "lease_pairs_problem",
    "message_range_problem",
    "nack_problem",
    "publish_problem",
    "raw_publish_problem",
    "settle_problem",
    "validate_command",
    "validate_queue_args",
]

MAX_CLAIM_MESSAGES = 1000
MAX_LEASE_MS = 43_200_000
MAX_PUBLISH_MESSAGES = 10_000
MAX_SETTLE_LEASES = 10_000

# Short local names: the checks table below reads as a list of rules.
_name = name_problem
_declare_name = declare_name_problem
_key = key_problem
_count = count_problem
_opt_count = opt_count_problem
_flag = flag_problem
_first = first_problem


def validate_queue_args(args: object) -> str | None:
    if not isinstance(args, QueueArgs):
        return "queue args are malformed"
    dlx = args.dead_letter_exchange
    dl_key = args.dead_letter_routing_key
    return _first(
        _opt_count(args.max_length, "max_length"),
        _opt_count(args.max_length_bytes, "max_length_bytes"),
        None if args.overflow in OVERFLOW_POLICIES else f"overflow must be one of {OVERFLOW_POLICIES}",
        _opt_count(args.message_ttl_ms, "message_ttl_ms", 0, MAX_DURATION_MS),
        _opt_count(args.delivery_limit, "delivery_limit", 1),
        None if dlx is None else _name("exchange", dlx),
        None if dl_key is None else _key("dead_letter_routing_key", dl_key),
    )


def message_range_problem(routing_key: str, ttl_ms: int | None, delay_ms: int | None) -> str | None:
    """Range checks of one message whose types are already known to be right."""
    if len(routing_key) > MAX_ROUTING_KEY_LEN:
        return f"routing key is longer than {MAX_ROUTING_KEY_LEN} characters"
    if ttl_ms is not None and ttl_ms > MAX_DURATION_MS:
        return f"ttl_ms must be at most {MAX_DURATION_MS}"
    if delay_ms is not None and delay_ms > MAX_DURATION_MS:
        return f"delay_ms must be at most {MAX_DURATION_MS}"
    return None


def publish_problem(
    exchange: object,
    message_count: int,
    producer_id: object,
    sequence: object,
    max_total_bytes: object,
) -> str | None:
    """Checks of a publish's own fields (not of its messages)."""
    if message_count > MAX_PUBLISH_MESSAGES:
        return f"a publish carries at most {MAX_PUBLISH_MESSAGES} messages"
    producer_error = None
    if producer_id is not None:
        producer_error = _name("producer", producer_id) or _count(sequence, "sequence")
    elif sequence is not None:
        producer_error = "a sequence needs a producer_id"
    return _first(
        _name("exchange", exchange),
        producer_error,
        _count(max_total_bytes, "max_total_bytes"),
    )


def raw_publish_problem(now_ms: int, fields: RawPublish) -> str | None:
    """`validate_command` for a publish in wire form (types already checked by the reader)."""
    exchange, messages, producer_id, sequence, max_total_bytes = fields
    error = _count(now_ms, "now_ms", 0, MAX_TIME_MS) or publish_problem(
        exchange, len(messages), producer_id, sequence, max_total_bytes
    )
    if error is not None:
        return error
    for routing_key, _body, _headers, ttl_ms, delay_ms in messages:
        error = message_range_problem(routing_key, ttl_ms, delay_ms)
        if error is not None:
            return error
    return None


def _publish(cmd: Publish) -> str | None:
    if type(cmd.messages) is not tuple:
        return "messages must be a tuple"
    error = publish_problem(
        cmd.exchange, len(cmd.messages), cmd.producer_id, cmd.sequence, cmd.max_total_bytes
    )
    if error is not None:
        return error
    # Typed as OutMessage, but a command built from untrusted input may hold anything.
    for msg in cast(tuple[object, ...], cmd.messages):
        if not isinstance(msg, OutMessage):
            return "messages must be OutMessage records"
        error = message_type_problem(
            [msg.routing_key, msg.body, msg.headers, msg.ttl_ms, msg.delay_ms]
        ) or message_range_problem(msg.routing_key, msg.ttl_ms, msg.delay_ms) or encodable_problem(
            "routing key", [msg.routing_key], msg.headers
        )
        if error is not None:
            return error
    return None


def lease_pairs_problem(flat: list[int]) -> str | None:
    """Checks of a flat [message_id, lease_id, ...] list."""
    if len(flat) > 2 * MAX_SETTLE_LEASES:
        return f"at most {MAX_SETTLE_LEASES} leases can be settled at once"
    for i in range(0, len(flat), 2):
        error = _count(flat[i], "message_id") or _count(flat[i + 1], "lease_id")
        if error is not None:
            return error
    return None


def _leases(leases: object) -> str | None:
    if type(leases) is not tuple or not all(isinstance(ref, LeaseRef) for ref in leases):
        return "leases must be a tuple of lease refs"
    return lease_pairs_problem(flatten_leases(leases))


def flatten_leases(leases: tuple[LeaseRef, ...]) -> list[int]:
    flat: list[int] = []
    for ref in leases:
        flat.append(ref.message_id)
        flat.append(ref.lease_id)
    return flat


def settle_problem(now_ms: int, queue: str, flat: list[int]) -> str | None:
    """The checks every settle command (ack, nack, extend) starts with, in wire form."""
    return _first(
        _count(now_ms, "now_ms", 0, MAX_TIME_MS), _name("queue", queue), lease_pairs_problem(flat)
    )


def _lease_ms(value: object) -> str | None:
    return _count(value, "lease_ms", 1, MAX_LEASE_MS)


def nack_problem(requeue: object, delay_ms: object) -> str | None:
    return _flag(requeue, "requeue") or _count(delay_ms, "delay_ms", 0, MAX_DURATION_MS)


def extend_problem(lease_ms: object) -> str | None:
    return _lease_ms(lease_ms)


def _binding(cmd: Bind | Unbind) -> str | None:
    if cmd.exchange == "":
        return "the default exchange has no explicit bindings"
    return _first(
        _name("exchange", cmd.exchange),
        _name("queue", cmd.queue),  # or a stream: they share one namespace
        _key("binding key", cmd.binding_key),
    )


def _declare_exchange(cmd: DeclareExchange) -> str | None:
    alternate = cmd.alternate_exchange
    return _first(
        _declare_name("exchange", cmd.name),
        None if cmd.type in EXCHANGE_TYPES else f"exchange type must be one of {EXCHANGE_TYPES}",
        None if alternate is None else _name("exchange", alternate),
    )


_CHECKS: dict[type, Callable[[Any], str | None]] = {
    Publish: _publish,
    Claim: lambda c: _first(
        _name("queue", c.queue),
        _name("consumer", c.consumer),
        _count(c.max_messages, "max_messages", 1, MAX_CLAIM_MESSAGES),
        _lease_ms(c.lease_ms),
    ),
    Ack: lambda c: _name("queue", c.queue) or _leases(c.leases),
    Nack: lambda c: _first(
        _name("queue", c.queue), _leases(c.leases), nack_problem(c.requeue, c.delay_ms)
    ),
    ExtendLease: lambda c: _first(
        _name("queue", c.queue), _leases(c.leases), extend_problem(c.lease_ms)
    ),
    Tick: lambda c: None,
    DeclareExchange: _declare_exchange,
    DeleteExchange: lambda c: _declare_name("exchange", c.name)
    or _flag(c.if_unused, "if_unused"),
    DeclareQueue: lambda c: _declare_name("queue", c.name) or validate_queue_args(c.args),
    DeleteQueue: lambda c: _name("queue", c.name) or _flag(c.if_empty, "if_empty"),
    PurgeQueue: lambda c: _name("queue", c.name),
    Bind: _binding,
    Unbind: _binding,
}


def validate_command(cmd: Command) -> str | None:
    """Why `cmd` is invalid (a message for an `invalid_argument` error), or None."""
    check = _CHECKS.get(type(cmd)) or STREAM_CHECKS.get(type(cmd))
    if check is None:
        return "unknown command type"
    return _count(cmd.now_ms, "now_ms", 0, MAX_TIME_MS) or check(cmd)
