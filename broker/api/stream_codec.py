"""Request validation for streams: declare args, publish batches (the hot path, checked inline
in the common shape like queue publishes), fetch query strings and consumer-group bodies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from raftmq.broker.api.codec import (
    MAX_HEADERS,
    MAX_KEY_CHARS,
    MAX_NAME_FIELD_CHARS,
    MAX_SEQUENCE,
    Fields,
    check_name,
)
from raftmq.broker.api.errors import bad_request
from raftmq.broker.api.limits import ApiLimits

# Shared with queue publishes on purpose: headers count towards a message's size alike.
from raftmq.broker.api.publish_codec import headers_size, plain_headers_size
from raftmq.broker.stream_commands import StreamArgs
from raftmq.broker.stream_validation import (
    MAX_PARTITIONS,
    MAX_SESSION_TIMEOUT_MS,
    MAX_STREAM_PUBLISH_MESSAGES,
    MIN_SESSION_TIMEOUT_MS,
)
from raftmq.broker.value_checks import MAX_COUNT, MAX_DURATION_MS
from raftmq.client import errors as codes
from raftmq.client.wire import WireValueError, body_from_wire, headers_from_wire

__all__ = [
    "DEFAULT_FETCH_BYTES",
    "DEFAULT_FETCH_MESSAGES",
    "DEFAULT_SESSION_TIMEOUT_MS",
    "EARLIEST",
    "LATEST",
    "MAX_FETCH_MESSAGES",
    "OFFSET",
    "TIMESTAMP",
    "CommitRequest",
    "FetchRequest",
    "StreamPublishRequest",
    "parse_commit",
    "parse_fetch_query",
    "parse_join",
    "parse_member",
    "parse_partition",
    "parse_stream_args",
    "parse_stream_publish",
]

DEFAULT_FETCH_MESSAGES = 1000
MAX_FETCH_MESSAGES = 10_000
DEFAULT_FETCH_BYTES = 1_048_576
DEFAULT_SESSION_TIMEOUT_MS = 10_000
# Where a fetch starts (FetchRequest.start).
OFFSET, EARLIEST, LATEST, TIMESTAMP = "offset", "earliest", "latest", "timestamp"
# Decimal digits of the largest integer any query parameter takes (MAX_COUNT = 2**62).
_MAX_QUERY_DIGITS = 19


def parse_partition(text: str) -> int:
    """A partition number from a URL path segment."""
    return _decimal(text, "partition", 0, MAX_PARTITIONS - 1)


def _decimal(text: str, name: str, minimum: int, maximum: int) -> int:
    # isdecimal() alone would take non-ASCII digits, and int() would take "+1", " 1" and "1_0".
    if not (text.isascii() and text.isdecimal() and len(text) <= _MAX_QUERY_DIGITS):
        raise bad_request(f"'{name}' must be a non-negative decimal integer")
    value = int(text)
    if not minimum <= value <= maximum:
        raise bad_request(f"'{name}' must be between {minimum} and {maximum}")
    return value


# -- declare ------------------------------------------------------------------------------------

_STREAM_ARG_FIELDS = frozenset(
    {"partitions", "max_age_ms", "max_bytes", "max_messages", "max_message_bytes"}
)


def parse_stream_args(document: object) -> StreamArgs:
    fields = Fields(document, _STREAM_ARG_FIELDS)
    return StreamArgs(
        partitions=fields.int_("partitions", 1, 1, MAX_PARTITIONS),
        max_age_ms=fields.optional_int("max_age_ms", 1, MAX_DURATION_MS),
        max_bytes=fields.optional_int("max_bytes", 1, MAX_COUNT),
        max_messages=fields.optional_int("max_messages", 1, MAX_COUNT),
        max_message_bytes=fields.optional_int("max_message_bytes", 1, MAX_COUNT),
    )


# -- publish ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamPublishRequest:
    # The command's wire form, [key, partition, body, headers] per message, encoded as is.
    messages: list[list[Any]]
    producer_id: str | None
    sequence: int | None


_MESSAGE_FIELDS = frozenset({"body", "body_b64", "key", "partition", "headers"})


def parse_stream_publish(document: object, limits: ApiLimits) -> StreamPublishRequest:
    fields = Fields(document, frozenset({"messages", "producer_id", "sequence"}))
    max_messages = min(limits.max_batch_messages, MAX_STREAM_PUBLISH_MESSAGES)
    raw_messages = fields.list_("messages", max_messages, codes.BATCH_TOO_LARGE)
    max_message_bytes = limits.max_message_bytes
    messages: list[list[Any]] = []
    append = messages.append
    for index, raw in enumerate(raw_messages):
        message = _plain_message(raw, max_message_bytes)
        append(message if message is not None else _parse_message(raw, index, limits))
    producer_id = fields.optional_str("producer_id", MAX_NAME_FIELD_CHARS)
    sequence = fields.optional_int("sequence", 0, MAX_SEQUENCE)
    if (producer_id is None) != (sequence is None):
        raise bad_request("'producer_id' and 'sequence' must be given together")
    if producer_id is not None:
        check_name("producer", producer_id)
    return StreamPublishRequest(messages, producer_id, sequence)


def _plain_message(raw: object, max_message_bytes: int) -> list[Any] | None:
    """The common message shape, checked inline with exact types; None for anything else,
    which `_parse_message` then accepts or refuses with its own error: this path changes
    speed only, never an answer."""
    if type(raw) is not dict:
        return None
    # Counts down the fields taken here: any other (`body_b64`, a typo, an explicit null)
    # leaves it above 1.
    unseen_fields = len(raw)
    body = raw.get("body")
    if type(body) is str and body.isascii():
        body = body.encode()
    elif type(body) is not bytes:
        return None
    key = raw.get("key")
    if key is not None:
        if type(key) is not str or len(key) > MAX_KEY_CHARS:
            return None
        unseen_fields -= 1
    partition = raw.get("partition")
    if partition is not None:
        if type(partition) is not int or not 0 <= partition < MAX_PARTITIONS:
            return None
        unseen_fields -= 1
    headers = raw.get("headers")
    size = len(body)
    if headers is None:
        headers = {}
    elif type(headers) is not dict:
        return None
    else:
        unseen_fields -= 1
        if headers:
            headers_size = plain_headers_size(headers)
            if headers_size < 0:
                return None
            size += headers_size
    if unseen_fields != 1 or size > max_message_bytes:
        return None
    return [key, partition, body, headers]


def _parse_message(raw: object, index: int, limits: ApiLimits) -> list[Any]:
    where = f"messages[{index}]"
    fields = Fields(raw, _MESSAGE_FIELDS, where)
    if fields.has("body") and fields.has("body_b64"):
        raise bad_request(f"{where}: give only one of 'body' and 'body_b64'")
    key = fields.optional_str("key", MAX_KEY_CHARS)
    partition = fields.optional_int("partition", 0, MAX_PARTITIONS - 1)
    try:
        body = body_from_wire({k: fields.raw(k) for k in ("body", "body_b64") if fields.has(k)})
        headers = headers_from_wire(fields.raw("headers"))
    except WireValueError as exc:
        raise bad_request(f"{where}: {exc}") from None
    if len(headers) > MAX_HEADERS:
        raise bad_request(f"{where}: more than {MAX_HEADERS} headers")
    size = len(body) + headers_size(headers, where)
    if size > limits.max_message_bytes:
        raise bad_request(
            f"{where}: {size} bytes exceeds the limit of {limits.max_message_bytes}",
            codes.MESSAGE_TOO_LARGE,
        )
    return [key, partition, body, headers]


# -- fetch --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchRequest:
    start: str  # OFFSET, EARLIEST, LATEST or TIMESTAMP
    position: int  # the offset (OFFSET) or timestamp_ms (TIMESTAMP); 0 otherwise
    max_messages: int
    max_bytes: int
    wait_ms: int
    min_applied_index: int | None


_FETCH_PARAMS = frozenset(
    {"offset", "timestamp_ms", "max_messages", "max_bytes", "wait_ms", "min_applied_index"}
)


def parse_fetch_query(query: Mapping[str, str], limits: ApiLimits) -> FetchRequest:
    """The fetch query string. Limits beyond the server's caps are lowered to them (a client
    cannot know this node's limits), never refused."""
    for name in query:
        if name not in _FETCH_PARAMS:
            raise bad_request(f"unknown query parameter {name[:64]!r}")
    if len(query) != len(set(query)):
        raise bad_request("each query parameter may be given once")
    start, position = _fetch_start(query)
    max_bytes_cap = limits.max_request_bytes
    return FetchRequest(
        start=start,
        position=position,
        max_messages=min(_query_int(query, "max_messages", DEFAULT_FETCH_MESSAGES, 1),
                         MAX_FETCH_MESSAGES),
        max_bytes=min(_query_int(query, "max_bytes", DEFAULT_FETCH_BYTES, 1), max_bytes_cap),
        wait_ms=min(_query_int(query, "wait_ms", 0, 0), limits.max_wait_ms),
        min_applied_index=(
            _decimal(query["min_applied_index"], "min_applied_index", 0, MAX_COUNT)
            if "min_applied_index" in query else None
        ),
    )


