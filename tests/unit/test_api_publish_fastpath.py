"""The publish fast path (inline message checks, wire-form command, raw encoder) answers exactly
what the general path answers, and writes exactly the bytes `encode_command` writes."""

from __future__ import annotations

import math
from typing import Any
from unittest import mock

import msgpack
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from raftmq.broker.api import publish_codec
from raftmq.broker.api.context import raw_publish_command_problem
from raftmq.broker.api.errors import ApiError
from raftmq.broker.api.limits import ApiLimits
from raftmq.broker.api.publish_codec import PublishRequest, parse_publish
from raftmq.broker.commands import OutMessage, Publish, encode_command, encode_raw_publish
from raftmq.broker.queue_validation import MAX_DURATION_MS, validate_command
from raftmq.broker.queue_wire import RawPublish
from raftmq.client.wire import WireFormat, decode_document
from tests.unit.test_api_fixtures import MODULE_LOOP, Broker, broker, unique

__all__ = ["broker"]

# Small limits so that size and count refusals come up often.
LIMITS = ApiLimits(max_message_bytes=48, max_batch_messages=6)
# Where header counts and name lengths, not sizes, are what refuses a message.
ROOMY_LIMITS = ApiLimits(max_message_bytes=65_536, max_batch_messages=6)

# ------------------------------------------------------------ raw encoder == encode_command

header_value = st.one_of(
    st.text(max_size=5),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.binary(max_size=5),
    st.none(),
)
wire_message = st.tuples(
    st.text(max_size=12),
    st.binary(max_size=40),
    st.dictionaries(st.text(max_size=6), header_value, max_size=3),
    st.none() | st.integers(min_value=0, max_value=2**63 - 1),
    st.none() | st.integers(min_value=0, max_value=2**63 - 1),
).map(list)
raw_publishes = st.tuples(
    st.text(max_size=12),
    st.lists(wire_message, max_size=5),
    st.none() | st.text(max_size=8),
    st.none() | st.integers(min_value=0, max_value=2**63 - 1),
    st.integers(min_value=0, max_value=2**63 - 1),
)


def as_publish(now_ms: int, fields: RawPublish) -> Publish:
    exchange, messages, producer_id, sequence, max_total_bytes = fields
    return Publish(now_ms, exchange, tuple(OutMessage(*m) for m in messages), producer_id,
                   sequence, max_total_bytes)


@given(st.integers(min_value=0, max_value=2**63 - 1), raw_publishes)
def test_raw_encoder_writes_the_bytes_of_encode_command(now_ms: int, fields: RawPublish) -> None:
    assert encode_raw_publish(now_ms, fields) == encode_command(as_publish(now_ms, fields))


# ------------------------------------------------- final check == validate_command

# Anything, of any type, in any field: the final check must agree on all of it.
anything = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(), st.text(max_size=6), st.binary(max_size=6), st.just("\ud800"),
    st.just("k" * 256), st.just(2**62), st.just(MAX_DURATION_MS + 1), st.just([1]), st.just({}),
    st.dictionaries(st.text(max_size=4) | st.just("\udc00") | st.integers(),
                    header_value | st.just("\ud800") | st.just(2**64) | st.just([1]),
                    min_size=1, max_size=3),
)
plain_wire_message: st.SearchStrategy[list[Any]] = st.tuples(
    st.sampled_from(["", "a.b", "k" * 255]), st.binary(max_size=8), st.just({}),
    st.none(), st.none(),
).map(list)


def with_one_changed(message: list[Any], position: int, value: object) -> list[Any]:
    changed = list(message)
    changed[position] = value
    return changed


# Mostly one wrong (or unusual) field in an otherwise plain message: that is where a shortcut
# would let something through.
odd_message = st.one_of(
    plain_wire_message,
    wire_message,
    st.builds(with_one_changed, plain_wire_message, st.integers(0, 4), anything),
    st.builds(with_one_changed, wire_message, st.integers(0, 4), anything),
    st.builds(with_one_changed, plain_wire_message, st.just(2), st.sampled_from([
        {"h": 2**64 - 1}, {"h": 2**64}, {"h": -(2**63)}, {"h": -(2**63) - 1}, {"h": "\ud800"},
        {"\ud800": 1}, {"h": 1}, {1: 1}, {"h": [1]}, {"h": "é"},
    ])),
)

