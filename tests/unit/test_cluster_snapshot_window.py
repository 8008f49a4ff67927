"""A node stopped after writing a snapshot but before dropping the journal prefix the snapshot
covers must not lose the entries after the snapshot when it restarts (pysyncobj clears a
journal that does not start with the snapshot's last two entries)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from raftmq.cluster import RaftConfig, RaftNode
from raftmq.cluster.journal import DurableJournal, JournalEntry
from tests.cluster.raft_fixtures import ListMachine, free_ports, wait_until

pytestmark = pytest.mark.timeout(60)


def entries_in(raft_dir: Path) -> list[JournalEntry]:
    journal = DurableJournal(raft_dir, fsync=False)
    try:
        return list(journal[:])
    finally:
        journal._destroy()


async def propose_all(node: RaftNode, values: list[bytes]) -> None:
    for value in values:
        await node.propose(value, timeout_s=5.0)


async def test_the_entries_after_a_snapshot_survive_a_stop_before_compaction(
        tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_ports(1)[0]}"
    config = RaftConfig(node_id="n1", bind_address=address, advertise_address=address,
                        peers={}, data_dir=tmp_path, secret="test-secret", fsync="never")
    values = [b"v%d" % i for i in range(15)]
    node = RaftNode(config, ListMachine())
    await node.start()
    try:
        await wait_until(lambda: node.is_leader, 10.0, "leadership")
        await propose_all(node, values[:10])
        shutil.copytree(config.raft_dir, tmp_path / "before")
        engine = node._engine
        assert engine is not None
        engine.force_compaction()
        await wait_until(lambda: engine.snapshotter.snapshots_written == 1 and
                         engine.journal[0][1] > 1, 10.0, "a snapshot and the compaction")
        await propose_all(node, values[10:])
    finally:
        await node.stop()

    # The journal as it was when the snapshot had been written, but not yet compacted: the
    # prefix from before the compaction, then everything the compacted journal holds.
    after = entries_in(config.raft_dir)
    prefix = [entry for entry in entries_in(tmp_path / "before") if entry[1] < after[0][1]]
    (config.raft_dir / "journal.log").unlink()
    journal = DurableJournal(config.raft_dir, fsync=False)
    for command, index, term in [*prefix, *after]:
        journal.add(command, index, term)
    journal._destroy()

    machine = ListMachine()
    restarted = RaftNode(config, machine)
    try:
        await asyncio.wait_for(restarted.start(), 15.0)
        assert machine.values == values
        assert restarted._engine is not None and restarted._engine.journal[0][1] > 1
    finally:
        await restarted.stop()
