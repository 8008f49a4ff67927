"""A real single-node broker (RaftNode + BrokerState + the HTTP app on a real TCP port) for the
API tests. Test modules import `broker` and mark themselves with `pytestmark = MODULE_LOOP`."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import pytest_asyncio
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from raftmq.broker.api import ApiLimits
from raftmq.broker.api.app import build_app
from raftmq.broker.state import BrokerState
from raftmq.broker.ticker import Ticker, wall_clock_ms
from raftmq.cluster import RaftConfig, RaftNode

__all__ = [
    "MAX_WAITERS",
    "MODULE_LOOP",
    "TEST_LIMITS",
    "Broker",
    "broker",
    "free_port",
    "start_broker",
    "stop_broker",
    "unique",
    "wait_for",
]

MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")
# Small limits so that "too large" cases are cheap to build.
TEST_LIMITS = ApiLimits(
    max_message_bytes=4096,
    max_batch_messages=50,
    max_request_bytes=64 * 1024,
    max_claim_messages=100,
    max_wait_ms=5_000,
    max_total_body_bytes=1 << 20,
    propose_timeout_s=5.0,
)
MAX_WAITERS = 8
_names = itertools.count()


def unique(prefix: str) -> str:
    """A fresh name per call: tests share one broker and must not see each other's queues."""
    return f"{prefix}-{next(_names)}"


def free_port() -> int:
    """A port the OS reports free (bind to port 0, then release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class Broker:
    node: RaftNode
    state: BrokerState
    app: web.Application
    client: TestClient[web.Request, web.Application]
    ticker: Ticker

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def call(
        self, method: str, path: str, document: object = None, *, fmt: str = "json",
        headers: dict[str, str] | None = None, data: bytes | None = None,
    ) -> tuple[ClientResponse, Any]:
        """One request; returns the response and its decoded body (None if empty)."""
        all_headers = dict(headers or {})
        if document is not None:
            if fmt == "json":
                data = json.dumps(document).encode()
                all_headers.setdefault("Content-Type", "application/json")
            else:
                data = msgpack.packb(document, use_bin_type=True)
                all_headers.setdefault("Content-Type", "application/msgpack")
        response = await self.client.request(method, path, data=data, headers=all_headers)
        payload = await response.read()
        return response, decode_body(response.headers.get("Content-Type", ""), payload)


def decode_body(content_type: str, payload: bytes) -> Any:
    if not payload:
        return None
    if content_type.startswith("application/msgpack"):
        return msgpack.unpackb(payload, raw=False)
    if content_type.startswith("application/json"):
        return json.loads(payload)
    return payload.decode()


async def start_broker(data_dir: Path, limits: ApiLimits = TEST_LIMITS) -> Broker:
    address = f"127.0.0.1:{free_port()}"
    http_port = free_port()
    state = BrokerState()
    config = RaftConfig(
        node_id="n1", bind_address=address, advertise_address=address, peers={},
        data_dir=data_dir, secret="test-secret", fsync="never",
        metadata={"http_url": f"http://127.0.0.1:{http_port}"},
    )
    node = RaftNode(config, state)
    await node.start()
    # build_app is create_app with a small waiter bound, so "too many waiters" is cheap to test.
    app = build_app(node, state, limits, clock_ms=wall_clock_ms, max_waiters=MAX_WAITERS)
    client: TestClient[web.Request, web.Application] = TestClient(
        TestServer(app, host="127.0.0.1", port=http_port)
    )
    await client.start_server()
    # The leader is elected and its http_url announced through the replicated directory.
    await wait_for(lambda: node.is_leader and "http_url" in node.node_metadata().get("n1", {}),
                   10.0, "single node to lead and announce itself")
    # As in the node process: the leader's ticker fires lease/TTL/delay timers.
    ticker = Ticker(node, state)
    ticker.start()
    return Broker(node, state, app, client, ticker)


async def stop_broker(broker: Broker) -> None:
    await broker.client.close()
    await broker.ticker.stop()
    await broker.node.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Broker]:
    started = await start_broker(tmp_path_factory.mktemp("raft"))
    try:
        yield started
    finally:
        await stop_broker(started)