def _fetch_start(query: Mapping[str, str]) -> tuple[str, int]:
    offset = query.get("offset")
    timestamp = query.get("timestamp_ms")
    if (offset is None) == (timestamp is None):
        raise bad_request("give exactly one of 'offset' (a number, earliest or latest) and "
                          "'timestamp_ms'")
    if timestamp is not None:
        return TIMESTAMP, _decimal(timestamp, "timestamp_ms", 0, MAX_COUNT)
    assert offset is not None
    if offset in (EARLIEST, LATEST):
        return offset, 0
    if not (offset.isascii() and offset.isdecimal()):
        raise bad_request("'offset' must be a non-negative integer, earliest or latest")
    return OFFSET, _decimal(offset, "offset", 0, MAX_COUNT)


def _query_int(query: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    text = query.get(name)
    return default if text is None else _decimal(text, name, minimum, MAX_COUNT)


# -- consumer groups ----------------------------------------------------------------------------


def _member(fields: Fields) -> str:
    return check_name("consumer", fields.str_("member", MAX_NAME_FIELD_CHARS))


def parse_join(document: object) -> tuple[str, int]:
    """(member, session_timeout_ms) of a join."""
    fields = Fields(document, frozenset({"member", "session_timeout_ms"}))
    member = _member(fields)
    timeout_ms = fields.int_("session_timeout_ms", DEFAULT_SESSION_TIMEOUT_MS,
                             MIN_SESSION_TIMEOUT_MS, MAX_SESSION_TIMEOUT_MS)
    return member, timeout_ms


def parse_member(document: object) -> str:
    """The member of a heartbeat or leave."""
    return _member(Fields(document, frozenset({"member"})))


@dataclass(frozen=True)
class CommitRequest:
    member: str | None  # None: a standalone commit (the group must have no members)
    generation: int
    offsets: tuple[tuple[int, int], ...]  # (partition, next offset), ascending


def parse_commit(document: object) -> CommitRequest:
    fields = Fields(document, frozenset({"member", "generation", "offsets"}))
    member = None
    if fields.raw("member") is not None:
        member = _member(fields)
    generation = fields.optional_int("generation", 0, MAX_COUNT)
    if member is not None and generation is None:
        raise bad_request("'generation' is required with 'member' (from its join or heartbeat)")
    if member is None and generation:
        raise bad_request("a commit without 'member' must have no 'generation' (or 0)")
    return CommitRequest(member, generation or 0, _commit_offsets(fields.raw("offsets")))


def _commit_offsets(raw: object) -> tuple[tuple[int, int], ...]:
    if not isinstance(raw, dict):
        raise bad_request("'offsets' must be a map of partition to next offset")
    if not raw:
        raise bad_request("'offsets' must not be empty")
    if len(raw) > MAX_PARTITIONS:
        raise bad_request(f"'offsets' has more than {MAX_PARTITIONS} partitions")
    pairs: dict[int, int] = {}
    for key, value in raw.items():
        shown = str(key)[:16]
        partition = parse_partition(key) if isinstance(key, str) else -1
        if partition < 0:
            raise bad_request(f"'offsets' key {shown!r} is not a partition number")
        if type(value) is not int or not 0 <= value <= MAX_COUNT:
            raise bad_request(f"'offsets.{shown}' must be an integer in 0..{MAX_COUNT}")
        if partition in pairs:  # "1" and "01" name the same partition
            raise bad_request(f"'offsets' names partition {partition} twice")
        pairs[partition] = value
    return tuple(sorted(pairs.items()))