def with_messages(top: tuple[Any, ...], messages: list[Any]) -> Any:
    exchange, producer_id, sequence, max_total_bytes = top
    return (exchange, messages, producer_id, sequence, max_total_bytes)


# (exchange, producer_id, sequence, max_total_bytes) that pass, so the messages get looked at.
valid_top = st.tuples(
    st.sampled_from(["", "ex"]), st.just(None), st.just(None), st.integers(0, 2**62)
) | st.tuples(st.sampled_from(["", "ex"]), st.just("p"), st.integers(0, 3), st.integers(0, 2**62))
odd_top = st.tuples(
    st.sampled_from(["", "ex", "bad name", "amq.direct"]) | anything,
    st.none() | st.sampled_from(["p", "bad p"]) | anything,
    st.none() | st.integers(min_value=0, max_value=3) | anything,
    st.integers(min_value=0, max_value=2**62) | anything,
)
odd_publishes = st.one_of(
    st.builds(with_messages, valid_top, st.lists(odd_message, min_size=1, max_size=2)),
    st.builds(with_messages, odd_top, st.lists(odd_message, max_size=3)),
)
now_values = st.integers(min_value=0, max_value=2**53) | anything


@settings(max_examples=2000)
@given(st.integers(min_value=0, max_value=2**53) | now_values, odd_publishes)
def test_final_check_agrees_with_validate_command(now_ms: Any, fields: RawPublish) -> None:
    problem = raw_publish_command_problem(now_ms, fields)
    assert problem == validate_command(as_publish(now_ms, fields))
    if problem is None:
        # "After it passes, encoding cannot fail."
        encode_raw_publish(now_ms, fields)


# Not representable as an OutMessage, so there is no validate_command answer to compare with.
not_a_wire_message = anything.filter(lambda value: not isinstance(value, list)) | st.lists(
    anything, max_size=6).filter(lambda items: len(items) != 5)


@given(now_values, odd_publishes, not_a_wire_message, st.integers(0, 4))
def test_final_check_refuses_a_message_that_is_not_a_five_item_list(
    now_ms: Any, fields: RawPublish, odd: Any, position: int
) -> None:
    exchange, messages, producer_id, sequence, max_total_bytes = fields
    with_odd = [*messages[:position], odd, *messages[position:]]
    problem = raw_publish_command_problem(
        now_ms, (exchange, with_odd, producer_id, sequence, max_total_bytes)
    )
    assert problem is not None


def test_final_check_names_a_message_that_is_not_a_five_item_list() -> None:
    fields: Any = ("", [["k", b"x", {}, None]], None, None, 0)
    assert raw_publish_command_problem(1, fields) == "message must be an array of 5"


# ------------------------------------------------------ fast parse == general parse

json_text = st.text(max_size=6).filter(lambda text: text.encode("utf-8", "surrogatepass")
                                       == text.encode("utf-8", "ignore"))
