"""Reading commands off the wire: msgpack arrays checked field by field.

Shared by `commands.decode_command` and by the hot path of `BrokerState.apply`, which works on
the checked wire form (plain lists) directly instead of building a dataclass per message.
Every check raises CommandDecodeError with the same text on both paths.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import msgpack

__all__ = [
    "CommandDecodeError",
    "HeaderValue",
    "RawPublish",
    "message_type_problem",
    "read_bool",
    "read_lease_pairs",
    "read_list",
    "read_opt_str",
    "read_opt_uint",
    "read_publish_fields",
    "read_str",
    "read_uint",
    "unpack_array",
]


HeaderValue: TypeAlias = str | int | float | bool | bytes | None


class CommandDecodeError(ValueError):
    """The bytes are not a well-formed command of a known kind and version."""


def unpack_array(data: bytes) -> list[Any]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _fail("a command must be bytes")
    try:
        items = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as error:  # msgpack raises a zoo of types for garbage; all mean "malformed"
        raise _fail(f"not a msgpack command: {type(error).__name__}") from None
    if type(items) is not list or len(items) < 3:
        raise _fail("a command must be an array [version, kind, now_ms, ...]")
    return items


def _fail(message: str) -> CommandDecodeError:
    return CommandDecodeError(message)


def read_uint(value: object, what: str) -> int:
    # `type(...) is int` on purpose: bool is an int subclass but never a valid number here.
    if type(value) is not int or value < 0:
        raise _fail(f"{what} must be a non-negative integer")
    return value


def read_opt_uint(value: object, what: str) -> int | None:
    return None if value is None else read_uint(value, what)


def read_str(value: object, what: str) -> str:
    if type(value) is not str:
        raise _fail(f"{what} must be a string")
    return value


def read_opt_str(value: object, what: str) -> str | None:
    return None if value is None else read_str(value, what)


def read_bool(value: object, what: str) -> bool:
    if type(value) is not bool:
        raise _fail(f"{what} must be a boolean")
    return value


def read_list(value: object, what: str, length: int | None = None) -> list[Any]:
    if type(value) is not list or (length is not None and len(value) != length):
        shape = "an array" if length is None else f"an array of {length}"
        raise _fail(f"{what} must be {shape}")
    return value


_HEADER_TYPES = (str, int, float, bool, bytes, type(None))


def message_type_problem(value: object) -> str | None:
    """Why a wire message `[routing_key, body, headers, ttl_ms, delay_ms]` is malformed, or None."""
    if type(value) is not list or len(value) != 5:
        return "message must be an array of 5"
    routing_key, body, headers, ttl_ms, delay_ms = value
    if type(routing_key) is not str:
        return "routing key must be a string"
    if type(body) is not bytes:
        return "message body must be binary"
    if type(headers) is not dict:
        return "message headers must be a map"
    for key, item in headers.items():
        if type(key) is not str:
            return "header names must be strings"
        if type(item) not in _HEADER_TYPES:
            return f"header {key!r} has an unsupported value type"
    if ttl_ms is not None and (type(ttl_ms) is not int or ttl_ms < 0):
        return "ttl_ms must be a non-negative integer"
    if delay_ms is not None and (type(delay_ms) is not int or delay_ms < 0):
        return "delay_ms must be a non-negative integer"
    return None


# The readers below return the wire form (plain lists) with every type checked; the hot path
# (`BrokerState.apply`) works on that form directly instead of building dataclasses.

RawPublish: TypeAlias = tuple[str, list[list[Any]], str | None, int | None, int]


def read_publish_fields(fields: list[Any]) -> RawPublish:
    """(exchange, messages as [routing_key, body, headers, ttl_ms, delay_ms] lists, producer_id,
    sequence, max_total_bytes) from a publish command's fields."""
    exchange = read_str(fields[0], "exchange")
    messages = read_list(fields[1], "messages")
    for message in messages:
        problem = message_type_problem(message)
        if problem is not None:
            raise _fail(problem)
    return (
        exchange,
        messages,
        read_opt_str(fields[2], "producer_id"),
        read_opt_uint(fields[3], "sequence"),
        read_uint(fields[4], "max_total_bytes"),
    )


def read_lease_pairs(value: object) -> list[int]:
    """A flat [message_id, lease_id, message_id, lease_id, ...] list with every type checked."""
    flat = read_list(value, "leases")
    if len(flat) % 2:
        raise _fail("leases must be message_id, lease_id pairs")
    for i in range(0, len(flat), 2):
        read_uint(flat[i], "message_id")
        read_uint(flat[i + 1], "lease_id")
    return flat
