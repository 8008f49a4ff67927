"""The failover Client on 3 real processes.

(a) With every seed but one down at connect time the client still connects, discovers all
three nodes from /v1/cluster, and once the others are back its calls reach them.
(b) Admin calls and idempotent publishes (producer id + sequence) keep succeeding through a
`kill -9` of the leader, with no duplicate; a plain publish that times out in flight is
reported as indefinite, never as a success.
(c) Plain publishes racing a `kill -9` of the leader: every success is stored exactly once,
every definite failure not at all, every unknown outcome at most once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import pytest

from raftmq.client import (
    AiohttpTransport,
    Client,
    IndefiniteError,
    NotFoundError,
    RaftMQError,
    RawResponse,
)
from raftmq.client.retry import RetryPolicy
from tests.integration.cluster_harness import ClusterHarness, wait_for
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

POLICY = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=0.5, deadline_s=30.0)


@dataclass
class RecordingTransport:
    """The real transport, noting which node (X-Raftmq-Node) answered each request."""

    inner: AiohttpTransport = field(default_factory=AiohttpTransport)
    answered_by: list[tuple[str, str, int]] = field(default_factory=list)

    async def request(self, url: str, method: str, path: str, *, body: bytes | None,
                      headers: Mapping[str, str], params: Mapping[str, str] | None,
                      timeout_s: float) -> RawResponse:
        response = await self.inner.request(url, method, path, body=body, headers=headers,
                                            params=params, timeout_s=timeout_s)
        self.answered_by.append((response.header("X-Raftmq-Node") or "?", path, response.status))
        return response

    async def close(self) -> None:
        await self.inner.close()


def _start(harness: ClusterHarness) -> str:
    harness.start()
    leader = harness.wait_for_leader(timeout_s=30.0)
    urls = {node.url for node in harness.nodes.values()}

    def all_announced() -> bool:
        view = harness.cluster_view(leader) or {}
        nodes = view.get("nodes")
        return isinstance(nodes, dict) and {meta.get("http_url") for meta in nodes.values()} == urls

    wait_for(all_announced, 30.0, message="every node's http_url in the directory")
    return leader


async def _wait_until_async(check: Callable[[], Awaitable[bool]], timeout_s: float,
                            what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _publish_path(queue: str) -> str:
    return f"/v1/queues/{queue}/publish"


async def test_connect_with_all_seeds_but_one_down(cluster_factory: ClusterFactory) -> None:
    harness = cluster_factory(3)
    _start(harness)
    url = {node_id: node.url for node_id, node in harness.nodes.items()}
    harness.kill("n2")
    harness.kill("n3")
    transport = RecordingTransport()
    # The dead seeds come first: the client must get past them.
    client = await Client.connect([url["n2"], url["n3"], url["n1"]], retry=POLICY,
                                  request_timeout_s=3.0, transport=transport)
    async with client:
        assert sorted(client.nodes) == sorted(url.values())
        async with Client.connect(url["n1"], retry=POLICY) as from_one_seed:
            assert sorted(from_one_seed.nodes) == sorted(url.values())

        harness.start_node("n2")
        harness.start_node("n3")
        harness.wait_for_leader(timeout_s=30.0)
        assert await client.declare_queue("after-restart") is True
        # Without n1 only the discovered nodes can answer.
        harness.kill("n1")
        harness.wait_for_leader(timeout_s=30.0, exclude=["n1"])
        answered_before = len(transport.answered_by)
        assert await client.declare_queue("after-restart") is False

        async def listed() -> bool:
            # A follower serves reads from its own replica, which may lag by a moment.
            return "after-restart" in [queue["name"] for queue in await client.list_queues()]

        await _wait_until_async(listed, 10.0, "the queue to be listed")
        answers = transport.answered_by[answered_before:]
        assert {node for node, _, status in answers if status < 300} <= {"n2", "n3"}
        assert len([status for _, _, status in answers if status < 300]) >= 2
        assert client.leader_url in (url["n2"], url["n3"])


@dataclass
class Progress:
    published: list[int] = field(default_factory=list)
    admin_rounds: int = 0
    stop: bool = False


async def _publish_idempotently(client: Client, queue: str, progress: Progress) -> None:
    sequence = 0
    while not progress.stop:
        document = {"messages": [{"body": b"m-%d" % sequence}], "producer_id": "failover-producer",
                    "sequence": sequence}
        receipt = await client.request("POST", _publish_path(queue), body=document, write=True,
                                       idempotent=True)
        assert receipt["accepted"] == 1 or receipt["duplicate"], receipt
        progress.published.append(sequence)
        sequence += 1


async def _admin(client: Client, queue: str, progress: Progress) -> None:
    while not progress.stop:
        assert await client.declare_queue(queue) is False
        await client.declare_exchange("failover-ex", "fanout")
        await client.bind("failover-ex", queue)
        assert queue in [info["name"] for info in await client.list_queues()]
        await client.queue_info(queue)
        await client.cluster_status()
        progress.admin_rounds += 1


async def _wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_calls_survive_a_leader_kill(cluster_factory: ClusterFactory) -> None:
    harness = cluster_factory(3)
    leader = _start(harness)
    queue = "failover"
    client = await Client.connect([node.url for node in harness.nodes.values()], retry=POLICY,
                                  request_timeout_s=5.0)
    async with client:
        await client.declare_queue(queue)
        progress = Progress()
        workers = asyncio.gather(_publish_idempotently(client, queue, progress),
                                 _admin(client, queue, progress))
        try:
            await _wait_until(lambda: len(progress.published) >= 100, 30.0, "100 publishes")
            await asyncio.to_thread(harness.kill, leader)
            killed_at = (len(progress.published), progress.admin_rounds)
            # Within the deadline, both kinds of calls go on through the new leader.
            await _wait_until(lambda: len(progress.published) >= killed_at[0] + 100
                              and progress.admin_rounds >= killed_at[1] + 5, 30.0,
                              "calls to succeed after the kill")
        finally:
            progress.stop = True
            await workers
        assert client.leader_url not in (None, harness.nodes[leader].url)
        total = len(progress.published)
        assert progress.published == list(range(total))

        ready = await _depth_at_least(client, queue, total)
        assert ready == total, f"{ready} stored for {total} confirmed publishes"

        # A plain publish (no producer id) whose answer never comes: its outcome is unknown.
        await asyncio.to_thread(harness.start_node, leader)
        new_leader = await asyncio.to_thread(harness.wait_for_leader, 30.0)
        await client.declare_queue(queue)  # refreshes the leader hint
        await asyncio.to_thread(harness.pause, new_leader)
        with pytest.raises(IndefiniteError) as raised:
            await client.request("POST", _publish_path(queue), body={"messages": [
                {"body": b"plain"}]}, write=True, idempotent=False, attempt_timeout_s=1.0)
        assert raised.value.definite is False
        await asyncio.to_thread(harness.kill, new_leader)
        await asyncio.to_thread(harness.wait_for_leader, 30.0)
        assert await _depth_at_least(client, queue, total) in (total, total + 1)


async def _depth_at_least(client: Client, queue: str, expected: int) -> int:
    """The queue's depth once the replica read shows at least `expected`. Reads are served by
    one replica's state, which may lag (a restarted node may not even have the queue yet) but
    never shows more than was stored."""
    deadline = time.monotonic() + 30.0
    while True:
        try:
            ready = int((await client.queue_info(queue))["ready"])
        except NotFoundError:
            ready = -1
        if ready >= expected or time.monotonic() > deadline:
            return ready
        await asyncio.sleep(0.05)


async def _publish_plainly(client: Client, queue: str, worker: int, outcomes: dict[bytes, str],
                           stop: asyncio.Event) -> None:
    number = 0
    while not stop.is_set():
        body = b"w%d-%d" % (worker, number)
        number += 1
        try:
            await client.request("POST", _publish_path(queue), body={"messages": [{"body": body}]},
                                 write=True, idempotent=False)
        except IndefiniteError:
            outcomes[body] = "unknown"
        except RaftMQError as error:
            assert error.definite
            outcomes[body] = "failed"
        else:
            outcomes[body] = "ok"


async def _drain(client: Client, queue: str) -> Counter[bytes]:
    stored: Counter[bytes] = Counter()
    while True:
        answer = await client.request(
            "POST", f"/v1/queues/{queue}/claim",
            body={"max_messages": 1000, "lease_ms": 600_000, "wait_ms": 0}, write=True,
            idempotent=True)
        if not answer["messages"]:
            return stored
        stored.update(message["body"] for message in answer["messages"])


async def test_plain_publish_outcomes_through_a_leader_kill(cluster_factory: ClusterFactory) -> None:
    harness = cluster_factory(3)
    leader = _start(harness)
    queue = "plain"
    client = await Client.connect([node.url for node in harness.nodes.values()], retry=POLICY,
                                  request_timeout_s=5.0)
    async with client:
        await client.declare_queue(queue)
        outcomes: dict[bytes, str] = {}
        stop = asyncio.Event()
        workers = asyncio.gather(*(_publish_plainly(client, queue, worker, outcomes, stop)
                                   for worker in range(8)))
        try:
            await _wait_until(lambda: len(outcomes) >= 200, 30.0, "200 publishes")
            await asyncio.to_thread(harness.kill, leader)
            before = len(outcomes)
            await _wait_until(lambda: list(outcomes.values())[before:].count("ok") >= 200, 30.0,
                              "publishes to succeed after the kill")
        finally:
            stop.set()
            await workers
        await asyncio.to_thread(harness.wait_for_leader, 30.0)
        stored = await _drain(client, queue)
        by_outcome = Counter(outcomes.values())
        assert set(stored) <= set(outcomes), "stored bodies nobody published"
        for body, outcome in outcomes.items():
            allowed = {"ok": {1}, "failed": {0}, "unknown": {0, 1}}[outcome]
            assert stored[body] in allowed, (body, outcome, stored[body], by_outcome)
