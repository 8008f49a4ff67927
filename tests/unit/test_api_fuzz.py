"""Seeded random and mutated request bodies: whatever arrives, the answer is never a 500."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import msgpack
import pytest
import pytest_asyncio

from tests.unit.test_api_fixtures import MODULE_LOOP, Broker, broker

__all__ = ["broker"]

pytestmark = MODULE_LOOP

Q = "fuzz-q"
EX = "fuzz-ex"
REQUESTS_PER_CASE = 60

# (method, path, a valid document to mutate)
VALID: list[tuple[str, str, dict[str, Any]]] = [
    ("PUT", f"/v1/queues/{Q}-declared", {"max_length": 5, "overflow": "drop-head",
                                          "message_ttl_ms": 1000, "delivery_limit": 2}),
    ("PUT", f"/v1/exchanges/{EX}-declared", {"type": "topic", "alternate_exchange": EX}),
    ("POST", "/v1/publish", {"exchange": EX, "producer_id": "p", "sequence": 1, "messages": [
        {"routing_key": "a.b", "body": "x", "headers": {"h": 1}, "ttl_ms": 5, "delay_ms": 0}]}),
    ("POST", f"/v1/queues/{Q}/publish", {"messages": [{"body_b64": "AAE="}]}),
    ("POST", f"/v1/queues/{Q}/claim", {"max_messages": 2, "lease_ms": 100, "wait_ms": 0,
                                       "consumer": "c"}),
    ("POST", f"/v1/queues/{Q}/ack", {"leases": [[1, 1]]}),
    ("POST", f"/v1/queues/{Q}/nack", {"leases": [[1, 1]], "requeue": False, "delay_ms": 10}),
    ("POST", f"/v1/queues/{Q}/extend", {"leases": [[1, 1]], "lease_ms": 100}),
    ("POST", "/v1/bindings", {"exchange": EX, "queue": Q, "binding_key": "a.*"}),
    ("DELETE", "/v1/bindings", {"exchange": EX, "queue": Q, "binding_key": "zz"}),
]


def random_scalar(rng: random.Random) -> object:
    return rng.choice([
        None, True, False, 0, -1, 1, 2**31, 2**63, -(2**63), 2**64 + 5, 10**30, 0.5, -1e300,
        "", "a", "é", "a b", "a/b", "x" * 300, "amq.x", "\u0000", "\ud7ff", "\ud800", "🙂" * 3,
    ])


def random_value(rng: random.Random, depth: int = 0) -> object:
    roll = rng.random()
    if depth > 3 or roll < 0.6:
        return random_scalar(rng)
    if roll < 0.8:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {str(random_scalar(rng))[:20]: random_value(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def containers(document: object) -> list[dict[str, Any] | list[Any]]:
    """Every map and list inside a document (the places a mutation can hit)."""
    found: list[dict[str, Any] | list[Any]] = []
    if isinstance(document, dict):
        found.append(document)
        for value in document.values():
            found.extend(containers(value))
    elif isinstance(document, list):
        found.append(document)
        for value in document:
            found.extend(containers(value))
    return found


def mutate(rng: random.Random, valid: dict[str, Any]) -> object:
    if rng.random() < 0.1:
        return random_value(rng)
    document = copy.deepcopy(valid)
    for _ in range(rng.randint(1, 3)):
        target = rng.choice(containers(document))
        if isinstance(target, list):
            if target and rng.random() < 0.5:
                target[rng.randrange(len(target))] = random_value(rng)
            else:
                target.append(random_value(rng))
        elif target and rng.random() < 0.8:
            key = rng.choice(list(target))
            if rng.random() < 0.2:
                del target[key]
            else:
                target[key] = random_value(rng)
        else:
            target[str(random_scalar(rng))[:20]] = random_value(rng)
    if isinstance(document.get("wait_ms"), int):
        document["wait_ms"] = 0  # a valid long wait would only make the test slow
    return document


def encode(document: object, fmt: str) -> bytes | None:
    try:
        if fmt == "json":
            return json.dumps(document).encode()
        packed: bytes = msgpack.packb(document, use_bin_type=True)
        return packed
    except (ValueError, TypeError, OverflowError):
        return None  # not representable in this format (e.g. a huge int in msgpack)


@pytest_asyncio.fixture(loop_scope="module", scope="module", autouse=True)
async def topology(broker: Broker) -> None:
    await broker.call("PUT", f"/v1/queues/{Q}", {})
    await broker.call("PUT", f"/v1/exchanges/{EX}", {"type": "topic"})


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize(("method", "path", "valid"), VALID, ids=[f"{m} {p}" for m, p, _ in VALID])
async def test_mutated_bodies_never_cause_a_500(
    broker: Broker, fmt: str, method: str, path: str, valid: dict[str, Any]
) -> None:
    rng = random.Random(f"{fmt} {method} {path}")
    content_type = "application/json" if fmt == "json" else "application/msgpack"
    statuses: dict[int, int] = {}
    for _ in range(REQUESTS_PER_CASE):
        data = encode(mutate(rng, valid), fmt)
        if data is None:
            continue
        response, body = await broker.call(method, path, data=data,
                                           headers={"Content-Type": content_type})
        statuses[response.status] = statuses.get(response.status, 0) + 1
        assert response.status < 500, (data[:300], body)
        if response.status >= 400:
            assert set(body["error"]) == {"code", "message", "definite", "leader"}
    assert statuses, "no request was sent"
    assert any(status >= 400 for status in statuses), statuses


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_random_bytes_never_cause_a_500(broker: Broker, fmt: str) -> None:
    rng = random.Random(fmt)
    content_type = "application/json" if fmt == "json" else "application/msgpack"
    for method, path, _ in VALID:
        for _ in range(10):
            data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
            response, body = await broker.call(method, path, data=data,
                                               headers={"Content-Type": content_type})
            assert response.status < 500, (data, body)
