"""Streams over HTTP against a real single-node broker: declare/inspect/delete, publish
(partitioning, idempotence, limits), fetch (positions, limits, retention, long-poll,
read-your-writes), both wire formats, and the publish parser's fast path."""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlencode

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftmq.broker.api import stream_codec
from raftmq.broker.api.context import CONTEXT_KEY
from raftmq.broker.api.errors import ApiError
from raftmq.broker.api.limits import ApiLimits
from raftmq.broker.api.stream_codec import StreamPublishRequest, parse_stream_publish
from raftmq.broker.commands import encode_command, encode_raw_stream_publish
from raftmq.broker.stream_commands import RawStreamPublish, StreamMessage, StreamPublish
from raftmq.broker.stream_state import partition_for_key
from raftmq.broker.ticker import wall_clock_ms
from raftmq.client import errors
from raftmq.client.wire import WireFormat, decode_document
from tests.unit.test_api_fixtures import (
    MAX_WAITERS,
    MODULE_LOOP,
    TEST_LIMITS,
    Broker,
    broker,
    start_broker,
    stop_broker,
    unique,
    wait_for,
)

__all__ = ["broker"]

MSGPACK = {"Accept": "application/msgpack"}


async def new_stream(broker: Broker, **args: object) -> str:
    name = unique("s")
    response, body = await broker.call("PUT", f"/v1/streams/{name}", dict(args))
    assert response.status == 201, body
    return name


async def publish(broker: Broker, stream: str, messages: list[dict[str, Any]],
                  fmt: str = "json", **top: object) -> dict[str, Any]:
    response, receipt = await broker.call(
        "POST", f"/v1/streams/{stream}/publish", {"messages": messages, **top}, fmt=fmt
    )
    assert response.status == 200, receipt
    result: dict[str, Any] = receipt
    return result


async def fetch(broker: Broker, stream: str, partition: int = 0,
                headers: dict[str, str] | None = None, **query: object) -> tuple[int, Any]:
    path = f"/v1/streams/{stream}/partitions/{partition}/messages?{urlencode(query)}"
    response, body = await broker.call("GET", path, headers=headers)
    return response.status, body


async def fetched(broker: Broker, stream: str, partition: int = 0, **query: object) -> Any:
    status, body = await fetch(broker, stream, partition, None, **query)
    assert status == 200, body
    return body


def bodies(view: dict[str, Any]) -> list[str]:
    return [m["body"] for m in view["messages"]]


# ------------------------------------------------------------------ declare, inspect, delete


@MODULE_LOOP
async def test_declare_inspect_redeclare_and_delete(broker: Broker) -> None:
    name = unique("s")
    args = {"partitions": 3, "max_messages": 100, "max_age_ms": 60_000}
    response, created = await broker.call("PUT", f"/v1/streams/{name}", args)
    assert response.status == 201 and created["created"] is True and created["index"] > 0
    response, again = await broker.call("PUT", f"/v1/streams/{name}", args)
    assert response.status == 200 and again["created"] is False
    response, conflict = await broker.call("PUT", f"/v1/streams/{name}", {"partitions": 2})
    assert response.status == 409 and conflict["error"]["code"] == "precondition_failed"

    response, view = await broker.call("GET", f"/v1/streams/{name}")
    assert response.status == 200
    assert view["name"] == name and view["messages"] == 0 and view["groups"] == []
    assert view["args"] == {"partitions": 3, "max_age_ms": 60_000, "max_bytes": None,
                            "max_messages": 100, "max_message_bytes": None}
    assert [p["partition"] for p in view["partitions"]] == [0, 1, 2]
    _, listed = await broker.call("GET", "/v1/streams")
    assert name in [s["name"] for s in listed["streams"]]

    response, deleted = await broker.call("DELETE", f"/v1/streams/{name}")
    assert response.status == 200 and deleted["deleted"] is True
    for method in ("GET", "DELETE"):
        response, missing = await broker.call(method, f"/v1/streams/{name}")
        assert response.status == 404 and missing["error"]["code"] == "stream_not_found"
    response, refused = await broker.call("POST", f"/v1/streams/{name}/publish",
                                          {"messages": [{"body": "x"}]})
    assert response.status == 404 and refused["error"]["code"] == "stream_not_found"


