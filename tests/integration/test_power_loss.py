"""Power loss, simulated on a real single-node `raftmq server` run with --sync-marker: kill -9,
then `raftmq debug lose-unsynced` on its data dir, then restart. With fsync=always every
acknowledged publish is still there; with fsync=never the writes since the node's start are
gone (and the command says how many records it cut)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import pytest

from raftmq.client import RaftMQ
from raftmq.client.wire import OutgoingMessage
from tests.integration.cluster_harness import ClusterHarness
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

QUEUE = "power"


def start(cluster_factory: ClusterFactory, fsync: str) -> ClusterHarness:
    harness = cluster_factory(1, fsync=fsync, server_args=["--sync-marker"])
    harness.start()
    harness.wait_for_leader()
    harness.wait_ready()
    return harness


def restart(harness: ClusterHarness) -> None:
    """Start n1 again and wait until everything in its journal is applied: a replica is
    ready once it replayed what its meta file says was committed, and that commit index is
    written lazily; the rest is committed again by the new term's first entry. A write of
    our own, acknowledged, comes after all of it."""
    harness.start_node("n1")
    harness.wait_for_leader()
    harness.wait_ready()

    async def probe() -> None:
        async with RaftMQ(harness.nodes["n1"].url) as node:
            await node.declare_queue("probe")

    asyncio.run(probe())


def publish(harness: ClusterHarness, count: int, declare: bool = False) -> None:
    async def run() -> None:
        async with RaftMQ(harness.nodes["n1"].url) as node:
            if declare:
                await node.declare_queue(QUEUE)
            for i in range(count):  # one acknowledged publish after the other
                receipt = await node.publish_to_queue(QUEUE, [OutgoingMessage(b"m%d" % i)])
                assert receipt.accepted == 1

    asyncio.run(run())


def ready(harness: ClusterHarness) -> int:
    reply = harness.get_json("n1", f"/v1/queues/{QUEUE}")
    assert reply is not None and reply[0] == 200 and isinstance(reply[1], dict), reply
    return int(reply[1]["ready"])


def lose_unsynced(harness: ClusterHarness) -> int:
    """Run the CLI on the stopped node; the number of records it reports cut."""
    done = subprocess.run(
        [sys.executable, "-m", "raftmq.broker.cli", "debug", "lose-unsynced",
         "--data-dir", str(harness.nodes["n1"].data_dir)],
        capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    found = re.search(r"\((\d+) records\)", done.stdout)
    return int(found.group(1)) if found else 0


def test_fsync_always_keeps_every_acknowledged_write(cluster_factory: ClusterFactory) -> None:
    harness = start(cluster_factory, "always")
    publish(harness, 40, declare=True)
    harness.kill("n1")
    lose_unsynced(harness)
    restart(harness)
    assert ready(harness) == 40


def test_fsync_never_loses_the_writes_since_start(cluster_factory: ClusterFactory) -> None:
    harness = start(cluster_factory, "never")
    publish(harness, 20, declare=True)
    harness.kill("n1")
    restart(harness)  # a kill -9 alone loses nothing; this start is the new durable base
    assert ready(harness) == 20
    publish(harness, 30)
    harness.kill("n1")
    cut = lose_unsynced(harness)
    assert cut >= 30  # every publish was its own entry (plus the node's own entries)
    restart(harness)
    assert ready(harness) == 20
