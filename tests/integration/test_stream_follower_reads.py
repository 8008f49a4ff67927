"""Reads from a replica never return an entry that is not committed (3 real processes).

The leader is cut off from both followers (SIGSTOP), so a publish it accepts reaches only its
own log. Reading that node right then must not show it. The node is then `kill -9`ed, the
followers elect a new leader and commit other records at the same offsets, and the old leader
restarts from its data dir, where the uncommitted entries still sit in its journal: as it
rejoins as a follower, no read may ever show them. A node that applied its journal past the
commit index on restart, or served its log instead of its applied state, fails this test.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.integration.cluster_harness import ClusterHarness
from tests.integration.conftest import ClusterFactory
from tests.integration.stream_http import CallFailed, StreamHttp

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

STREAM = "ledger"


def _bodies(document: dict[str, object]) -> list[bytes]:
    messages = document["messages"]
    assert isinstance(messages, list)
    return [message["body"] for message in messages]


async def _publish_committed(node: StreamHttp, prefix: bytes, count: int) -> dict[str, object]:
    deadline = time.monotonic() + 30.0
    while True:
        try:
            return await node.publish(STREAM, [{"body": prefix + b"%d" % i} for i in range(count)],
                                      producer_id=prefix.decode().rstrip("-"), sequence=1)
        except (CallFailed, aiohttp.ClientError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_uncommitted_entries_are_never_served(cluster_factory: ClusterFactory) -> None:
    harness: ClusterHarness = cluster_factory(3, fsync="always")
    harness.start()
    old_leader = harness.wait_for_leader()
    followers = [node_id for node_id in harness.nodes if node_id != old_leader]
    async with aiohttp.ClientSession() as session:
        leader_api = StreamHttp(session, harness.nodes[old_leader].url)
        await leader_api.declare_stream(STREAM, partitions=1)
        await _publish_committed(leader_api, b"committed-", 10)

        for follower in followers:
            harness.pause(follower)
        try:
            short = StreamHttp(session, harness.nodes[old_leader].url, timeout_s=1.5)
            with pytest.raises((CallFailed, TimeoutError, aiohttp.ClientError)) as failure:
                await short.publish(STREAM, [{"body": b"uncommitted-%d" % i} for i in range(5)])
            if isinstance(failure.value, CallFailed):
                assert not failure.value.definite, "a write that may be in the log is indefinite"
            # The entry is in the old leader's log, not committed: its replica must not show it.
            seen = await leader_api.fetch(STREAM, 0, 0)
            assert _bodies(seen) == [b"committed-%d" % i for i in range(10)]
            assert seen["next_offset"] == 10
            harness.kill(old_leader)
        finally:
            for follower in followers:
                harness.resume(follower)

        new_leader = harness.wait_for_leader(exclude=[old_leader])
        receipt = await _publish_committed(
            StreamHttp(session, harness.nodes[new_leader].url), b"new-", 5)
        assert receipt["offsets"] == [10, 11, 12, 13, 14], "the uncommitted records were lost"

        harness.start_node(old_leader)
        rejoined = StreamHttp(session, harness.nodes[old_leader].url, timeout_s=2.0)
        expected = [b"committed-%d" % i for i in range(10)] + [b"new-%d" % i for i in range(5)]
        deadline = time.monotonic() + 60.0
        reads = 0
        while True:
            try:
                bodies = _bodies(await rejoined.fetch(STREAM, 0, 0))
            except (CallFailed, aiohttp.ClientError, TimeoutError):
                bodies = None  # still starting
            if bodies is not None:
                reads += 1
                assert not any(body.startswith(b"uncommitted-") for body in bodies), bodies
                assert bodies == expected[:len(bodies)], "a replica served a record not committed"
                if bodies == expected:
                    break
            assert time.monotonic() < deadline, "the old leader never caught up"
            await asyncio.sleep(0.02)
        assert reads >= 1
