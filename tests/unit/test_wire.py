"""The shared wire format: documents, bodies, headers, results and error payloads."""

from __future__ import annotations

import base64
import json

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftmq.client import errors
from raftmq.client.wire import (
    Headers,
    Message,
    OutgoingMessage,
    PublishReceipt,
    SettleReceipt,
    WireFormat,
    WireValueError,
    body_from_wire,
    body_to_wire,
    decode_document,
    encode_document,
    error_document,
    format_for_content_type,
    headers_from_wire,
    headers_to_wire,
    parse_error_document,
)

FORMATS = [WireFormat.JSON, WireFormat.MSGPACK]

header_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
headers_strategy = st.dictionaries(st.text(min_size=1, max_size=10), header_values, max_size=5)


def through_wire(document: object, wire_format: WireFormat) -> object:
    return decode_document(encode_document(document, wire_format), wire_format)


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", WireFormat.JSON),
        ("application/json; charset=utf-8", WireFormat.JSON),
        ("Application/JSON", WireFormat.JSON),
        ("application/msgpack", WireFormat.MSGPACK),
        ("application/x-msgpack", WireFormat.MSGPACK),
        ("text/plain", None),
        ("", None),
        ("application/x-www-form-urlencoded", None),
    ],
)
def test_format_for_content_type(content_type: str, expected: WireFormat | None) -> None:
    assert format_for_content_type(content_type) is expected


@given(body=st.binary(max_size=200), headers=headers_strategy,
       wire_format=st.sampled_from(FORMATS))
def test_delivered_message_round_trips(
    body: bytes, headers: Headers, wire_format: WireFormat
) -> None:
    message = Message(
        message_id=7, lease_id=9, body=body, headers=headers,
        routing_key="a.b", exchange="ex", delivery_count=2, published_ms=1_000,
        lease_expires_ms=31_000,
    )
    assert Message.from_wire(through_wire(message.to_wire(wire_format), wire_format)) == message


@given(body=st.binary(max_size=200), wire_format=st.sampled_from(FORMATS))
def test_outgoing_message_body_round_trips(body: bytes, wire_format: WireFormat) -> None:
    outgoing = OutgoingMessage(body, routing_key="k", ttl_ms=5, delay_ms=0)
    document = through_wire(outgoing.to_wire(wire_format), wire_format)
    assert isinstance(document, dict)
    assert body_from_wire(document) == body
    assert document["routing_key"] == "k"
    assert document["ttl_ms"] == 5 and document["delay_ms"] == 0


def test_outgoing_message_without_routing_key_omits_it() -> None:
    document = OutgoingMessage(b"x", routing_key="k").to_wire(WireFormat.MSGPACK,
                                                              with_routing_key=False)
    assert "routing_key" not in document
    assert "headers" not in document and "ttl_ms" not in document


def test_json_body_carries_text_only_when_utf8() -> None:
    assert body_to_wire("héllo".encode(), WireFormat.JSON) == {
        "body_b64": base64.b64encode("héllo".encode()).decode(),
        "body": "héllo",
    }
    binary = body_to_wire(b"\xff\x00", WireFormat.JSON)
    assert binary == {"body_b64": "/wA="}


def test_msgpack_body_is_bin() -> None:
    packed = encode_document(body_to_wire(b"\xff", WireFormat.MSGPACK), WireFormat.MSGPACK)
    assert packed == msgpack.packb({"body": b"\xff"}, use_bin_type=True)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"body": "text"}, b"text"),
        ({"body": b"\x00\x01"}, b"\x00\x01"),
        ({"body_b64": "AAE="}, b"\x00\x01"),
        ({"body": ""}, b""),
        ({"body": "ignored", "body_b64": "AAE="}, b"\x00\x01"),
    ],
)
def test_body_from_wire_accepts(document: dict[str, object], expected: bytes) -> None:
    assert body_from_wire(document) == expected


@pytest.mark.parametrize(
    "document",
    [{}, {"body": 5}, {"body": None}, {"body_b64": "not base64!"}, {"body_b64": 12},
     {"body_b64": "AAE"}, {"body_b64": "é"}],
)
def test_body_from_wire_rejects(document: dict[str, object]) -> None:
    with pytest.raises(WireValueError):
        body_from_wire(document)


def test_json_bytes_header_travels_as_b64_object() -> None:
    wire = headers_to_wire({"raw": b"\x01\x02", "n": 3}, WireFormat.JSON)
    assert wire == {"raw": {"b64": "AQI="}, "n": 3}
    assert headers_from_wire(json.loads(json.dumps(wire))) == {"raw": b"\x01\x02", "n": 3}


@pytest.mark.parametrize(
    "value",
    [[1], {"nested": 1}, {"b64": 5}, 2**64, -(2**63) - 1, float("nan"), float("inf")],
)
def test_header_values_are_scalars(value: object) -> None:
    with pytest.raises(WireValueError):
        headers_from_wire({"h": value})


def test_headers_must_be_a_map_with_string_keys() -> None:
    assert headers_from_wire(None) == {}
    with pytest.raises(WireValueError):
        headers_from_wire([("a", 1)])
    with pytest.raises(WireValueError):
        headers_from_wire({1: "x"})


