"""Bad input of every kind gets a 4xx with a stable code, never a 500, and the node keeps serving."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import msgpack
import pytest
import pytest_asyncio

from tests.unit.test_api_fixtures import MODULE_LOOP, TEST_LIMITS, Broker, broker

__all__ = ["broker"]

pytestmark = MODULE_LOOP

Q = "bad-input-q"
JSON = "application/json"
MSGPACK = "application/msgpack"


def as_json(document: object) -> bytes:
    return json.dumps(document).encode()


def message(**fields: object) -> bytes:
    return as_json({"messages": [{"body": "x", **fields}]})


BIG_BODY = "x" * (TEST_LIMITS.max_message_bytes + 1)

# (method, path, body, content type, status, code)
CASES: list[tuple[str, str, bytes, str, int, str]] = [
    # malformed bodies
    ("PUT", f"/v1/queues/{Q}", b"{", JSON, 400, "malformed_request"),
    ("PUT", f"/v1/queues/{Q}", b"\xc1", MSGPACK, 400, "malformed_request"),
    ("PUT", f"/v1/queues/{Q}", b"\x81\xa1a", MSGPACK, 400, "malformed_request"),
    ("PUT", f"/v1/queues/{Q}", b"[1, 2]", JSON, 400, "malformed_request"),
    ("PUT", f"/v1/queues/{Q}", b'"text"', JSON, 400, "malformed_request"),
    ("PUT", f"/v1/queues/{Q}", b'{"max_length": NaN}', JSON, 400, "malformed_request"),
    ("PUT", f"/v1/queues/{Q}", b"\xff\xfe{}", JSON, 400, "malformed_request"),
    ("PUT", f"/v1/queues/{Q}", b"[" * 20_000 + b"]" * 20_000, JSON, 400, "malformed_request"),
    ("PUT", f"/v1/queues/{Q}", b'{"max_length": ' + b"9" * 5000 + b"}", JSON, 400,
     "malformed_request"),
    ("PUT", f"/v1/queues/{Q}", msgpack.packb({1: 2}), MSGPACK, 400, "malformed_request"),
    ("POST", "/v1/publish", message(body="\ud800"), JSON, 400, "malformed_request"),
    ("POST", "/v1/publish", message(headers={"\ud800": 1}), JSON, 400, "malformed_request"),
    ("POST", f"/v1/queues/{Q}/publish",
     msgpack.packb({"messages": [{"body": msgpack.ExtType(5, b"x")}]}), MSGPACK, 400,
     "invalid_argument"),
    # wrong types and unknown fields
    ("PUT", f"/v1/queues/{Q}", as_json({"max_length": "10"}), JSON, 400, "invalid_argument"),
    ("PUT", f"/v1/queues/{Q}", as_json({"max_length": 1.5}), JSON, 400, "invalid_argument"),
    ("PUT", f"/v1/queues/{Q}", as_json({"max_length": True}), JSON, 400, "invalid_argument"),
    ("PUT", f"/v1/queues/{Q}", as_json({"max_lenght": 10}), JSON, 400, "invalid_argument"),
    ("PUT", f"/v1/queues/{Q}", as_json({"overflow": "explode"}), JSON, 400, "invalid_argument"),
    ("PUT", f"/v1/queues/{Q}", as_json({"delivery_limit": 0}), JSON, 400, "invalid_argument"),
    ("PUT", "/v1/exchanges/ex-bad", as_json({"type": "weird"}), JSON, 400, "invalid_argument"),
    ("PUT", "/v1/exchanges/ex-bad", as_json({}), JSON, 400, "invalid_argument"),
    ("POST", "/v1/publish", as_json({"messages": "nope"}), JSON, 400, "invalid_argument"),
    ("POST", "/v1/publish", as_json({"messages": []}), JSON, 400, "invalid_argument"),
    ("POST", "/v1/publish", as_json({"messages": [5]}), JSON, 400, "invalid_argument"),
    ("POST", "/v1/publish", message(body=5), JSON, 400, "invalid_argument"),
    ("POST", "/v1/publish", as_json({"messages": [{}]}), JSON, 400, "invalid_argument"),
    ("POST", "/v1/publish", as_json({"messages": [{"body": "a", "body_b64": "YQ=="}]}), JSON,
     400, "invalid_argument"),
    ("POST", "/v1/publish", as_json({"messages": [{"body_b64": "%%%"}]}), JSON, 400,
     "invalid_argument"),
    ("POST", "/v1/publish", message(headers={"h": {"deep": 1}}), JSON, 400, "invalid_argument"),
    ("POST", "/v1/publish", message(headers={"": 1}), JSON, 400, "invalid_argument"),
    ("POST", "/v1/publish", message(headers=[1]), JSON, 400, "invalid_argument"),
    ("POST", "/v1/publish", message(headers={"h": 2**64}), JSON, 400, "invalid_argument"),
    ("POST", "/v1/publish", message(ttl_ms=-1), JSON, 400, "invalid_argument"),
    ("POST", "/v1/publish", message(delay_ms=10**30), JSON, 400, "invalid_argument"),
    ("POST", "/v1/publish", message(routing_key=7), JSON, 400, "invalid_argument"),
    ("POST", "/v1/publish", message(routing_key="k" * 256), JSON, 400, "invalid_argument"),
    ("POST", "/v1/publish", message(color="red"), JSON, 400, "invalid_argument"),
    ("POST", "/v1/publish", as_json({"messages": [{"body": "x"}], "sequence": 1}), JSON, 400,
     "invalid_argument"),
    ("POST", "/v1/publish", as_json({"messages": [{"body": "x"}], "producer_id": "p",
                                     "sequence": -1}), JSON, 400, "invalid_argument"),
    ("POST", f"/v1/queues/{Q}/publish", message(routing_key="elsewhere"), JSON, 400,
     "invalid_argument"),
    ("POST", f"/v1/queues/{Q}/claim", as_json({"max_messages": "5"}), JSON, 400,
     "invalid_argument"),
    ("POST", f"/v1/queues/{Q}/claim", as_json({"max_messages": 0}), JSON, 400,
     "invalid_argument"),
    ("POST", f"/v1/queues/{Q}/claim", as_json({"max_messages": 10**30}), JSON, 400,
     "invalid_argument"),
    ("POST", f"/v1/queues/{Q}/claim", as_json({"lease_ms": 0}), JSON, 400, "invalid_argument"),
    ("POST", f"/v1/queues/{Q}/claim", as_json({"lease_ms": 10**12}), JSON, 400,
     "invalid_argument"),
    ("POST", f"/v1/queues/{Q}/claim", as_json({"wait_ms": -5}), JSON, 400, "invalid_argument"),
    ("POST", f"/v1/queues/{Q}/claim", as_json({"consumer": "no spaces"}), JSON, 400,
     "invalid_name"),
    ("POST", f"/v1/queues/{Q}/ack", as_json({"leases": [[1]]}), JSON, 400, "invalid_argument"),
    ("POST", f"/v1/queues/{Q}/ack", as_json({"leases": [["a", "b"]]}), JSON, 400,
     "invalid_argument"),
    ("POST", f"/v1/queues/{Q}/ack", as_json({"leases": [[-1, 1]]}), JSON, 400,
     "invalid_argument"),
    ("POST", f"/v1/queues/{Q}/ack", as_json({"leases": []}), JSON, 400, "invalid_argument"),
    ("POST", f"/v1/queues/{Q}/nack", as_json({"leases": [[1, 1]], "requeue": "yes"}), JSON,
     400, "invalid_argument"),
    ("POST", f"/v1/queues/{Q}/extend", as_json({"leases": [[1, 1]], "lease_ms": -1}), JSON,
     400, "invalid_argument"),
    ("POST", "/v1/bindings", as_json({"exchange": "", "queue": Q}), JSON, 400, "invalid_name"),
    ("POST", "/v1/bindings", as_json({"exchange": "x", "queue": Q, "binding_key": 3}), JSON,
     400, "invalid_argument"),
    ("DELETE", f"/v1/queues/{Q}?if_empty=maybe", b"", JSON, 400, "invalid_argument"),
    ("GET", "/v1/bindings?color=red", b"", JSON, 400, "invalid_argument"),
    # bad names
    ("PUT", "/v1/queues/bad%20name", b"", JSON, 400, "invalid_name"),
    ("PUT", "/v1/queues/" + "q" * 201, b"", JSON, 400, "invalid_name"),
    ("PUT", "/v1/queues/amq.reserved", b"", JSON, 400, "invalid_name"),
    ("PUT", "/v1/exchanges/amq.topic", as_json({"type": "topic"}), JSON, 400, "invalid_name"),
    ("PUT", "/v1/exchanges/ex-bad", as_json({"type": "direct", "alternate_exchange": "a b"}),
     JSON, 400, "invalid_name"),
    ("GET", "/v1/queues/%C3%A9t%C3%A9", b"", JSON, 400, "invalid_name"),
    ("POST", "/v1/publish", as_json({"exchange": "a/b", "messages": [{"body": "x"}]}), JSON,
     400, "invalid_name"),
    # unknown names
    ("GET", "/v1/queues/missing-q", b"", JSON, 404, "queue_not_found"),
    ("DELETE", "/v1/queues/missing-q", b"", JSON, 404, "queue_not_found"),
    ("POST", "/v1/queues/missing-q/purge", b"", JSON, 404, "queue_not_found"),
    ("POST", "/v1/queues/missing-q/claim", as_json({}), JSON, 404, "queue_not_found"),
    ("POST", "/v1/queues/missing-q/claim", as_json({"wait_ms": 200}), JSON, 404,
     "queue_not_found"),
    ("POST", "/v1/queues/missing-q/ack", as_json({"leases": [[1, 1]]}), JSON, 404,
     "queue_not_found"),
    ("GET", "/v1/exchanges/missing-ex", b"", JSON, 404, "exchange_not_found"),
    ("DELETE", "/v1/exchanges/missing-ex", b"", JSON, 404, "exchange_not_found"),
    ("POST", "/v1/bindings", as_json({"exchange": "missing-ex", "queue": Q}), JSON, 404,
     "exchange_not_found"),
    # sizes
    ("POST", "/v1/publish", message(body=BIG_BODY), JSON, 413, "message_too_large"),
    ("POST", "/v1/publish", message(headers={"h": BIG_BODY}), JSON, 413, "message_too_large"),
    ("POST", "/v1/publish",
     as_json({"messages": [{"body": "x"}] * (TEST_LIMITS.max_batch_messages + 1)}), JSON, 413,
     "batch_too_large"),
    ("POST", f"/v1/queues/{Q}/ack",
     as_json({"leases": [[1, 1]] * (TEST_LIMITS.max_batch_messages + 1)}), JSON, 413,
     "batch_too_large"),
    ("POST", "/v1/publish", b"x" * (TEST_LIMITS.max_request_bytes + 1), JSON, 413,
     "request_too_large"),
    # media types and routes
    ("PUT", f"/v1/queues/{Q}", b"{}", "text/plain", 415, "unsupported_media_type"),
    ("PUT", f"/v1/queues/{Q}", b"max_length=1", "application/x-www-form-urlencoded", 415,
     "unsupported_media_type"),
    ("GET", "/v2/queues", b"", JSON, 404, "not_found"),
    ("PATCH", f"/v1/queues/{Q}", b"{}", JSON, 405, "method_not_allowed"),
    ("PROPFIND", f"/v1/queues/{Q}", b"", JSON, 405, "method_not_allowed"),
    ("POST", f"/v1/queues/{Q}/explode", b"{}", JSON, 404, "not_found"),
]


@pytest_asyncio.fixture(loop_scope="module", scope="module", autouse=True)
async def existing_queue(broker: Broker) -> AsyncIterator[None]:
    response, _ = await broker.call("PUT", f"/v1/queues/{Q}", {})
    assert response.status == 201
    yield


@pytest.mark.parametrize(("method", "path", "body", "content_type", "status", "code"), CASES)
async def test_bad_input_is_a_clean_4xx(
    broker: Broker, method: str, path: str, body: bytes, content_type: str, status: int,
    code: str,
) -> None:
    before = broker.node.applied_index
    response, document = await broker.call(method, path, data=body,
                                           headers={"Content-Type": content_type})
    assert (response.status, document["error"]["code"]) == (status, code), document
    error = document["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["definite"] is True
    assert error["leader"] == broker.url
    assert response.headers["X-Raftmq-Node"] == "n1"
    if status != 404:
        assert broker.node.applied_index == before  # refused before reaching Raft


async def test_chunked_oversized_body_is_413(broker: Broker) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * (TEST_LIMITS.max_request_bytes // 4)

    response = await broker.client.post("/v1/publish", data=chunks(),
                                        headers={"Content-Type": JSON})
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "request_too_large"


async def test_errors_follow_msgpack_negotiation(broker: Broker) -> None:
    response, document = await broker.call("PUT", f"/v1/queues/{Q}", data=b"\xc1",
                                           headers={"Content-Type": MSGPACK})
    assert response.headers["Content-Type"] == MSGPACK
    assert document["error"]["code"] == "malformed_request"


async def test_server_still_serves_after_bad_input(broker: Broker) -> None:
    response, body = await broker.call("GET", "/healthz")
    assert (response.status, body) == (200, {"status": "ok"})
    _, text = await broker.call("GET", "/metrics")
    assert 'status="500"' not in text
    assert "PROPFIND" not in text and 'method="other"' in text  # bounded label values
