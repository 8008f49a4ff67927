"""Draining over HTTP (`/v1/node/drain`, the refusal of new work) and the `raftmq drain` and
`raftmq wait-caught-up` commands, on a real single-node broker with draining installed as the
node process installs it. (Draining with peers: test_drain and the StatefulSet test.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from raftmq.broker.api.app import build_app
from raftmq.broker.api.handlers_cluster import DRAIN_KEY, DRAINING, install_drain
from raftmq.broker.cli import main
from raftmq.broker.drain import Drainer
from raftmq.broker.k8s_join import fetch_cluster_document
from raftmq.broker.state import BrokerState
from raftmq.broker.ticker import wall_clock_ms
from raftmq.cluster import RaftConfig, RaftNode
from tests.unit.test_api_fixtures import MODULE_LOOP, TEST_LIMITS, Broker, free_port, unique, wait_for

pytestmark = [MODULE_LOOP, pytest.mark.timeout(60)]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def lone_node(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Broker]:
    """A lone node whose app has draining, as BrokerNode builds it."""
    tmp_path: Path = tmp_path_factory.mktemp("drain")
    address, http_port = f"127.0.0.1:{free_port()}", free_port()
    state = BrokerState()
    raft = RaftNode(RaftConfig(node_id="n1", bind_address=address, advertise_address=address,
                               peers={}, data_dir=tmp_path, secret="test-secret", fsync="never",
                               metadata={"http_url": f"http://127.0.0.1:{http_port}"}), state)
    await raft.start()
    app = build_app(raft, state, TEST_LIMITS, clock_ms=wall_clock_ms)
    install_drain(app, Drainer(raft, fetch_cluster_document))
    client: TestClient[web.Request, web.Application] = TestClient(
        TestServer(app, host="127.0.0.1", port=http_port))
    await client.start_server()
    try:
        await wait_for(lambda: raft.is_leader and "http_url" in raft.node_metadata()["n1"], 10.0,
                       "the node to lead and announce itself")
        yield Broker(raft, state, app, client, ticker=None)  # type: ignore[arg-type]
    finally:
        await client.close()
        await raft.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def node(lone_node: Broker) -> AsyncIterator[Broker]:
    """The shared node, taking work again after each test."""
    yield lone_node
    await lone_node.app[DRAIN_KEY].resume()


def error_code(body: object) -> str:
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    return str(body["error"]["code"])


async def test_drain_refuses_new_work_until_resumed(node: Broker) -> None:
    response, body = await node.call("GET", "/v1/node/drain")
    assert response.status == 200 and body["draining"] is False
    queue = unique("drain")
    assert (await node.call("PUT", f"/v1/queues/{queue}", {}))[0].status == 201

    response, body = await node.call("POST", "/v1/node/drain", {"timeout_ms": 300})
    assert response.status == 200
    assert body["drained"] is False and "only member" in body["detail"]
    assert body["draining"] is True and body["node_id"] == "n1"

    response, body = await node.call("GET", "/readyz")
    assert (response.status, error_code(body)) == (503, DRAINING)
    for method, path, document in (("PUT", f"/v1/queues/{unique('new')}", {}),
                                   ("POST", "/v1/publish", {"exchange": "", "messages": []}),
                                   ("DELETE", f"/v1/queues/{queue}", None)):
        response, body = await node.call(method, path, document)
        assert (response.status, error_code(body)) == (503, DRAINING), path
        assert body["error"]["definite"] is True
        assert body["error"]["leader"] == node.url  # where the client sends it next
        assert response.headers["Retry-After"] == "1"
    # Reads, health and cluster operations are still served.
    assert (await node.call("GET", f"/v1/queues/{queue}"))[0].status == 200
    assert (await node.call("GET", "/healthz"))[0].status == 200
    assert (await node.call("GET", "/v1/cluster"))[0].status == 200
    response, body = await node.call("POST", "/v1/cluster/leadership/transfer")
    assert (response.status, error_code(body)) == (409, "transfer_refused")

    response, body = await node.call("DELETE", "/v1/node/drain")
    assert response.status == 200 and body["draining"] is False
    assert (await node.call("GET", "/readyz"))[0].status == 200
    assert (await node.call("DELETE", f"/v1/queues/{queue}"))[0].status == 200


async def test_drain_closes_websockets_and_refuses_new_ones(node: Broker) -> None:
    websocket = await node.client.ws_connect("/v1/ws")
    drained = asyncio.create_task(node.call("POST", "/v1/node/drain", {"timeout_ms": 200}))
    message = await asyncio.wait_for(websocket.receive(), 5.0)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert websocket.close_code == aiohttp.WSCloseCode.GOING_AWAY
    assert (await drained)[0].status == 200
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await node.client.ws_connect("/v1/ws")
    assert refused.value.status == 503


@pytest.mark.parametrize(("document", "status", "code"), [
    ({"timeout_ms": 0}, 400, "invalid_argument"),
    ({"timeout_ms": 600_001}, 400, "invalid_argument"),
    ({"timeout_ms": "soon"}, 400, "invalid_argument"),
    ({"timeout": 5}, 400, "invalid_argument"),
    (["timeout_ms"], 400, "malformed_request"),
])
async def test_drain_refuses_bad_input(node: Broker, document: object, status: int, code: str) -> None:
    response, body = await node.call("POST", "/v1/node/drain", document)
    assert (response.status, error_code(body)) == (status, code)
    assert (await node.call("GET", "/v1/node/drain"))[1]["draining"] is False


async def test_app_without_draining_says_so(node: Broker) -> None:
    bare = build_app(node.node, node.state, TEST_LIMITS, clock_ms=wall_clock_ms)
    async with TestClient(TestServer(bare, host="127.0.0.1")) as client:
        response = await client.post("/v1/node/drain", json={})
        body = await response.json()
    assert (response.status, error_code(body)) == (404, "not_found")


# -- the commands (run in a thread: they run their own event loop) ------------------------------


async def run_cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_drain_command(node: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("drain", "--url", node.url, "--timeout", "0.3") == 1
    assert "raftmq drain: n1 not drained: " in capsys.readouterr().err
    assert (await node.call("GET", "/readyz"))[0].status == 503
    assert await run_cli("drain", "--url", node.url, "--cancel") == 0
    assert "n1 takes new work again" in capsys.readouterr().out
    assert (await node.call("GET", "/readyz"))[0].status == 200


async def test_drain_command_failures(node: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("drain", "--url", f"{node.url},{node.url}") == 2
    assert "one http(s):// URL" in capsys.readouterr().err
    assert await run_cli("drain", "--url", node.url, "--timeout", "0") == 2
    assert await run_cli("drain", "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "1") == 1
    assert "cannot drain" in capsys.readouterr().err


async def test_wait_caught_up_command(node: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("wait-caught-up", "n1", "--url", node.url, "--timeout", "5") == 0
    assert "n1 is caught up with leader n1" in capsys.readouterr().out
    assert await run_cli("wait-caught-up", "n9", "--url", node.url, "--timeout", "0.3") == 1
    assert "n9 is not a member" in capsys.readouterr().err
    assert await run_cli("wait-caught-up", "bad id", "--url", node.url) == 2
