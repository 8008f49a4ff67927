"""GET /v1/cluster/digest on 3 real processes: once the replicas report the same applied index
after queue publishes, claims, acks and stream appends (through leader and followers), their
digests are equal; and they are equal again, and different, after more writes."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from raftmq.client import Client, RaftMQ
from raftmq.client.wire import OutgoingMessage
from tests.integration.cluster_harness import ClusterHarness, wait_for
from tests.integration.conftest import ClusterFactory
from tests.integration.stream_http import StreamHttp

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NODES = ("n1", "n2", "n3")


def digests(harness: ClusterHarness) -> dict[str, tuple[int, str]] | None:
    """Every node's (applied index, digest), or None while a node does not answer."""
    found: dict[str, tuple[int, str]] = {}
    for node_id in NODES:
        reply = harness.get_json(node_id, "/v1/cluster/digest")
        if reply is None or reply[0] != 200 or not isinstance(reply[1], dict):
            return None
        assert reply[1]["node_id"] == node_id
        found[node_id] = (int(reply[1]["applied_index"]), str(reply[1]["digest"]))
    return found


def agreed_digest(harness: ClusterHarness) -> tuple[int, str]:
    """Wait until the three replicas report one applied index; their digests must then agree."""

    def same_index() -> dict[str, tuple[int, str]] | None:
        found = digests(harness)
        return found if found and len({index for index, _ in found.values()}) == 1 else None

    found = wait_for(same_index, 20.0, interval_s=0.05, message="one applied index")
    assert found is not None
    assert len(set(found.values())) == 1, f"replicas at one index disagree: {found}"
    return found["n1"]


async def _writes(harness: ClusterHarness, leader: str, round_no: int) -> None:
    urls = [harness.nodes[node_id].url for node_id in NODES]
    queue, stream = f"q{round_no}", f"s{round_no}"
    async with RaftMQ(harness.nodes[leader].url) as node:
        await node.declare_queue(queue)
        await node.declare_stream(stream, partitions=2)
    for url in urls:  # followers forward their writes through Raft
        async with RaftMQ(url) as node:
            await node.publish_to_queue(queue, [OutgoingMessage(b"%s-%d" % (url.encode(), i))
                                                for i in range(20)])
    async with RaftMQ(urls[1]) as node:
        claimed = await node.claim(queue, max_messages=15, consumer="c")
        # Every lease settled: nothing left waiting on time, so the cluster goes quiet.
        await node.ack(queue, claimed[:10])
        await node.nack(queue, claimed[10:], requeue=False)
    async with aiohttp.ClientSession() as session:
        streams = StreamHttp(session, urls[2])
        await streams.publish(stream, [{"body": b"r%d-%d" % (round_no, i), "key": f"k{i % 3}"}
                                       for i in range(30)])


def test_replicas_at_one_index_have_one_digest(cluster_factory: ClusterFactory) -> None:
    harness = cluster_factory(3)
    harness.start()
    leader = harness.wait_for_leader()
    harness.wait_ready()
    asyncio.run(_writes(harness, leader, 1))
    first_index, first = agreed_digest(harness)
    asyncio.run(_writes(harness, leader, 2))
    second_index, second = agreed_digest(harness)
    assert second_index > first_index and second != first

    async def through_client() -> str:
        async with Client.connect([harness.nodes[leader].url]) as client:
            document = await client.state_digest()
        assert document["applied_index"] == second_index
        return str(document["digest"])

    assert asyncio.run(through_client()) == second
