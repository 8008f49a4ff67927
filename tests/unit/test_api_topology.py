"""Health, cluster, metrics, dashboard, exchanges, queues and bindings against a real node."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from raftmq.broker.api import create_app
from raftmq.broker.api.context import CONTEXT_KEY
from raftmq.broker.state import BrokerState
from raftmq.cluster import RaftConfig, RaftNode
from tests.unit.test_api_fixtures import (
    MODULE_LOOP,
    TEST_LIMITS,
    Broker,
    broker,
    free_port,
    unique,
    wait_for,
)

__all__ = ["broker"]

pytestmark = MODULE_LOOP


async def test_health_and_readiness(broker: Broker) -> None:
    response, body = await broker.call("GET", "/healthz")
    assert (response.status, body) == (200, {"status": "ok"})
    response, body = await broker.call("GET", "/readyz")
    assert (response.status, body) == (200, {"status": "ready"})


async def test_node_and_leader_headers_on_success_and_error(broker: Broker) -> None:
    for path, status in (("/healthz", 200), ("/v1/queues/missing-q", 404), ("/nowhere", 404)):
        response, _ = await broker.call("GET", path)
        assert response.status == status
        assert response.headers["X-Raftmq-Node"] == "n1"
        assert response.headers["X-Raftmq-Leader"] == broker.url


async def test_not_ready_before_the_node_started(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = RaftConfig(node_id="cold", bind_address=address, advertise_address=address,
                        peers={}, data_dir=tmp_path, secret="s")
    state = BrokerState()
    node = RaftNode(config, state)  # never started
    app = create_app(node, state, TEST_LIMITS, clock_ms=lambda: 0)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        assert (await client.get("/healthz")).status == 200
        for path in ("/readyz", "/v1/cluster"):
            response = await client.get(path)
            assert response.status == 503
            assert (await response.json())["error"]["code"] == "not_ready"
        metrics = await client.get("/metrics")
        assert metrics.status == 200
        assert "raftmq_raft_term" not in await metrics.text()


async def test_cluster_view(broker: Broker) -> None:
    response, body = await broker.call("GET", "/v1/cluster")
    assert response.status == 200
    assert body["node_id"] == "n1"
    assert body["role"] == "leader"
    assert body["leader_id"] == "n1"
    assert body["leader_url"] == broker.url == body["http_url"]
    assert body["has_quorum"] is True and body["ready"] is True
    assert body["term"] >= 1
    assert body["applied_index"] <= body["commit_index"]
    assert body["peers"] == []
    assert body["nodes"]["n1"]["http_url"] == broker.url


async def test_cors_only_on_get_v1(broker: Broker) -> None:
    response, _ = await broker.call("GET", "/v1/cluster")
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    response, _ = await broker.call("PUT", f"/v1/queues/{unique('cors')}", {})
    assert response.status == 201
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_dashboard_is_served(broker: Broker) -> None:
    response, body = await broker.call("GET", "/")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "/v1/cluster" in body and "/v1/queues" in body
    # Self-contained: no external scripts or stylesheets (a CDN may be unreachable).
    assert "src=" not in body and "<link" not in body


async def test_exchange_lifecycle(broker: Broker) -> None:
    name = unique("ex")
    path = f"/v1/exchanges/{name}"
    response, body = await broker.call("PUT", path, {"type": "topic"})
    assert response.status == 201 and body["created"] is True and body["index"] > 0
    response, body = await broker.call("PUT", path, {"type": "topic"})
    assert response.status == 200 and body["created"] is False
    response, body = await broker.call("PUT", path, {"type": "fanout"})
    assert response.status == 409 and body["error"]["code"] == "precondition_failed"
    assert body["error"]["definite"] is True
    response, body = await broker.call("GET", path)
    assert body == {"name": name, "type": "topic", "alternate_exchange": None, "bindings": 0}
    _, listing = await broker.call("GET", "/v1/exchanges")
    names = [exchange["name"] for exchange in listing["exchanges"]]
    assert "" in names and name in names
    response, body = await broker.call("DELETE", path)
    assert response.status == 200 and body["deleted"] is True
    response, body = await broker.call("GET", path)
    assert response.status == 404 and body["error"]["code"] == "exchange_not_found"


async def test_exchange_with_alternate_and_if_unused(broker: Broker) -> None:
    alternate, main, queue = unique("alt"), unique("main"), unique("q")
    await broker.call("PUT", f"/v1/exchanges/{alternate}", {"type": "fanout"})
    response, _ = await broker.call("PUT", f"/v1/exchanges/{main}",
                                    {"type": "direct", "alternate_exchange": alternate})
    assert response.status == 201
    await broker.call("PUT", f"/v1/queues/{queue}", {})
    await broker.call("POST", "/v1/bindings", {"exchange": main, "queue": queue})
    response, body = await broker.call("DELETE", f"/v1/exchanges/{main}?if_unused=true")
    assert response.status == 409 and body["error"]["code"] == "in_use"
    _, info = await broker.call("GET", f"/v1/exchanges/{main}")
    assert info["alternate_exchange"] == alternate and info["bindings"] == 1


async def test_queue_lifecycle(broker: Broker) -> None:
    name = unique("q")
    path = f"/v1/queues/{name}"
    args = {"max_length": 10, "overflow": "drop-head", "message_ttl_ms": 60_000,
            "delivery_limit": 3, "dead_letter_exchange": "", "dead_letter_routing_key": "dlq"}
    response, body = await broker.call("PUT", path, args)
    assert response.status == 201 and body["created"] is True
    response, body = await broker.call("PUT", path, args)
    assert response.status == 200 and body["created"] is False
    response, body = await broker.call("PUT", path, {"max_length": 11})
    assert response.status == 409 and body["error"]["code"] == "precondition_failed"

    await broker.call("POST", f"{path}/publish", {"messages": [{"body": "a"}, {"body": "b"}]})
    response, info = await broker.call("GET", path)
    assert response.status == 200
    assert info["name"] == name and info["ready"] == 2 and info["leased"] == 0
    assert info["args"]["max_length"] == 10 and info["args"]["overflow"] == "drop-head"
    assert info["counters"]["published"] == 2
    assert set(info["rates"]) == {"publish_per_s", "deliver_per_s", "ack_per_s"}
    _, listing = await broker.call("GET", "/v1/queues")
    assert name in [queue["name"] for queue in listing["queues"]]

    response, body = await broker.call("DELETE", f"{path}?if_empty=true")
    assert response.status == 409 and body["error"]["code"] == "in_use"
    response, body = await broker.call("POST", f"{path}/purge")
    assert response.status == 200 and body["purged"] == 2
    response, _ = await broker.call("DELETE", f"{path}?if_empty=true")
    assert response.status == 200
    response, body = await broker.call("GET", path)
    assert response.status == 404 and body["error"]["code"] == "queue_not_found"


async def test_bindings(broker: Broker) -> None:
    exchange, first, second = unique("ex"), unique("q"), unique("q")
    await broker.call("PUT", f"/v1/exchanges/{exchange}", {"type": "direct"})
    for queue in (first, second):
        await broker.call("PUT", f"/v1/queues/{queue}", {})
    binding = {"exchange": exchange, "queue": first, "binding_key": "k1"}
    response, body = await broker.call("POST", "/v1/bindings", binding)
    assert response.status == 201 and body["created"] is True
    response, body = await broker.call("POST", "/v1/bindings", binding)
    assert response.status == 200 and body["created"] is False
    await broker.call("POST", "/v1/bindings", {"exchange": exchange, "queue": second,
                                               "binding_key": "k2"})
    _, listed = await broker.call("GET", f"/v1/bindings?exchange={exchange}")
    assert listed["bindings"] == [binding, {"exchange": exchange, "queue": second,
                                            "binding_key": "k2"}]
    _, listed = await broker.call("GET", f"/v1/bindings?queue={second}")
    assert listed["bindings"] == [{"exchange": exchange, "queue": second, "binding_key": "k2"}]

    response, _ = await broker.call("DELETE", "/v1/bindings", binding)
    assert response.status == 200
    response, _ = await broker.call(
        "DELETE", f"/v1/bindings?exchange={exchange}&queue={second}&binding_key=k2")
    assert response.status == 200
    _, listed = await broker.call("GET", f"/v1/bindings?exchange={exchange}")
    assert listed["bindings"] == []


async def test_msgpack_negotiation(broker: Broker) -> None:
    response, body = await broker.call("GET", "/v1/cluster",
                                       headers={"Accept": "application/msgpack"})
    assert response.headers["Content-Type"] == "application/msgpack"
    assert body["node_id"] == "n1"
    # The request's own Content-Type wins over Accept.
    response, body = await broker.call("PUT", f"/v1/queues/{unique('mp')}", {}, fmt="msgpack",
                                       headers={"Accept": "application/json"})
    assert response.headers["Content-Type"] == "application/msgpack"
    assert body["created"] is True
    response, body = await broker.call("GET", "/v1/queues/absent-q",
                                       headers={"Accept": "text/html, application/msgpack"})
    assert response.status == 404
    assert body["error"]["code"] == "queue_not_found"


async def test_metrics_exposition(broker: Broker) -> None:
    queue = unique("metered")
    await broker.call("PUT", f"/v1/queues/{queue}", {})
    await broker.call("POST", f"/v1/queues/{queue}/publish", {"messages": [{"body": "x"}]})
    response, text = await broker.call("GET", "/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "raftmq_raft_is_leader 1.0" in text
    assert 'raftmq_raft_role{role="leader"} 1.0' in text
    assert 'raftmq_raft_leader{leader_id="n1"} 1.0' in text
    assert f'raftmq_queue_ready{{queue="{queue}"}} 1.0' in text
    assert f'raftmq_queue_published_total{{queue="{queue}"}} 1.0' in text
    assert 'route="/v1/queues/{name}/publish",status="200"' in text
    assert 'raftmq_propose_seconds_count{command="Publish"}' in text


async def test_rates_follow_counter_deltas(broker: Broker) -> None:
    queue = unique("rated")
    await broker.call("PUT", f"/v1/queues/{queue}", {})

    async def publish_rate() -> float:
        await broker.call("POST", f"/v1/queues/{queue}/publish", {"messages": [{"body": "r"}]})
        _, info = await broker.call("GET", f"/v1/queues/{queue}")
        rate: float = info["rates"]["publish_per_s"]
        return rate

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while await publish_rate() <= 0.0:
        assert loop.time() < deadline, "publish rate never became positive"
        await asyncio.sleep(0.2)


async def test_second_app_on_same_node_gets_wakeups(broker: Broker) -> None:
    """A stopped app's listener must not steal ready notifications from a serving app."""
    spare = create_app(broker.node, broker.state, TEST_LIMITS, clock_ms=lambda: 0)
    runner = web.AppRunner(spare)
    await runner.setup()
    await runner.cleanup()
    queue = unique("wake")
    await broker.call("PUT", f"/v1/queues/{queue}", {})
    claim = asyncio.create_task(broker.call("POST", f"/v1/queues/{queue}/claim",
                                            {"wait_ms": 4000}))
    hub = broker.app[CONTEXT_KEY].hub
    await wait_for(lambda: hub.waiter_count == 1, 5.0, "the claim to wait")
    await broker.call("POST", f"/v1/queues/{queue}/publish", {"messages": [{"body": "w"}]})
    response, body = await asyncio.wait_for(claim, 3.0)
    assert response.status == 200 and [m["body"] for m in body["messages"]] == ["w"]