field_value = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-5, max_value=70),
    st.sampled_from([MAX_DURATION_MS, MAX_DURATION_MS + 1, 2**64, -(2**63) - 1, 2**64 - 1]),
    st.floats(allow_nan=True), st.just(math.inf), json_text, st.binary(max_size=50),
    st.sampled_from(["q", "k" * 255, "k" * 256, "é", "YQ==", "%%", "x" * 49]),
)
header_map = st.dictionaries(
    st.sampled_from(["h", "", "é", "k" * 255, "k" * 256]) | json_text,
    field_value | st.sampled_from([{"b64": "YQ=="}, {"b64": "%%"}, {"deep": 1}, [1]]),
    max_size=4,
)
# Bodies and headers whose sizes straddle LIMITS.max_message_bytes (48) between them.
plain_message = st.fixed_dictionaries(
    {"body": st.binary(max_size=48) | st.text(max_size=30)},
    optional={
        "routing_key": st.sampled_from(["q", "a.b", "k" * 255]),
        "headers": st.dictionaries(st.sampled_from(["h", "n", "é", "k" * 20]),
                                   st.integers(-3, 3) | st.text(max_size=25) | st.none()
                                   | st.binary(max_size=25), max_size=2),
        "ttl_ms": st.integers(0, 1000), "delay_ms": st.integers(0, 1000),
    },
)
DURATIONS = [0, MAX_DURATION_MS, MAX_DURATION_MS + 1, -1, True, 1.5, None, "1", 2**64]
# (field, value) edits: each field with the values on and around its limits.
EDGE_EDITS: list[tuple[str, object]] = [
    *[("ttl_ms", value) for value in DURATIONS],
    *[("delay_ms", value) for value in DURATIONS],
    *[("routing_key", value)
      for value in ["", "q", "k" * 255, "k" * 256, "é" * 255, "é" * 256, 7, None]],
    *[("body", value)
      for value in [b"x" * 48, b"x" * 49, "x" * 48, "x" * 49, "é" * 24, "é" * 25, 5, None, [1]]],
    *[("headers", value) for value in [
        {"h": "x" * 46}, {"h": "x" * 47}, {"h": "é" * 23}, {"h": "é" * 24}, {"é": b"x" * 45},
        {"é": b"x" * 46}, {"k" * 255: 1}, {"k" * 256: 1}, {"": 1}, {"h": 2**64 - 1},
        {"h": 2**64}, {"h": -(2**63)}, {"h": -(2**63) - 1}, {"h": math.nan}, {"h": -math.inf},
        {"h": 0.5}, {"h": False}, {"h": {"b64": "YQ=="}}, {"h": [1]}, [], "h", None,
        {f"h{i}": None for i in range(64)}, {f"h{i}": None for i in range(65)},
    ]],
    ("body_b64", "YQ=="), ("body_b64", 5), ("color", 1),
]
field_edits = st.sampled_from(EDGE_EDITS) | st.tuples(
    st.sampled_from(["routing_key", "body", "body_b64", "headers", "ttl_ms", "delay_ms"]),
    field_value | header_map,
)


def edited(message: dict[str, Any], edits: list[tuple[str, object]], drop: str | None
           ) -> dict[str, Any]:
    changed = {**message, **dict(edits)}
    if drop is not None:
        changed.pop(drop, None)
    return changed


# Mostly one or two wrong (or unusual) fields in an otherwise plain message: that is where a
# shortcut would let something through.
message_document = st.one_of(
    plain_message,
    st.builds(edited, plain_message, st.lists(field_edits, min_size=1, max_size=2),
              st.none() | st.sampled_from(["body", "routing_key", "headers"])),
    st.dictionaries(st.sampled_from(["routing_key", "body", "headers", "color"]),
                    field_value | header_map, max_size=4),
    field_value,
)
publish_document = st.fixed_dictionaries(
    # Short batches, so that one message's error seldom hides another's (the batch limit and
    # batch errors are covered by the API's bad-input tests).
    {"messages": st.lists(message_document, max_size=3)},
    optional={"exchange": st.sampled_from(["", "ex", "a/b"]),
              "producer_id": st.sampled_from(["p", "bad p"]), "sequence": field_value},
)


def outcome(
    document: object, queue: str | None, limits: ApiLimits
) -> PublishRequest | tuple[str, int, str]:
    try:
        return parse_publish(document, limits, queue=queue)
    except ApiError as error:
        return (error.code, error.status, error.message)


def assert_fast_parse_agrees(document: object, queue: str | None,
                             wire_format: WireFormat, limits: ApiLimits = LIMITS) -> None:
    # As the JSON decoder may give it, or (bytes and all) as msgpack gives it back.
    if wire_format is WireFormat.MSGPACK:
        try:
            data = msgpack.packb(document, use_bin_type=True)
        except OverflowError:
            assume(False)  # a client cannot send what msgpack cannot carry
        document = decode_document(data, wire_format)
    fast = outcome(document, queue, limits)
    with mock.patch.object(publish_codec, "_plain_message", new=lambda *_args: None):
        general = outcome(document, queue, limits)
    assert fast == general


