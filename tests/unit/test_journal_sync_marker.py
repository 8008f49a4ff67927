"""The journal's sync marker and the power-loss simulation (`raftmq debug lose-unsynced`).

Each "run" of a journal happens in a forked child that is killed with SIGKILL, like a node
after `kill -9`: nothing it wrote is lost by the kill itself, and its lock dies with it."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from raftmq.broker.cli import main
from raftmq.cluster.journal import DurableJournal, lose_unsynced_writes
from raftmq.cluster.sync_marker import MARKER_NAME, MarkerError, read_marker

pytestmark = pytest.mark.timeout(60)

Run = Callable[[DurableJournal], None]


def run_and_kill(directory: Path, fsync: bool, run: Run) -> None:
    """Open the journal with the marker in a child process, `run` it, then SIGKILL the child."""

    def child() -> None:
        journal = DurableJournal(directory, fsync=fsync, sync_marker=True)
        run(journal)
        os.kill(os.getpid(), signal.SIGKILL)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(timeout=30)
    assert process.exitcode == -signal.SIGKILL


def add(journal: DurableJournal, first: int, count: int, term: int = 1) -> None:
    for index in range(first, first + count):
        journal.add(b"entry-%d" % index, index, term)


def indexes(directory: Path) -> list[int]:
    journal = DurableJournal(directory, fsync=False)
    try:
        return [entry[1] for entry in journal[:]]
    finally:
        journal._destroy()


def test_fsync_always_keeps_what_was_synced_and_loses_the_rest(tmp_path: Path) -> None:
    def run(journal: DurableJournal) -> None:
        add(journal, 1, 5)
        journal.sync()
        add(journal, 6, 3)  # written, never synced

    run_and_kill(tmp_path, True, run)
    assert indexes(tmp_path) == list(range(1, 9))  # the kill alone loses nothing
    report = lose_unsynced_writes(tmp_path)
    assert report.journal_records_cut == 3 and report.journal_bytes_cut > 0
    assert indexes(tmp_path) == [1, 2, 3, 4, 5]
    assert lose_unsynced_writes(tmp_path).journal_records_cut == 0  # idempotent


def test_fsync_never_loses_everything_written_since_start(tmp_path: Path) -> None:
    run_and_kill(tmp_path, False, lambda journal: add(journal, 1, 4))
    assert lose_unsynced_writes(tmp_path).journal_records_cut == 4
    assert indexes(tmp_path) == []

    def second(journal: DurableJournal) -> None:
        journal._destroy()  # a clean stop fsyncs everything, whatever the policy
        reopened = DurableJournal(tmp_path, fsync=False, sync_marker=True)
        add(reopened, 1, 2)
        reopened.sync()
        reopened._destroy()
        again = DurableJournal(tmp_path, fsync=False, sync_marker=True)
        add(again, 3, 6)
        again.sync()  # no fsync under "never": not durable

    run_and_kill(tmp_path, False, second)
    report = lose_unsynced_writes(tmp_path)
    assert report.journal_records_cut == 6
    assert indexes(tmp_path) == [1, 2]


def test_the_meta_file_goes_back_to_its_durable_version(tmp_path: Path) -> None:
    def first(journal: DurableJournal) -> None:
        journal.setCurrentTerm(3, "n1")  # fsynced at once under "always"

    run_and_kill(tmp_path, True, first)
    run_and_kill(tmp_path, False, lambda journal: journal.setCurrentTerm(7, "n2"))
    report = lose_unsynced_writes(tmp_path)
    assert report.meta_restored
    journal = DurableJournal(tmp_path, fsync=False)
    try:
        assert (journal.getCurrentTerm(), journal.getVotedForNodeId()) == (3, "n1")
    finally:
        journal._destroy()


def test_a_truncation_lowers_and_a_compaction_resets_the_durable_length(tmp_path: Path) -> None:
    def run(journal: DurableJournal) -> None:
        add(journal, 1, 6)
        journal._destroy()
        reopened = DurableJournal(tmp_path, fsync=False, sync_marker=True)  # 6 durable
        reopened.deleteEntriesFrom(4)  # a conflicting leader: entries 5 and 6 go
        add(reopened, 5, 2, term=2)
        reopened.deleteEntriesTo(2)  # compaction rewrites and fsyncs what remains
        add(reopened, 7, 1, term=2)

    run_and_kill(tmp_path, False, run)
    report = lose_unsynced_writes(tmp_path)
    assert report.journal_records_cut == 1
    assert indexes(tmp_path) == [3, 4, 5, 6]


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(MarkerError, match="not a Raft data directory"):
        lose_unsynced_writes(tmp_path / "missing")
    plain = DurableJournal(tmp_path, fsync=False)
    plain._destroy()
    with pytest.raises(MarkerError, match="--sync-marker"):
        lose_unsynced_writes(tmp_path)
    running = DurableJournal(tmp_path, fsync=False, sync_marker=True)
    try:
        with pytest.raises(MarkerError, match="running node"):
            lose_unsynced_writes(tmp_path)
    finally:
        running._destroy()
    assert read_marker(tmp_path).journal_bytes == 0
    (tmp_path / MARKER_NAME).write_bytes(b"\x93\x01")
    with pytest.raises(MarkerError, match="unreadable"):
        lose_unsynced_writes(tmp_path)


def test_the_cli_says_what_it_cut(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raft_dir = tmp_path / "raft"

    def run(journal: DurableJournal) -> None:
        add(journal, 1, 2)
        journal.sync()
        add(journal, 3, 5)

    run_and_kill(raft_dir, True, run)
    assert main(["debug", "lose-unsynced", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(5 records)" in out and "journal.meta: unchanged" in out
    assert main(["debug", "lose-unsynced", "--data-dir", str(tmp_path / "nope")]) == 1
    assert "not a Raft data directory" in capsys.readouterr().err


def test_the_switch_from_the_flag_or_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    from raftmq.broker.config import parse_node_settings

    flags = ["--node-id", "n1", "--raft-bind", "127.0.0.1:7001", "--secret", "s3cret"]
    assert parse_node_settings(flags, {}).sync_marker is False
    assert parse_node_settings([*flags, "--sync-marker"], {}).sync_marker is True
    assert parse_node_settings(flags, {"RAFTMQ_SYNC_MARKER": "1"}).sync_marker is True
    assert parse_node_settings(flags, {"RAFTMQ_SYNC_MARKER": "0"}).sync_marker is False
    with pytest.raises(SystemExit) as exited:
        parse_node_settings(flags, {"RAFTMQ_SYNC_MARKER": "maybe"})
    assert exited.value.code == 2 and "RAFTMQ_SYNC_MARKER" in capsys.readouterr().err
