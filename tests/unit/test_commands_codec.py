"""Command codec: round trips, strict decoding of malformed input, fuzzing, and the hot path
of BrokerState.apply agreeing with the typed path."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftmq.broker.commands import (
    CODEC_VERSION,
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
    LeaseRef,
    Nack,
    OutMessage,
    Publish,
    PurgeQueue,
    QueueArgs,
    Tick,
    Unbind,
    decode_command,
    encode_command,
)
from raftmq.broker.queue_validation import validate_command
from raftmq.broker.results import ClaimResult, ErrorResult
from raftmq.broker.state import BrokerState

uint = st.integers(min_value=0, max_value=2**63 - 1)
small = st.integers(min_value=0, max_value=3000)
opt_uint = st.none() | uint
text = st.text(max_size=12)
opt_text = st.none() | text
header_value = st.one_of(
    st.text(max_size=5),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.binary(max_size=5),
    st.none(),
)
headers = st.dictionaries(st.text(max_size=6), header_value, max_size=3)
out_message = st.builds(OutMessage, text, st.binary(max_size=20), headers, opt_uint, opt_uint)
lease_refs = st.lists(st.builds(LeaseRef, uint, uint), max_size=4).map(tuple)
queue_args = st.builds(QueueArgs, opt_uint, opt_uint, text, opt_uint, opt_uint, opt_text, opt_text)

commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(DeclareExchange, uint, text, text, opt_text),
    st.builds(DeleteExchange, uint, text, st.booleans()),
    st.builds(DeclareQueue, uint, text, queue_args),
    st.builds(DeleteQueue, uint, text, st.booleans()),
    st.builds(PurgeQueue, uint, text),
    st.builds(Bind, uint, text, text, text),
    st.builds(Unbind, uint, text, text, text),
    st.builds(
        Publish, uint, text, st.lists(out_message, max_size=4).map(tuple), opt_text, opt_uint, uint
    ),
    st.builds(Claim, uint, text, text, uint, uint),
    st.builds(Ack, uint, text, lease_refs),
    st.builds(Nack, uint, text, lease_refs, st.booleans(), uint),
    st.builds(ExtendLease, uint, text, lease_refs, uint),
    st.builds(Tick, uint),
)


@given(commands)
def test_round_trip(cmd: Command) -> None:
    assert decode_command(encode_command(cmd)) == cmd


def test_encoding_is_a_compact_array() -> None:
    data = encode_command(Claim(5, "q", "c", 10, 1000))
    assert msgpack.unpackb(data) == [CODEC_VERSION, 9, 5, "q", "c", 10, 1000]


def pack(*items: Any) -> bytes:
    data: bytes = msgpack.packb(list(items), use_bin_type=True)
    return data


MALFORMED = {
    "empty": b"",
    "not msgpack": b"\xc1",
    "trailing bytes": pack(1, 13, 0) + b"\x00",
    "map, not array": msgpack.packb({"v": 1}),
    "too short": pack(1, 13),
    "wrong version": pack(2, 13, 0),
    "bool version": pack(True, 13, 0),
    "unknown kind": pack(1, 99, 0),
    "bool kind": pack(1, True, 0),
    "string kind": pack(1, "tick", 0),
    "arity": pack(1, 13, 0, "extra"),
    "negative now": pack(1, 13, -1),
    "float now": pack(1, 13, 1.5),
    "bool now": pack(1, 13, False),
    "nil now": pack(1, 13, None),
    "name not str": pack(1, 5, 0, b"bytes-name"),
    "flag not bool": pack(1, 4, 0, "q", 1),
    "queue args short": pack(1, 3, 0, "q", [None] * 6),
    "queue args negative": pack(1, 3, 0, "q", [-1, None, "reject-publish", None, None, None, None]),
    "messages not list": pack(1, 8, 0, "", "m", None, None, 0),
    "message short": pack(1, 8, 0, "", [["k", b"b", {}, None]], None, None, 0),
    "body is str": pack(1, 8, 0, "", [["k", "text", {}, None, None]], None, None, 0),
    "headers not map": pack(1, 8, 0, "", [["k", b"b", [], None, None]], None, None, 0),
    "header name bytes": pack(1, 8, 0, "", [["k", b"b", {b"n": 1}, None, None]], None, None, 0),
    "header value list": pack(1, 8, 0, "", [["k", b"b", {"n": [1]}, None, None]], None, None, 0),
    "negative ttl": pack(1, 8, 0, "", [["k", b"b", {}, -1, None]], None, None, 0),
    "float delay": pack(1, 8, 0, "", [["k", b"b", {}, None, 1.0]], None, None, 0),
    "negative sequence": pack(1, 8, 0, "", [], "p", -1, 0),
    "negative max bytes": pack(1, 8, 0, "", [], None, None, -5),
    "odd leases": pack(1, 10, 0, "q", [1, 2, 3]),
    "negative lease": pack(1, 10, 0, "q", [1, -2]),
    "lease not int": pack(1, 10, 0, "q", [1, "2"]),
    "nested leases": pack(1, 10, 0, "q", [[1, 2]]),
    "claim bool count": pack(1, 9, 0, "q", "c", True, 1000),
    "nack requeue int": pack(1, 11, 0, "q", [], 1, 0),
    "extension type": msgpack.packb([1, 13, msgpack.ExtType(5, b"x")]),
    "int map key": msgpack.packb([1, 8, 0, "", [["k", b"b", {1: 1}, None, None]], None, None, 0]),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_input_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(CommandDecodeError):
        decode_command(data)
    result = BrokerState().apply(data)
    assert isinstance(result, ErrorResult) and result.code == "decode_error"


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(CommandDecodeError):
        decode_command("text")  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    check_decode_and_apply(BrokerState(), data)


def check_decode_and_apply(state: BrokerState, data: bytes) -> None:
    """decode_command raises nothing but CommandDecodeError; apply never raises and reports a
    decode error exactly when decoding fails."""
    try:
        decode_command(data)
        decodable = True
    except CommandDecodeError:
        decodable = False
    result = state.apply(data)
    is_decode_error = isinstance(result, ErrorResult) and result.code == "decode_error"
    assert is_decode_error is not decodable


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=20,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.integers(0, 14), now=st.integers(-2, 5) | st.booleans(),
       fields=st.lists(msgpack_values, max_size=6))
def test_fuzz_structured_garbage(kind: int, now: object, fields: list[object]) -> None:
    """Arrays that look like commands (right version, plausible kind) but with random fields."""
    state = BrokerState()
    state.apply(pack(1, 3, 0, "q", [None, None, "reject-publish", None, None, None, None]))
    check_decode_and_apply(state, pack(1, kind, now, *fields))


@settings(max_examples=300)
@given(cmd=commands, position=st.integers(0, 10_000), value=st.integers(0, 255))
def test_fuzz_corrupted_encodings(cmd: Command, position: int, value: int) -> None:
    data = bytearray(encode_command(cmd))
    data[position % len(data)] = value
    check_decode_and_apply(BrokerState(), bytes(data))


any_text = st.text(max_size=6)  # includes lone surrogates
any_int = st.integers(min_value=-(2**70), max_value=2**70)
loose_messages = st.builds(
    OutMessage,
    any_text,
    st.binary(max_size=4),
    st.dictionaries(any_text, st.one_of(any_text, any_int, st.none()), max_size=2),
    st.none() | any_int,
    st.none() | any_int,
)
loose_commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(Publish, any_int, st.sampled_from(["", "x"]),
              st.lists(loose_messages, max_size=3).map(tuple), st.none() | st.just("p"),
              st.none() | any_int, any_int),
    st.builds(Bind, any_int, st.just("x"), st.just("q"), any_text),
    st.builds(DeclareQueue, any_int, st.just("q"),
              st.builds(QueueArgs, st.none() | any_int, st.none() | any_int,
                        st.sampled_from(["reject-publish", "x"]), st.none() | any_int,
                        st.none() | any_int, st.none() | st.just("dlx"), st.none() | any_text)),
    st.builds(Claim, any_int, st.just("q"), st.just("c"), any_int, any_int),
    st.builds(Nack, any_int, st.just("q"),
              st.lists(st.builds(LeaseRef, any_int, any_int), max_size=2).map(tuple),
              st.booleans(), any_int),
)


@settings(max_examples=300)
@given(loose_commands)
def test_every_valid_command_can_be_encoded(cmd: Command) -> None:
    """What the API layer relies on: validate_command first, then encode cannot fail."""
    if validate_command(cmd) is None:
        assert decode_command(encode_command(cmd)) == cmd


# ---------------------------------------------------------------- hot path == typed path

names = st.sampled_from(["q", "other", "bad name", "amq.x", ""])
near_limits = st.sampled_from([0, 1, 5, 1000, 43_200_000, 43_200_001, 2**40, 2**40 + 1, 2**53 + 1])
hot_messages = st.builds(
    OutMessage,
    st.sampled_from(["q", "other", "k" * 256]),
    st.binary(max_size=8),
    headers,
    st.none() | near_limits,
    st.none() | near_limits,
)
hot_commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(
        Publish,
        near_limits,
        st.sampled_from(["", "x", "missing", "bad name"]),
        st.lists(hot_messages, max_size=4).map(tuple),
        st.none() | names,
        st.none() | st.integers(0, 100),
        st.sampled_from([0, 5, 10**6]),
    ),
    st.builds(Ack, near_limits, names, lease_refs),
    st.builds(Nack, near_limits, names, lease_refs, st.booleans(), near_limits),
    st.builds(ExtendLease, near_limits, names, lease_refs, near_limits),
)


def prepared_state() -> BrokerState:
    state = BrokerState()
    state.apply_command(DeclareQueue(0, "q", QueueArgs(max_length=3)))
    state.apply_command(DeclareExchange(0, "x", "fanout"))
    state.apply_command(Bind(0, "x", "q"))
    state.apply_command(Publish(0, "", (OutMessage("q", b"a"), OutMessage("q", b"b"))))
    claimed = state.apply_command(Claim(0, "q", "c", 1, 1000))
    assert isinstance(claimed, ClaimResult) and len(claimed.deliveries) == 1
    return state


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(cmd=hot_commands)
def test_apply_bytes_agrees_with_apply_command(cmd: Command) -> None:
    via_bytes, via_typed = prepared_state(), prepared_state()
    assert via_bytes.apply(encode_command(cmd)) == via_typed.apply_command(cmd)
    assert via_bytes.snapshot() == via_typed.snapshot()