@MODULE_LOOP
async def test_a_stream_cannot_take_a_queue_name(broker: Broker) -> None:
    name = unique("q")
    await broker.call("PUT", f"/v1/queues/{name}", {})
    response, body = await broker.call("PUT", f"/v1/streams/{name}", {})
    assert response.status == 409 and body["error"]["code"] == "precondition_failed"


# ------------------------------------------------------------------------------ publish


@MODULE_LOOP
async def test_same_key_goes_to_the_same_partition_in_order(broker: Broker) -> None:
    stream = await new_stream(broker, partitions=4)
    keys = ["user-1", "user-2", "user-1", "user-3", "user-1"]
    first = await publish(broker, stream, [{"key": k, "body": f"{k}#{i}"}
                                           for i, k in enumerate(keys)])
    second = await publish(broker, stream, [{"key": "user-1", "body": "user-1#5"}])
    home = partition_for_key("user-1", 4)
    assert [p for p, k in zip(first["partitions"], keys, strict=True) if k == "user-1"] == [home] * 3
    assert second["partitions"] == [home]
    assert first["partitions"] == [partition_for_key(k, 4) for k in keys]
    view = await fetched(broker, stream, home, offset="earliest")
    mine = [m for m in view["messages"] if m["key"] == "user-1"]
    assert [m["body"] for m in mine] == ["user-1#0", "user-1#2", "user-1#4", "user-1#5"]
    offsets = [m["offset"] for m in view["messages"]]
    assert offsets == list(range(len(offsets)))


@MODULE_LOOP
async def test_explicit_partition_and_round_robin(broker: Broker) -> None:
    stream = await new_stream(broker, partitions=3)
    receipt = await publish(broker, stream, [{"body": str(i)} for i in range(6)])
    assert receipt["partitions"] == [0, 1, 2, 0, 1, 2] and receipt["offsets"] == [0, 0, 0, 1, 1, 1]
    receipt = await publish(broker, stream, [{"body": "a", "partition": 2},
                                             {"body": "b", "partition": 2, "key": "k"}])
    assert receipt["partitions"] == [2, 2] and receipt["offsets"] == [2, 3]
    assert bodies(await fetched(broker, stream, 2, offset=0)) == ["2", "5", "a", "b"]
    response, refused = await broker.call("POST", f"/v1/streams/{stream}/publish",
                                          {"messages": [{"body": "x"}, {"body": "y", "partition": 3}]})
    assert response.status == 400 and refused["error"]["code"] == "invalid_argument"
    _, view = await broker.call("GET", f"/v1/streams/{stream}")
    assert view["messages"] == 8  # the refused batch stored nothing, not even its first message


@MODULE_LOOP
async def test_idempotent_retry_returns_the_first_offsets(broker: Broker) -> None:
    stream = await new_stream(broker, partitions=2)
    batch = [{"body": "a"}, {"body": "b", "key": "k"}]
    first = await publish(broker, stream, batch, producer_id="prod-1", sequence=7)
    retry = await publish(broker, stream, batch, producer_id="prod-1", sequence=7)
    assert first["duplicate"] is False and retry["duplicate"] is True
    assert (retry["partitions"], retry["offsets"]) == (first["partitions"], first["offsets"])
    _, view = await broker.call("GET", f"/v1/streams/{stream}")
    assert view["messages"] == 2 and view["counters"]["published"] == 2
    following = await publish(broker, stream, batch, producer_id="prod-1", sequence=8)
    assert following["duplicate"] is False and following["offsets"] != first["offsets"]


