"""With fsync=always a follower acknowledges entries only once they are on its disk."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.transport import TCPTransport

from raftmq.cluster.journal import DurableJournal

from .raft_fixtures import make_cluster, make_configs, wait_until

pytestmark = pytest.mark.timeout(120)


async def test_followers_fsync_before_acknowledging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    acknowledgements: list[bool] = []  # per acknowledgement: were all appended records synced?
    fsyncs = 0
    original_send = TCPTransport.send
    original_sync = DurableJournal._sync

    def recording_send(transport: Any, node: Any, message: Any) -> None:
        if message.get("type") == "next_node_idx":
            acknowledgements.append(not transport._syncObj._raftmq_journal._dirty)
        original_send(transport, node, message)

    def counting_sync(journal: DurableJournal) -> None:
        nonlocal fsyncs
        fsyncs += 1
        original_sync(journal)

    monkeypatch.setattr(TCPTransport, "send", recording_send)
    monkeypatch.setattr(DurableJournal, "_sync", counting_sync)
    members = await make_cluster(make_configs(tmp_path, 3, fsync="always"))
    try:
        await wait_until(lambda: sum(n.is_leader for n, _ in members) == 1, 10.0, "a leader")
        await asyncio.gather(*(members[i % 3][0].propose(b"v%d" % i, timeout_s=10.0)
                               for i in range(500)))
    finally:
        await asyncio.gather(*(node.stop() for node, _ in members))
    assert len(acknowledgements) > 5
    assert all(acknowledgements), f"{acknowledgements.count(False)} acknowledgements of unsynced entries"
    assert fsyncs > 5