queues = st.none() | st.just("q")
wire_formats = st.sampled_from(list(WireFormat))


@settings(max_examples=2000)
@given(st.builds(edited, plain_message, st.lists(field_edits, min_size=1, max_size=2),
                 st.none() | st.sampled_from(["body", "routing_key", "headers"])),
       queues, wire_formats, st.sampled_from([LIMITS, ROOMY_LIMITS]))
def test_fast_parse_of_one_message_answers_what_the_general_parse_answers(
    message: dict[str, Any], queue: str | None, wire_format: WireFormat, limits: ApiLimits
) -> None:
    assert_fast_parse_agrees({"messages": [message]}, queue, wire_format, limits)


@pytest.mark.parametrize("header_value", [1, 0.5, True, None, "x", "é", b"x", 2**64 - 1])
@pytest.mark.parametrize("body_bytes", range(33, 40))
def test_fast_parse_counts_message_size_like_the_general_parse(
    header_value: object, body_bytes: int
) -> None:
    # Right around LIMITS.max_message_bytes (48): the header counts its name's and its value's
    # UTF-8 bytes (9 for a number, boolean or null).
    for body in (b"x" * body_bytes, "x" * body_bytes):
        headers = {"h": header_value} if body_bytes % 2 else {"é": header_value}
        document = {"messages": [{"body": body, "headers": headers}]}
        assert_fast_parse_agrees(document, None, WireFormat.MSGPACK, LIMITS)


@settings(max_examples=1000)
@given(publish_document, queues, wire_formats)
def test_fast_parse_of_a_batch_answers_what_the_general_parse_answers(
    document: dict[str, Any], queue: str | None, wire_format: WireFormat
) -> None:
    assert_fast_parse_agrees(document, queue, wire_format)


def test_fast_parse_takes_the_common_shape_and_builds_the_wire_form() -> None:
    document = {"exchange": "ex", "producer_id": "p", "sequence": 3, "messages": [
        {"routing_key": "a.b", "body": b"one", "headers": {"n": 1, "t": "x"}, "ttl_ms": 5},
        {"body": "two", "delay_ms": 0},
    ]}
    with mock.patch.object(publish_codec, "_parse_message", side_effect=AssertionError("general")):
        parsed = parse_publish(document, LIMITS)
    assert parsed == PublishRequest("ex", [["a.b", b"one", {"n": 1, "t": "x"}, 5, None],
                                           ["", b"two", {}, None, 0]], "p", 3)


# ------------------------------------------------------------------- through HTTP


@MODULE_LOOP
async def test_msgpack_batch_round_trips_through_the_fast_path(broker: Broker) -> None:
    queue = unique("fast-q")
    response, _ = await broker.call("PUT", f"/v1/queues/{queue}", {})
    assert response.status == 201
    messages = [{"body": bytes([i]) * 100, "headers": {"i": i, "b": b"\x00", "f": 0.5}}
                for i in range(20)]
    messages.append({"body_b64": "aGk=", "headers": {"x": {"b64": "AA=="}}})  # general path
    response, receipt = await broker.call(
        "POST", f"/v1/queues/{queue}/publish", {"messages": messages}, fmt="msgpack"
    )
    assert response.status == 200 and receipt["accepted"] == 21, receipt
    response, claimed = await broker.call(
        "POST", f"/v1/queues/{queue}/claim", {"max_messages": 50}, fmt="msgpack"
    )
    assert response.status == 200
    got = [(m["body"], m["headers"], m["routing_key"]) for m in claimed["messages"]]
    expected = [(m["body"], m["headers"], queue) for m in messages[:20]]
    assert got == [*expected, (b"hi", {"x": b"\x00"}, queue)]