@MODULE_LOOP
async def test_stream_message_size_limit_is_413(broker: Broker) -> None:
    stream = await new_stream(broker, max_message_bytes=10)
    response, body = await broker.call("POST", f"/v1/streams/{stream}/publish",
                                       {"messages": [{"body": "x" * 11}]})
    assert response.status == 413 and body["error"]["code"] == "message_too_large"
    assert (await publish(broker, stream, [{"body": "x" * 10}]))["offsets"] == [0]


async def test_memory_limit_is_507(tmp_path: Path) -> None:
    small = await start_broker(tmp_path, ApiLimits(max_message_bytes=4096,
                                                    max_total_body_bytes=10_000))
    try:
        stream = await new_stream(small)
        await publish(small, stream, [{"body": "x" * 4000}, {"body": "x" * 4000}])
        response, body = await small.call("POST", f"/v1/streams/{stream}/publish",
                                          {"messages": [{"body": "x" * 4000}]})
        assert response.status == 507 and body["error"]["code"] == "resource_exhausted"
        assert body["error"]["definite"] is True
        _, view = await small.call("GET", f"/v1/streams/{stream}")
        assert view["messages"] == 2
    finally:
        await stop_broker(small)


# -------------------------------------------------------------------------------- fetch


@MODULE_LOOP
async def test_fetch_by_offset_earliest_latest_and_timestamp(broker: Broker) -> None:
    stream = await new_stream(broker)
    await publish(broker, stream, [{"body": str(i)} for i in range(5)])
    whole = await fetched(broker, stream, offset=0)
    assert bodies(whole) == ["0", "1", "2", "3", "4"]
    assert [m["offset"] for m in whole["messages"]] == [0, 1, 2, 3, 4]
    assert (whole["offset"], whole["next_fetch_offset"], whole["first_offset"],
            whole["next_offset"]) == (0, 5, 0, 5)
    assert bodies(await fetched(broker, stream, offset="earliest")) == bodies(whole)
    assert bodies(await fetched(broker, stream, offset=3)) == ["3", "4"]
    latest = await fetched(broker, stream, offset="latest")
    assert latest["messages"] == [] and latest["offset"] == 5 and latest["next_fetch_offset"] == 5

    stamped = whole["messages"][-1]["timestamp_ms"]
    await wait_for(lambda: wall_clock_ms() > stamped, 2.0, "the clock to pass the last record")
    await publish(broker, stream, [{"body": "later"}])
    assert bodies(await fetched(broker, stream, timestamp_ms=stamped + 1)) == ["later"]
    assert bodies(await fetched(broker, stream, timestamp_ms=0))[0] == "0"
    future = await fetched(broker, stream, timestamp_ms=stamped + 10**9)
    assert future["messages"] == [] and future["offset"] == 6


@MODULE_LOOP
async def test_fetch_honours_max_messages_and_max_bytes(broker: Broker) -> None:
    stream = await new_stream(broker)
    await publish(broker, stream, [{"body": chr(97 + i) * 100} for i in range(10)])
    assert len((await fetched(broker, stream, offset=0, max_messages=3))["messages"]) == 3
    two = await fetched(broker, stream, offset=0, max_bytes=250)
    assert len(two["messages"]) == 2 and two["next_fetch_offset"] == 2
    # One record even if it alone is over max_bytes: a reader never gets stuck.
    one = await fetched(broker, stream, offset=4, max_bytes=1)
    assert bodies(one) == ["e" * 100] and one["next_fetch_offset"] == 5
    # Beyond the server's caps a limit is lowered, not refused.
    capped = await fetched(broker, stream, offset=0, max_messages=10**6, max_bytes=10**15)
    assert len(capped["messages"]) == 10


