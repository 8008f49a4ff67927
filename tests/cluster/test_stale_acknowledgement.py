"""A leader ignores acknowledgements from another term.

pysyncobj's `next_node_idx` carried no term: one delayed by a partition and delivered by TCP
after the heal reached a node that led again in a later term, which counted it as proof that
the follower held its entries and committed entries no majority held (a follower then
truncated entries it had applied: found by the chaos suite's partition runs). Every
acknowledgement now carries its term, and the leader drops those from another term.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pysyncobj.transport import TCPTransport

from .raft_fixtures import make_cluster, make_configs, wait_until

pytestmark = pytest.mark.timeout(120)


async def test_acknowledgements_carry_their_term_and_a_stale_one_is_ignored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    acknowledgements: list[dict[str, Any]] = []
    original_send = TCPTransport.send

    def recording_send(transport: Any, node: Any, message: Any) -> None:
        if message.get("type") == "next_node_idx":
            acknowledgements.append(dict(message))
        original_send(transport, node, message)

    monkeypatch.setattr(TCPTransport, "send", recording_send)
    # Loop tick mode: the Raft core runs on this event loop, so poking it here cannot race.
    members = await make_cluster(make_configs(tmp_path, 3, tick_mode="loop"))
    try:
        await wait_until(lambda: sum(n.is_leader for n, _ in members) == 1, 10.0, "a leader")
        leader = next(node for node, _ in members if node.is_leader)
        for i in range(5):
            await leader.propose(b"v%d" % i, timeout_s=10.0)
        await wait_until(lambda: len(acknowledgements) > 0, 10.0, "acknowledgements")
        assert all(isinstance(ack.get("term"), int) and ack["term"] > 0 for ack in acknowledgements)

        assert leader._engine is not None
        core: Any = leader._engine._core
        follower = next(iter(core._SyncObj__otherNodes))
        term = core._SyncObj__raftCurrentTerm
        log_end = core._SyncObj__getCurrentLogIndex()
        core._SyncObj__raftMatchIndex[follower] = 0  # forget; the next real ack restores it

        def acknowledge(ack_term: int) -> None:
            core._SyncObj__onMessageReceived(follower, {
                "type": "next_node_idx", "next_node_idx": log_end + 1, "reset": False,
                "success": True, "term": ack_term})

        acknowledge(term - 1)
        assert core._SyncObj__raftMatchIndex[follower] == 0
        assert core.stale_acknowledgements >= 1
        acknowledge(term)  # the same message in the current term counts
        assert core._SyncObj__raftMatchIndex[follower] == log_end
    finally:
        for node, _ in members:
            await node.stop()
