"""Membership changes on real `raftmq server` processes: 3 nodes -> add n4 -> start n4 (it
catches up and serves the data) -> add n5 -> remove n5 -> remove n4, and the removed n4, left
running and then restarted with its old --peers, never disturbs the three that remain."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest

from raftmq.client import Client, RaftMQ
from raftmq.client.wire import OutgoingMessage
from tests.integration.cluster_harness import ClusterHarness, wait_for
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

QUEUE = "membership-q"
MESSAGES = 100
UNDISTURBED_S = 10.0


def send(url: str, method: str, path: str, document: object = None) -> tuple[int, dict[str, object]]:
    data = None if document is None else json.dumps(document).encode()
    request = urllib.request.Request(url + path, data=data, method=method, headers={
        "Accept": "application/json", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15.0) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def view(harness: ClusterHarness, node_id: str) -> dict[str, object]:
    found = harness.cluster_view(node_id)
    assert found is not None, f"{node_id} did not answer /v1/cluster"
    return found


def peer_ids(doc: dict[str, object]) -> set[str]:
    peers = doc["peers"]
    assert isinstance(peers, list)
    return {str(peer["node_id"]) for peer in peers}


def peer(doc: dict[str, object], node_id: str) -> dict[str, object]:
    peers = doc["peers"]
    assert isinstance(peers, list)
    return next(p for p in peers if p["node_id"] == node_id)


def applied(harness: ClusterHarness, node_id: str) -> int:
    found = harness.cluster_view(node_id)
    return -1 if found is None else int(found["applied_index"])  # type: ignore[call-overload]


def test_add_catch_up_add_remove_remove(cluster_factory: ClusterFactory) -> None:
    harness = cluster_factory(3)
    harness.start()
    leader = harness.wait_for_leader()
    harness.wait_ready()
    asyncio.run(_scenario(harness, leader))


async def _publish(url: str, count: int, tag: str) -> None:
    async with RaftMQ(url) as node:
        receipt = await node.publish_to_queue(
            QUEUE, [OutgoingMessage(f"{tag}-{i}".encode()) for i in range(count)])
        assert receipt.accepted == count


async def _scenario(harness: ClusterHarness, leader: str) -> None:
    leader_url = harness.nodes[leader].url
    follower = next(n for n in ("n1", "n2", "n3") if n != leader)
    async with RaftMQ(leader_url) as node:
        await node.declare_queue(QUEUE)
    await _publish(leader_url, MESSAGES, "before")
    n4 = harness.add_node("n4")

    # A follower does not make membership changes: it names the leader to ask instead.
    status, body = send(harness.nodes[follower].url, "POST", "/v1/cluster/members",
                        {"node_id": "n4", "raft_address": n4.raft_address})
    assert (status, body["error"]["code"]) == (503, "not_leader")  # type: ignore[index]
    assert body["error"]["leader"] == leader_url and body["error"]["definite"]  # type: ignore[index]
    for bad in ({"node_id": "bad id", "raft_address": n4.raft_address},
                {"node_id": "n4", "raft_address": "127.0.0.1:99999"},
                {"node_id": "n4", "raft_address": "0.0.0.0:7000"},
                {"node_id": "n4"}, {"node_id": "n4", "raft_address": "x:1", "extra": 1}):
        status, body = send(leader_url, "POST", "/v1/cluster/members", bad)
        assert status == 400 and body["error"]["code"] == "invalid_argument", (bad, body)  # type: ignore[index]
    status, body = send(leader_url, "DELETE", f"/v1/cluster/members/{leader}")
    assert (status, body["error"]["code"]) == (409, "cannot_remove_leader")  # type: ignore[index]

    # The client, seeded with a follower only, gets the change made by the leader.
    async with Client.connect([harness.nodes[follower].url]) as client:
        members = await client.add_member("n4", n4.raft_address)
        assert {m["node_id"] for m in members} == {"n1", "n2", "n3", "n4"}
        leader_view = view(harness, leader)
        assert peer(leader_view, "n4")["address"] == n4.raft_address
        assert peer(leader_view, "n4")["http_url"] is None  # not started, not announced yet

        harness.start_node("n4")
        target = applied(harness, leader)
        wait_for(lambda: applied(harness, "n4") >= target, 30.0, message="n4 caught up")
        harness.wait_ready(["n4"])
        async with RaftMQ(n4.url) as node:
            assert (await node.queue_info(QUEUE))["ready"] == MESSAGES
        wait_for(lambda: peer(view(harness, leader), "n4")["http_url"] == n4.url
                 and peer(view(harness, leader), "n4")["connected"], 15.0,
                 message="n4 connected and announced")

        members = await client.add_member("n5", "127.0.0.1:1")
        assert {m["node_id"] for m in members} == {"n1", "n2", "n3", "n4", "n5"}
        members = await client.remove_member("n5")
        assert {m["node_id"] for m in members} == {"n1", "n2", "n3", "n4"}
        members = await client.remove_member("n4")
        assert {m["node_id"] for m in members} == {"n1", "n2", "n3"}

    for node_id in ("n1", "n2", "n3"):
        wait_for(lambda node_id=node_id: peer_ids(view(harness, node_id)) ==  # type: ignore[misc]
                 {"n1", "n2", "n3"} - {node_id}, 10.0, message=f"n4 gone from {node_id}")
        assert "n4" not in view(harness, node_id)["nodes"]  # type: ignore[operator]
    await _removed_node_stays_harmless(harness, leader)


async def _removed_node_stays_harmless(harness: ClusterHarness, leader: str) -> None:
    """n4, removed but still running (and then restarted with its old --peers), must not take
    the leadership nor push the term up, and the three members keep committing."""
    term = int(view(harness, leader)["term"])  # type: ignore[call-overload]
    started = time.monotonic()
    restarted = False
    rounds = 0
    while time.monotonic() - started < UNDISTURBED_S:
        if not restarted and time.monotonic() - started > UNDISTURBED_S / 2:
            harness.restart("n4")  # kill -9, then the same command: --peers n1,n2,n3
            restarted = True
        await _publish(harness.nodes[leader].url, 5, f"round{rounds}")
        rounds += 1
        for node_id in ("n1", "n2", "n3"):
            doc = view(harness, node_id)
            assert (doc["leader_id"], doc["term"]) == (leader, term), (node_id, doc)
        await asyncio.sleep(0.2)
    assert rounds > 10
    async with RaftMQ(harness.nodes[leader].url) as node:
        assert (await node.queue_info(QUEUE))["ready"] == MESSAGES + 5 * rounds
    n4_view = view(harness, "n4")
    assert n4_view["role"] != "leader"