@pytest.mark.parametrize(
    ("data", "wire_format"),
    [
        (b"{", WireFormat.JSON),
        (b"\xff\xfe", WireFormat.JSON),
        (b'{"a": NaN}', WireFormat.JSON),
        (b'{"a": Infinity}', WireFormat.JSON),
        (b"[" * 100_000 + b"]" * 100_000, WireFormat.JSON),
        (b"1" * 5000, WireFormat.JSON),
        (b'{"a": ["ok", "\\ud800"]}', WireFormat.JSON),
        (b'{"\\udfff": 1}', WireFormat.JSON),
        (b"\xc1", WireFormat.MSGPACK),
        (b"\x81\xa1a", WireFormat.MSGPACK),
        (msgpack.packb({"a": 1}) + b"\x00", WireFormat.MSGPACK),
        (msgpack.packb({1: 1}), WireFormat.MSGPACK),
        (b"\x91" * 100_000 + b"\xc0", WireFormat.MSGPACK),
        (b"\x81\xa1a\xa2\xff\xfe", WireFormat.MSGPACK),
    ],
)
def test_decode_document_rejects_malformed(data: bytes, wire_format: WireFormat) -> None:
    with pytest.raises(WireValueError):
        decode_document(data, wire_format)


@pytest.mark.parametrize("wire_format", FORMATS)
def test_publish_receipt_round_trips(wire_format: WireFormat) -> None:
    receipt = PublishReceipt(accepted=2, unroutable=(1,), rejected=(3, 4), duplicate=True,
                             index=42)
    assert PublishReceipt.from_wire(through_wire(receipt.to_wire(), wire_format)) == receipt


@pytest.mark.parametrize("wire_format", FORMATS)
def test_settle_receipt_round_trips(wire_format: WireFormat) -> None:
    receipt = SettleReceipt(settled=1, failures=((5, "lease_expired"), (6, "unknown_message")))
    assert SettleReceipt.from_wire(through_wire(receipt.to_wire(), wire_format)) == receipt


@pytest.mark.parametrize(
    "document",
    [
        None,
        {"accepted": "1", "unroutable": [], "rejected": [], "duplicate": False, "index": 1},
        {"accepted": True, "unroutable": [], "rejected": [], "duplicate": False, "index": 1},
        {"accepted": 1, "unroutable": ["x"], "rejected": [], "duplicate": False, "index": 1},
        {"accepted": 1, "unroutable": [], "rejected": [], "duplicate": 0, "index": 1},
    ],
)
def test_publish_receipt_rejects_wrong_shapes(document: object) -> None:
    with pytest.raises(WireValueError):
        PublishReceipt.from_wire(document)


@pytest.mark.parametrize(
    "failures", [[[1]], [["x", "lease_expired"]], [[1, 2]], [(1, "a")], "nope"],
)
def test_settle_receipt_rejects_wrong_failures(failures: object) -> None:
    with pytest.raises(WireValueError):
        SettleReceipt.from_wire({"settled": 0, "failures": failures})


@pytest.mark.parametrize("wire_format", FORMATS)
@pytest.mark.parametrize("leader", [None, "http://127.0.0.1:8001"])
def test_error_document_round_trips(wire_format: WireFormat, leader: str | None) -> None:
    document = error_document("no_leader", "no leader yet", definite=True, leader=leader)
    parsed = parse_error_document(through_wire(document, wire_format))
    assert parsed is not None
    assert (parsed.code, parsed.message, parsed.definite, parsed.leader) == (
        "no_leader", "no leader yet", True, leader)


@pytest.mark.parametrize(
    "document",
    [
        None,
        {"status": "ok"},
        {"error": "boom"},
        {"error": {"code": "x", "message": "m", "definite": "yes", "leader": None}},
        {"error": {"code": 1, "message": "m", "definite": True, "leader": None}},
        {"error": {"code": "x", "message": "m", "definite": True, "leader": 5}},
    ],
)
def test_parse_error_document_rejects_other_shapes(document: object) -> None:
    assert parse_error_document(document) is None


@pytest.mark.parametrize(
    ("code", "definite", "status", "expected_class"),
    [
        ("invalid_argument", True, 400, errors.InvalidRequestError),
        ("queue_not_found", True, 404, errors.NotFoundError),
        ("precondition_failed", True, 409, errors.ConflictError),
        ("message_too_large", True, 413, errors.TooLargeError),
        ("unsupported_media_type", True, 415, errors.InvalidRequestError),
        ("too_many_waiters", True, 429, errors.UnavailableError),
        ("no_leader", True, 503, errors.UnavailableError),
        ("resource_exhausted", True, 507, errors.UnavailableError),
        ("timeout", False, 503, errors.IndefiniteError),
        ("internal_error", False, 500, errors.IndefiniteError),
        ("decode_error", True, 500, errors.ServerError),
    ],
)
def test_error_for_picks_class(
    code: str, definite: bool, status: int, expected_class: type[errors.RaftMQError]
) -> None:
    error = errors.error_for(code, "m", definite=definite, leader="http://x", status=status)
    assert type(error) is expected_class
    assert (error.code, error.definite, error.leader, error.status) == (
        code, definite, "http://x", status)


def test_every_code_has_a_status_consistent_with_definiteness() -> None:
    for code, status in errors.STATUS_BY_CODE.items():
        assert 400 <= status < 600
        if code in errors.INDEFINITE_CODES:
            assert status >= 500, code
    assert errors.status_for_code("made_up") == 500