@MODULE_LOOP
async def test_offset_out_of_range_after_retention_names_the_readable_range(
    broker: Broker,
) -> None:
    stream = await new_stream(broker, max_messages=3)
    await publish(broker, stream, [{"body": str(i)} for i in range(10)])
    for offset in (0, 6, 11):
        status, body = await fetch(broker, stream, offset=offset)
        assert status == 416, body
        error = body["error"]
        assert (error["code"], error["first_offset"], error["next_offset"]) == (
            "offset_out_of_range", 7, 10)
        assert error["definite"] is True and error["message"]
    assert bodies(await fetched(broker, stream, offset="earliest")) == ["7", "8", "9"]
    assert (await fetched(broker, stream, offset=10))["messages"] == []


@MODULE_LOOP
async def test_long_poll_is_woken_by_a_publish(broker: Broker) -> None:
    stream = await new_stream(broker, partitions=2)
    waits = broker.app[CONTEXT_KEY].stream_waits
    poll = asyncio.create_task(fetch(broker, stream, 1, offset="latest", wait_ms=5000))
    await wait_for(lambda: waits.waiter_count == 1, 5.0, "the fetch to wait")
    # An append to another partition does not answer it.
    await publish(broker, stream, [{"body": "other", "partition": 0}])
    await publish(broker, stream, [{"body": "wake", "partition": 1}])
    status, view = await poll
    assert status == 200 and bodies(view) == ["wake"] and view["offset"] == 0
    assert waits.waiter_count == 0


@MODULE_LOOP
async def test_long_poll_times_out_empty(broker: Broker) -> None:
    stream = await new_stream(broker)
    await publish(broker, stream, [{"body": "old"}])
    loop = asyncio.get_running_loop()
    started = loop.time()
    view = await fetched(broker, stream, offset=1, wait_ms=150)
    assert view["messages"] == [] and view["next_fetch_offset"] == 1
    assert loop.time() - started >= 0.14


@MODULE_LOOP
async def test_min_applied_index_reachable_and_not(broker: Broker) -> None:
    stream = await new_stream(broker)
    receipt = await publish(broker, stream, [{"body": "mine"}])
    view = await fetched(broker, stream, offset=0, min_applied_index=receipt["index"])
    assert bodies(view) == ["mine"] and view["applied_index"] >= receipt["index"]

    unreachable = broker.node.applied_index + 1_000_000
    path = (f"/v1/streams/{stream}/partitions/0/messages?offset=0&wait_ms=200"
            f"&min_applied_index={unreachable}")
    response, body = await broker.call("GET", path)
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    error = body["error"]
    assert error["code"] == "not_caught_up" and error["definite"] is True
    assert re.search(r"up to index \d+, not yet " + str(unreachable), error["message"])


@MODULE_LOOP
async def test_msgpack_and_json_carry_binary_bodies_and_headers(broker: Broker) -> None:
    stream = await new_stream(broker)
    headers = {"bin": b"\x00\x01", "n": 5, "t": "x", "f": 0.5, "none": None}
    await publish(broker, stream, [{"body": b"\xff\x00", "key": "k", "headers": headers}],
                  fmt="msgpack")
    await publish(broker, stream, [{"body_b64": base64.b64encode(b"\x01").decode(),
                                    "headers": {"bin": {"b64": "AAE="}}}])
    status, packed = await fetch(broker, stream, headers=MSGPACK, offset=0)
    assert status == 200
    first, second = packed["messages"]
    assert (first["body"], first["key"], first["headers"]) == (b"\xff\x00", "k", headers)
    assert (second["body"], second["key"], second["headers"]) == (b"\x01", None, {"bin": b"\x00\x01"})
    as_json = await fetched(broker, stream, offset=0)
    record = as_json["messages"][0]
    assert record["body_b64"] == base64.b64encode(b"\xff\x00").decode() and "body" not in record
    assert record["headers"]["bin"] == {"b64": "AAE="}
    assert record["timestamp_ms"] == first["timestamp_ms"] > 0


