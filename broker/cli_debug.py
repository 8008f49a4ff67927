"""`raftmq debug`: tools for tests and investigations, never needed in normal operation.

`lose-unsynced` simulates a power loss on a stopped node that ran with --sync-marker: it cuts
the journal back to what had been fsynced (and the meta file to its last fsynced version),
printing what it cut. Restarting the node then shows what a power loss would have cost.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_debug_parser"]

EXIT_FAILURE = 1


def add_debug_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    debug = subparsers.add_parser("debug", help="tools for tests and investigations",
                                  description="Tools for tests and investigations.")
    commands = debug.add_subparsers(dest="debug_command", metavar="COMMAND", required=True)
    lose = commands.add_parser(
        "lose-unsynced", help="simulate a power loss on a stopped node's data dir",
        description="On a STOPPED node that ran with --sync-marker: cut its Raft journal to the "
        "length it had fsynced, and put its meta file (term, vote, commit index) back to its "
        "last fsynced version, as a power loss would. With --fsync never, only what existed when "
        "the node started counts as synced. Refuses without a marker or while the node runs.")
    lose.add_argument("--data-dir", required=True, type=Path, metavar="DIR",
                      help="the node's data dir (its --data-dir; the journal is in DIR/raft)")
    lose.set_defaults(handler=_lose_unsynced)


def _lose_unsynced(args: argparse.Namespace) -> int:
    from raftmq.cluster.journal import lose_unsynced_writes
    from raftmq.cluster.sync_marker import MarkerError

    raft_dir = Path(args.data_dir) / "raft"
    try:
        report = lose_unsynced_writes(raft_dir)
    except (MarkerError, OSError) as error:
        print(f"raftmq debug lose-unsynced: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    if report.journal_bytes_cut:
        print(f"journal.log: cut {report.journal_bytes_cut} bytes ({report.journal_records_cut} "
              f"records) beyond the {report.journal_bytes_kept} durable bytes")
    else:
        print(f"journal.log: nothing unsynced ({report.journal_bytes_kept} bytes, all durable)")
    print("journal.meta: " + ("put back to its last durable version" if report.meta_restored
                              else "unchanged (already durable)"))
    return 0
