"""Request validation at the edge: every field is type- and range-checked before anything is
proposed, so bad input never reaches Raft and always gets a 4xx with a stable code."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from raftmq.broker.api.errors import ApiError, bad_request
from raftmq.broker.api.limits import ApiLimits
from raftmq.broker.commands import LeaseRef, QueueArgs
from raftmq.broker.names import MAX_ROUTING_KEY_LEN, validate_declare_name, validate_name
from raftmq.broker.queue_state import OVERFLOW_POLICIES
from raftmq.broker.queue_validation import (
    MAX_CLAIM_MESSAGES,
    MAX_COUNT,
    MAX_DURATION_MS,
    MAX_LEASE_MS,
    MAX_SETTLE_LEASES,
)
from raftmq.broker.routing import EXCHANGE_TYPES
from raftmq.client import errors as codes

__all__ = [
    "DEFAULT_CONSUMER",
    "MAX_HEADERS",
    "MAX_KEY_CHARS",
    "MAX_NAME_FIELD_CHARS",
    "MAX_SEQUENCE",
    "ClaimRequest",
    "Fields",
    "SettleRequest",
    "check_exchange_name",
    "check_name",
    "parse_binding",
    "parse_claim",
    "parse_exchange_declare",
    "parse_queue_args",
    "parse_settle",
    "query_bool",
]

# Clamped to the state machine's own bounds, so nothing valid here is refused by `apply`.
MAX_KEY_CHARS = MAX_ROUTING_KEY_LEN
MAX_HEADERS = 64
MAX_SEQUENCE = MAX_COUNT
DEFAULT_CONSUMER = "anonymous"
# A cheap first bound on name-like fields; validate_name then applies the real 200-char limit.
MAX_NAME_FIELD_CHARS = 1024
# The integers msgpack can carry (as headers_from_wire enforces).


def check_name(kind: str, name: str, *, declaring: bool = False) -> str:
    """A queue/exchange/consumer name, or ApiError(invalid_name); `declaring` also refuses the
    default exchange and the reserved `amq.` prefix (they cannot be declared or deleted)."""
    problem = validate_declare_name(kind, name) if declaring else validate_name(kind, name)
    if problem is not None:
        raise ApiError(codes.INVALID_NAME, problem)
    return name


def check_exchange_name(name: str) -> str:
    """An exchange name where the default exchange "" is allowed."""
    return check_name("exchange", name)


class Fields:
    """Typed access to one map of a request; unknown fields are errors (typos must not be
    silently ignored, e.g. a misspelt `max_length` would create an unbounded queue)."""

    def __init__(self, document: object, allowed: frozenset[str], where: str = "request") -> None:
        if not isinstance(document, dict):
            # The whole body not being a map is malformed; a nested item is a wrong argument.
            code = codes.MALFORMED_REQUEST if where == "request" else codes.INVALID_ARGUMENT
            raise bad_request(f"{where} must be a map", code)
        for key in document:
            if key not in allowed:
                shown = key if isinstance(key, str) else repr(key)
                raise bad_request(f"unknown field {shown[:64]!r} in {where}")
        self._document: Mapping[str, object] = document
        self._where = where

    def has(self, name: str) -> bool:
        return name in self._document

    def raw(self, name: str) -> object:
        return self._document.get(name)

    def optional_int(self, name: str, minimum: int, maximum: int) -> int | None:
        value = self._document.get(name)
        if value is None:
            return None
        # bool is an int subclass: `true` must not pass as 1.
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad_request(f"'{name}' must be an integer")
        if not minimum <= value <= maximum:
            raise bad_request(f"'{name}' must be between {minimum} and {maximum}")
        return value

    def int_(self, name: str, default: int, minimum: int, maximum: int) -> int:
        value = self.optional_int(name, minimum, maximum)
        return default if value is None else value

    def bool_(self, name: str, default: bool) -> bool:
        value = self._document.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise bad_request(f"'{name}' must be a boolean")
        return value

    def optional_str(self, name: str, max_chars: int) -> str | None:
        value = self._document.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise bad_request(f"'{name}' must be a string")
        if len(value) > max_chars:
            raise bad_request(f"'{name}' is longer than {max_chars} characters")
        return value

    def str_(self, name: str, max_chars: int, default: str | None = None) -> str:
        value = self.optional_str(name, max_chars)
        if value is None:
            if default is None:
                raise bad_request(f"'{name}' is required")
            return default
        return value

    def list_(self, name: str, max_items: int, too_many_code: str = codes.INVALID_ARGUMENT) -> list[object]:
        value = self._document.get(name)
        if not isinstance(value, list):
            raise bad_request(f"'{name}' must be a list")
        if not value:
            raise bad_request(f"'{name}' must not be empty")
        if len(value) > max_items:
            raise bad_request(f"'{name}' has more than {max_items} items", too_many_code)
        return value


def query_bool(query: Mapping[str, str], name: str) -> bool:
    text = query.get(name, "false").strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise bad_request(f"query parameter '{name}' must be true or false")


def parse_exchange_declare(document: object) -> tuple[str, str | None]:
    fields = Fields(document, frozenset({"type", "alternate_exchange"}))
    exchange_type = fields.str_("type", 16)
    if exchange_type not in EXCHANGE_TYPES:
        raise bad_request(f"'type' must be one of {', '.join(EXCHANGE_TYPES)}")
    alternate = fields.optional_str("alternate_exchange", MAX_NAME_FIELD_CHARS)
    if alternate is not None:
        check_name("exchange", alternate)
    return exchange_type, alternate


_QUEUE_ARG_FIELDS = frozenset({
    "max_length", "max_length_bytes", "overflow", "message_ttl_ms", "delivery_limit",
    "dead_letter_exchange", "dead_letter_routing_key",
})


def parse_queue_args(document: object) -> QueueArgs:
    fields = Fields(document, _QUEUE_ARG_FIELDS)
    overflow = fields.str_("overflow", 32, default="reject-publish")
    if overflow not in OVERFLOW_POLICIES:
        raise bad_request(f"'overflow' must be one of {', '.join(OVERFLOW_POLICIES)}")
    dead_letter_exchange = fields.optional_str("dead_letter_exchange", MAX_NAME_FIELD_CHARS)
    if dead_letter_exchange is not None:
        check_exchange_name(dead_letter_exchange)
    return QueueArgs(
        max_length=fields.optional_int("max_length", 0, MAX_COUNT),
        max_length_bytes=fields.optional_int("max_length_bytes", 0, MAX_COUNT),
        overflow=overflow,
        message_ttl_ms=fields.optional_int("message_ttl_ms", 0, MAX_DURATION_MS),
        delivery_limit=fields.optional_int("delivery_limit", 1, MAX_COUNT),
        dead_letter_exchange=dead_letter_exchange,
        dead_letter_routing_key=fields.optional_str("dead_letter_routing_key", MAX_KEY_CHARS),
    )


def parse_binding(fields: Fields) -> tuple[str, str, str]:
    exchange = fields.str_("exchange", MAX_NAME_FIELD_CHARS)
    if exchange == "":
        raise bad_request("the default exchange cannot be bound", codes.INVALID_NAME)
    check_name("exchange", exchange)
    queue = check_name("queue", fields.str_("queue", MAX_NAME_FIELD_CHARS))
    binding_key = fields.str_("binding_key", MAX_KEY_CHARS, default="")
    return exchange, queue, binding_key


@dataclass(frozen=True)
class ClaimRequest:
    max_messages: int
    lease_ms: int
    wait_ms: int
    consumer: str


def parse_claim(document: object, limits: ApiLimits) -> ClaimRequest:
    fields = Fields(document, frozenset({"max_messages", "lease_ms", "wait_ms", "consumer"}))
    consumer = check_name(
        "consumer", fields.str_("consumer", MAX_NAME_FIELD_CHARS, default=DEFAULT_CONSUMER)
    )
    wait_ms = fields.int_("wait_ms", 0, 0, MAX_DURATION_MS)
    return ClaimRequest(
        max_messages=fields.int_(
            "max_messages", 1, 1, min(limits.max_claim_messages, MAX_CLAIM_MESSAGES)
        ),
        lease_ms=fields.int_("lease_ms", 30_000, 1, MAX_LEASE_MS),
        wait_ms=min(wait_ms, limits.max_wait_ms),
        consumer=consumer,
    )


@dataclass(frozen=True)
class SettleRequest:
    leases: tuple[LeaseRef, ...]
    requeue: bool = True
    delay_ms: int = 0
    lease_ms: int = 0


_SETTLE_FIELDS = {
    "ack": frozenset({"leases"}),
    "nack": frozenset({"leases", "requeue", "delay_ms"}),
    "extend": frozenset({"leases", "lease_ms"}),
}


def parse_settle(document: object, action: str, limits: ApiLimits) -> SettleRequest:
    fields = Fields(document, _SETTLE_FIELDS[action])
    max_leases = min(limits.max_batch_messages, MAX_SETTLE_LEASES)
    raw_leases = fields.list_("leases", max_leases, codes.BATCH_TOO_LARGE)
    leases = tuple(_parse_lease(raw, index) for index, raw in enumerate(raw_leases))
    if action == "nack":
        return SettleRequest(leases, requeue=fields.bool_("requeue", True),
                             delay_ms=fields.int_("delay_ms", 0, 0, MAX_DURATION_MS))
    if action == "extend":
        return SettleRequest(leases, lease_ms=fields.int_("lease_ms", 30_000, 1, MAX_LEASE_MS))
    return SettleRequest(leases)


def _parse_lease(raw: object, index: int) -> LeaseRef:
    if not (isinstance(raw, list) and len(raw) == 2):
        raise bad_request(f"leases[{index}] must be a [message_id, lease_id] pair")
    for value in raw:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
            raise bad_request(f"leases[{index}] ids must be non-negative integers")
    return LeaseRef(message_id=raw[0], lease_id=raw[1])