@MODULE_LOOP
async def test_metrics_show_stream_gauges(broker: Broker) -> None:
    stream = await new_stream(broker)
    await publish(broker, stream, [{"body": "abc"}, {"body": "de"}])
    _, text = await broker.call("GET", "/metrics")
    assert f'raftmq_stream_messages{{stream="{stream}"}} 2.0' in text
    assert f'raftmq_stream_bytes{{stream="{stream}"}} 5.0' in text
    assert f'raftmq_stream_published_total{{stream="{stream}"}} 2.0' in text


# ----------------------------------------------------------------------------- bad input

BAD = "bad-stream"
BAD_PUBLISH = f"/v1/streams/{BAD}/publish"
BAD_FETCH = f"/v1/streams/{BAD}/partitions/0/messages"


def msg(**fields: object) -> dict[str, Any]:
    return {"messages": [{"body": "x", **fields}]}


def each(*documents: object) -> tuple[object, ...]:
    return documents


# (method, path, JSON document or raw bytes, status, code)
BAD_CASES: list[tuple[str, str, object, int, str]] = [
    *[("PUT", "/v1/streams/bad-declare", args, 400, "invalid_argument") for args in each(
        {"partitions": 0}, {"partitions": 1025}, {"partitions": "2"}, {"partitions": True},
        {"partitions": 1.5}, {"max_age_ms": 0}, {"max_age_ms": 2**40 + 1}, {"max_bytes": -1},
        {"max_messages": "x"}, {"max_message_bytes": 0}, {"retention": 1},
    )],
    ("PUT", "/v1/streams/bad-declare", b"[1]", 400, "malformed_request"),
    ("PUT", "/v1/streams/bad-declare", b"{", 400, "malformed_request"),
    ("PUT", "/v1/streams/amq.s", {}, 400, "invalid_name"),
    ("PUT", "/v1/streams/bad%20name", {}, 400, "invalid_name"),
    ("PUT", "/v1/streams/" + "s" * 201, {}, 400, "invalid_name"),
    ("GET", "/v1/streams/bad%20name", None, 400, "invalid_name"),
    ("GET", "/v1/streams/no-such-stream", None, 404, "stream_not_found"),
    *[("POST", BAD_PUBLISH, document, 400, "invalid_argument") for document in each(
        {}, {"messages": []}, {"messages": "x"}, {"messages": [1]}, {"messages": [{}]},
        msg(body_b64="eA=="), msg(body=5), {"messages": [{"body_b64": "%%"}]}, msg(key=5),
        msg(key="k" * 256), msg(partition=-1), msg(partition="0"), msg(partition=True),
        msg(partition=1.5), msg(partition=1024), msg(partition=2), msg(headers="h"),
        msg(headers={"h": [1]}), msg(headers={f"h{i}": 1 for i in range(65)}),
        msg(headers={"": 1}), msg(color=1), {**msg(), "color": 1},
        {**msg(), "producer_id": "p"}, {**msg(), "sequence": 1},
        {**msg(), "producer_id": "p", "sequence": -1},
        {**msg(), "producer_id": "p", "sequence": "1"},
    )],
    ("POST", BAD_PUBLISH, {**msg(), "producer_id": "bad p", "sequence": 1}, 400, "invalid_name"),
    ("POST", BAD_PUBLISH, b'{"messages": [', 400, "malformed_request"),
    ("POST", BAD_PUBLISH, {"messages": [{"body": "x"}] * 51}, 413, "batch_too_large"),
    ("POST", BAD_PUBLISH, msg(body="x" * 4097), 413, "message_too_large"),
    ("POST", BAD_PUBLISH, msg(body="x" * 4000, headers={"h": "y" * 100}), 413,
     "message_too_large"),
    ("POST", "/v1/streams/no-such-stream/publish", msg(), 404, "stream_not_found"),
    ("POST", "/v1/streams/bad%20name/publish", msg(), 400, "invalid_name"),
    *[("GET", f"{BAD_FETCH}?{query}", None, 400, "invalid_argument") for query in (
        "", "offset=abc", "offset=-1", "offset=1.5", "offset=%2B1", "offset=%201", "offset=1_0",
        "offset=%EF%BC%91", "offset=", "offset=0&timestamp_ms=0", "timestamp_ms=x",
        "offset=0&max_messages=0", "offset=0&max_messages=x", "offset=0&max_bytes=0",
        "offset=0&wait_ms=-1", "offset=0&min_applied_index=x", "offset=99999999999999999999",
        "offset=0&foo=1", "offset=0&offset=1", "offset=Latest",
    )],
    *[("GET", f"/v1/streams/{BAD}/partitions/{p}/messages?offset=0", None, 400,
       "invalid_argument") for p in ("x", "-1", "1024", "%201")],
    ("GET", f"/v1/streams/{BAD}/partitions/2/messages?offset=0", None, 404,
     "partition_not_found"),
    ("GET", "/v1/streams/no-such-stream/partitions/0/messages?offset=0", None, 404,
     "stream_not_found"),
    ("GET", f"{BAD_FETCH}?offset=999", None, 416, "offset_out_of_range"),
]


