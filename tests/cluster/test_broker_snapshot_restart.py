"""The broker's state machine under the real cluster layer: forked snapshots, compaction, restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from raftmq.broker.commands import Claim, DeclareQueue, OutMessage, Publish, QueueArgs, encode_command
from raftmq.broker.results import ClaimResult, PublishResult
from raftmq.broker.state import BrokerState
from raftmq.cluster import RaftNode

from .raft_fixtures import make_configs, wait_until

pytestmark = pytest.mark.timeout(120)


async def _start(configs: list) -> list[tuple[RaftNode, BrokerState]]:  # type: ignore[type-arg]
    members = [(RaftNode(c, state), state) for c, state in ((c, BrokerState()) for c in configs)]
    await asyncio.gather(*(node.start() for node, _ in members))
    await wait_until(lambda: sum(n.is_leader for n, _ in members) == 1
                     and all(n.leader_id for n, _ in members), 10.0, "a leader")
    return members


async def test_queue_contents_survive_compaction_and_a_full_restart(tmp_path: Path) -> None:
    configs = make_configs(tmp_path, 3, compaction_min_entries=40)
    members = await _start(configs)
    node = members[1][0]
    try:
        await node.propose(encode_command(DeclareQueue(now_ms=1, name="q", args=QueueArgs())))
        for batch in range(120):
            messages = tuple(OutMessage("q", b"m-%04d-%02d" % (batch, i)) for i in range(10))
            applied = await node.propose(encode_command(Publish(now_ms=2, exchange="", messages=messages)))
            assert isinstance(applied.result, PublishResult) and applied.result.accepted == 10
        claimed = await node.propose(encode_command(Claim(now_ms=3, queue="q", consumer="c",
                                                          max_messages=100, lease_ms=60_000)))
        assert isinstance(claimed.result, ClaimResult) and len(claimed.result.deliveries) == 100
        await wait_until(lambda: all(n.status().snapshots_written > 0 for n, _ in members), 20.0,
                         "a snapshot on every node")
        await wait_until(lambda: all(s.queue_info("q") is not None
                                     and s.queue_info("q").ready == 1100 for _, s in members),  # type: ignore[union-attr]
                         10.0, "replication")
    finally:
        await asyncio.gather(*(n.stop() for n, _ in members))
    restarted = await _start(configs)
    try:
        for _, state in restarted:
            info = state.queue_info("q")
            assert info is not None and (info.ready, info.leased) == (1100, 100)
        # The restarted cluster keeps going from the restored state.
        applied = await restarted[0][0].propose(encode_command(Claim(
            now_ms=4, queue="q", consumer="c", max_messages=5, lease_ms=60_000)))
        assert isinstance(applied.result, ClaimResult)
        assert [d.body for d in applied.result.deliveries] == [b"m-0010-%02d" % i for i in range(5)]
    finally:
        await asyncio.gather(*(n.stop() for n, _ in restarted))