@MODULE_LOOP
@pytest.mark.parametrize(("method", "path", "document", "status", "code"), BAD_CASES)
async def test_bad_input_gets_a_stable_4xx(
    broker: Broker, method: str, path: str, document: object, status: int, code: str
) -> None:
    response, _ = await broker.call("PUT", f"/v1/streams/{BAD}", {"partitions": 2})
    assert response.status in (200, 201)
    data = document if isinstance(document, bytes) else None
    body_document = None if isinstance(document, bytes) else document
    headers = {"Content-Type": "application/json"} if data is not None else None
    response, body = await broker.call(method, path, body_document, data=data, headers=headers)
    assert (response.status, body["error"]["code"]) == (status, code), body
    assert body["error"]["definite"] is True


@MODULE_LOOP
async def test_msgpack_body_of_an_unsupported_type_is_400(broker: Broker) -> None:
    await broker.call("PUT", f"/v1/streams/{BAD}", {"partitions": 2})
    data = msgpack.packb({"messages": [{"body": msgpack.ExtType(5, b"x")}]})
    response, body = await broker.call("POST", BAD_PUBLISH, data=data,
                                       headers={"Content-Type": "application/msgpack"})
    assert response.status == 400 and body["error"]["code"] == "invalid_argument"


@MODULE_LOOP
async def test_too_many_waiting_fetches_get_429(broker: Broker) -> None:
    stream = await new_stream(broker)
    waits = broker.app[CONTEXT_KEY].stream_waits
    limit = MAX_WAITERS
    polls = [asyncio.create_task(fetch(broker, stream, offset=0, wait_ms=5000))
             for _ in range(limit)]
    await wait_for(lambda: waits.waiter_count == limit, 5.0, "every fetch to wait")
    status, body = await fetch(broker, stream, offset=0, wait_ms=5000)
    assert status == 429 and body["error"]["code"] == "too_many_waiters"
    await publish(broker, stream, [{"body": "all"}])
    assert [bodies(view) for _, view in await asyncio.gather(*polls)] == [["all"]] * limit


def test_client_sees_the_stream_error_classes() -> None:
    assert isinstance(errors.error_for("offset_out_of_range", "m", definite=True),
                      errors.OutOfRangeError)
    assert errors.status_for_code("not_caught_up") == 503
    assert "not_caught_up" not in errors.INDEFINITE_CODES
    for code in ("stream_not_found", "partition_not_found", "group_not_found"):
        assert isinstance(errors.error_for(code, "m", definite=True), errors.NotFoundError)
    for code in ("unknown_member", "stale_generation", "partition_not_assigned"):
        assert isinstance(errors.error_for(code, "m", definite=True), errors.ConflictError)


# --------------------------------------------------------- the publish parser and encoder

LIMITS = ApiLimits(max_message_bytes=48, max_batch_messages=6)
field_value = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-3, max_value=1030), st.floats(),
    st.text(max_size=6), st.binary(max_size=50),
    st.sampled_from(["k" * 255, "k" * 256, "é", "YQ==", "%%", "x" * 49, 2**64, [1]]),
)
header_map = st.dictionaries(
    st.sampled_from(["h", "", "é", "k" * 255, "k" * 256]) | st.text(max_size=3),
    field_value | st.sampled_from([{"b64": "YQ=="}, {"b64": "%%"}]), max_size=3,
)
plain_message = st.fixed_dictionaries(
    {"body": st.binary(max_size=48) | st.text(max_size=30)},
    optional={"key": st.sampled_from(["", "k", "k" * 255]), "partition": st.integers(0, 1023),
              "headers": st.dictionaries(st.sampled_from(["h", "é"]),
                                         st.integers(-3, 3) | st.text(max_size=25)
                                         | st.binary(max_size=25), max_size=2)},
)
message_document = st.one_of(
    plain_message,
    st.builds(lambda m, edits: {**m, **dict(edits)}, plain_message, st.lists(st.tuples(
        st.sampled_from(["body", "body_b64", "key", "partition", "headers", "color"]),
        field_value | header_map), min_size=1, max_size=2)),
    field_value,
)


def outcome(document: object) -> StreamPublishRequest | tuple[str, int, str]:
    try:
        return parse_stream_publish(document, LIMITS)
    except ApiError as error:
        return (error.code, error.status, error.message)


@settings(max_examples=1500, deadline=None)
@given(st.lists(message_document, max_size=3), st.sampled_from(list(WireFormat)))
def test_fast_parse_answers_what_the_general_parse_answers(
    messages: list[Any], wire_format: WireFormat
) -> None:
    document: object = {"messages": messages}
    if wire_format is WireFormat.MSGPACK:
        try:
            document = decode_document(msgpack.packb(document, use_bin_type=True), wire_format)
        except (OverflowError, ValueError, TypeError):
            return  # a client cannot send what msgpack cannot carry
    fast = outcome(document)
    with mock.patch.object(stream_codec, "_plain_message", new=lambda *_args: None):
        general = outcome(document)
    assert fast == general


header_value = st.one_of(st.text(max_size=5), st.integers(-(2**63), 2**64 - 1),
                         st.floats(allow_nan=False), st.booleans(), st.binary(max_size=5),
                         st.none())
wire_stream_message = st.tuples(
    st.none() | st.text(max_size=8), st.none() | st.integers(0, 1023), st.binary(max_size=20),
    st.dictionaries(st.text(max_size=4), header_value, max_size=3),
).map(list)


@given(st.integers(0, 2**53), st.text(max_size=8), st.lists(wire_stream_message, max_size=4),
       st.none() | st.tuples(st.text(max_size=6), st.integers(0, 2**62)), st.integers(0, 2**62))
def test_raw_encoder_writes_the_bytes_of_encode_command(
    now_ms: int, stream: str, messages: list[list[Any]],
    producer: tuple[str, int] | None, max_total_bytes: int,
) -> None:
    producer_id, sequence = producer if producer is not None else (None, None)
    fields: RawStreamPublish = (stream, messages, producer_id, sequence, max_total_bytes)
    command = StreamPublish(now_ms, stream, tuple(StreamMessage(m[2], m[0], m[1], m[3])
                                                  for m in messages),
                            producer_id, sequence, max_total_bytes)
    assert encode_raw_stream_publish(now_ms, fields) == encode_command(command)


def test_fast_parse_builds_the_wire_form() -> None:
    document = {"producer_id": "p", "sequence": 3, "messages": [
        {"body": b"one", "key": "k", "headers": {"n": 1}}, {"body": "two", "partition": 1},
    ]}
    with mock.patch.object(stream_codec, "_parse_message", side_effect=AssertionError("general")):
        parsed = parse_stream_publish(document, TEST_LIMITS)
    assert parsed == StreamPublishRequest(
        [["k", None, b"one", {"n": 1}], [None, 1, b"two", {}]], "p", 3)

