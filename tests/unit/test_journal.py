"""DurableJournal: the Raft log on disk (pysyncobj's journal interface plus an fsync policy)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from raftmq.cluster.journal import DurableJournal, JournalEntry

RECORD_HEADER_BYTES = 24  # len u32 | crc32 u32 | index u64 | term u64


def sample_entries(count: int, first_index: int = 1) -> list[JournalEntry]:
    return [(f"command-{i}".encode() * (i % 3 + 1), i, 1 + i // 4)
            for i in range(first_index, first_index + count)]


def fill(journal: DurableJournal, entries: list[JournalEntry]) -> None:
    for command, index, term in entries:
        journal.add(command, index, term)


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    return tmp_path / "raft"


class ReopenFn(Protocol):
    def __call__(self, fsync: bool = False) -> DurableJournal: ...


@pytest.fixture
def reopen(journal_dir: Path) -> Iterator[ReopenFn]:
    """Open the journal in `journal_dir` (again); every journal opened is closed at teardown."""
    opened: list[DurableJournal] = []

    def open_journal(fsync: bool = False) -> DurableJournal:
        journal = DurableJournal(journal_dir, fsync=fsync)
        opened.append(journal)
        return journal

    yield open_journal
    for journal in opened:
        journal._destroy()


def entries_of(journal: DurableJournal) -> list[JournalEntry]:
    return journal[:]


def log_path(journal_dir: Path) -> Path:
    return journal_dir / "journal.log"


def test_entries_survive_reopen(reopen: ReopenFn) -> None:
    entries = sample_entries(10)
    first = reopen()
    fill(first, entries)
    first._destroy()

    second = reopen()
    assert entries_of(second) == entries
    assert len(second) == 10
    assert second.total_bytes == sum(len(command) for command, _, _ in entries)


def test_new_entries_after_reopen_append_after_the_old_ones(reopen: ReopenFn) -> None:
    entries = sample_entries(6)
    first = reopen()
    fill(first, entries[:3])
    first._destroy()
    second = reopen()
    fill(second, entries[3:])
    second._destroy()
    assert entries_of(reopen()) == entries


def test_empty_command_round_trips(reopen: ReopenFn) -> None:
    first = reopen()
    first.add(b"", 1, 1)
    first.add(b"x", 2, 1)
    first._destroy()
    assert entries_of(reopen()) == [(b"", 1, 1), (b"x", 2, 1)]


@pytest.mark.parametrize("cut_bytes", [1, 5, RECORD_HEADER_BYTES - 1, RECORD_HEADER_BYTES,
                                       RECORD_HEADER_BYTES + 3])
def test_torn_tail_is_cut_and_earlier_entries_kept(reopen: ReopenFn, journal_dir: Path,
                                                   cut_bytes: int) -> None:
    entries = sample_entries(5)
    first = reopen()
    fill(first, entries)
    first._destroy()
    path = log_path(journal_dir)
    full_size = path.stat().st_size
    last_record_bytes = RECORD_HEADER_BYTES + len(entries[-1][0])
    # Cut somewhere inside the last record: from its end back to within its header.
    with open(path, "r+b") as file:
        file.truncate(full_size - min(cut_bytes, last_record_bytes - 1))

    second = reopen()
    assert entries_of(second) == entries[:-1]
    assert path.stat().st_size == full_size - last_record_bytes  # the torn bytes are gone on disk
    # The journal keeps working at the cut: a new entry lands where the torn one was.
    second.add(b"replacement", 5, 2)
    second._destroy()
    assert entries_of(reopen()) == [*entries[:-1], (b"replacement", 5, 2)]


def test_flipped_byte_anywhere_in_the_last_record_cuts_only_that_record(
        reopen: ReopenFn, journal_dir: Path) -> None:
    entries = sample_entries(4)
    first = reopen()
    fill(first, entries)
    first._destroy()
    path = log_path(journal_dir)
    original = path.read_bytes()
    last_record_bytes = RECORD_HEADER_BYTES + len(entries[-1][0])
    last_record_start = len(original) - last_record_bytes

    for position in range(last_record_start, len(original)):
        corrupted = bytearray(original)
        corrupted[position] ^= 0x5A
        path.write_bytes(bytes(corrupted))
        reopened = reopen()
        assert entries_of(reopened) == entries[:-1], f"flip at byte {position}"
        reopened._destroy()
        assert path.stat().st_size == last_record_start


def test_corruption_in_the_middle_cuts_from_there(reopen: ReopenFn, journal_dir: Path) -> None:
    # A record that fails its checksum ends the trusted log: nothing after it is believed.
    entries = sample_entries(4)
    first = reopen()
    fill(first, entries)
    first._destroy()
    path = log_path(journal_dir)
    data = bytearray(path.read_bytes())
    second_record_payload = RECORD_HEADER_BYTES + len(entries[0][0]) + RECORD_HEADER_BYTES
    data[second_record_payload] ^= 0xFF
    path.write_bytes(bytes(data))
    assert entries_of(reopen()) == entries[:1]


def test_delete_entries_from_keeps_the_prefix_across_reopen(reopen: ReopenFn) -> None:
    entries = sample_entries(8)
    first = reopen()
    fill(first, entries)
    first.deleteEntriesFrom(5)
    assert entries_of(first) == entries[:5]
    assert first.truncations == 1
    assert first.truncated_entries == 3
    assert first.total_bytes == sum(len(c) for c, _, _ in entries[:5])
    # The leader's replacement entries follow the kept prefix.
    first.add(b"from-new-leader", 6, 9)
    first._destroy()
    assert entries_of(reopen()) == [*entries[:5], (b"from-new-leader", 6, 9)]


def test_delete_entries_from_past_the_end_is_a_no_op(reopen: ReopenFn) -> None:
    journal = reopen()
    fill(journal, sample_entries(3))
    journal.deleteEntriesFrom(3)
    journal.deleteEntriesFrom(10)
    assert len(journal) == 3
    assert journal.truncations == 0
    assert journal.truncated_entries == 0


def test_truncation_counters_accumulate(reopen: ReopenFn) -> None:
    journal = reopen()
    fill(journal, sample_entries(10))
    journal.deleteEntriesFrom(8)
    journal.deleteEntriesFrom(2)
    assert journal.truncations == 2
    assert journal.truncated_entries == 2 + 6


def test_delete_entries_to_keeps_the_suffix_across_reopen(reopen: ReopenFn, journal_dir: Path) -> None:
    entries = sample_entries(8)
    first = reopen()
    fill(first, entries)
    first.deleteEntriesTo(3)
    assert entries_of(first) == entries[3:]
    assert first.total_bytes == sum(len(c) for c, _, _ in entries[3:])
    # Appends after the rewrite go to the new file at the right place.
    first.add(b"after-compaction", 9, 3)
    first._destroy()
    assert entries_of(reopen()) == [*entries[3:], (b"after-compaction", 9, 3)]
    assert not (journal_dir / "journal.tmp").exists()


def test_delete_entries_to_then_from(reopen: ReopenFn) -> None:
    entries = sample_entries(10)
    first = reopen()
    fill(first, entries)
    first.deleteEntriesTo(4)   # positions, as pysyncobj passes them: drop the first four
    first.deleteEntriesFrom(3)  # keep three of the remaining six
    first._destroy()
    assert entries_of(reopen()) == entries[4:7]


def test_clear_empties_the_journal_on_disk(reopen: ReopenFn) -> None:
    first = reopen()
    fill(first, sample_entries(4))
    first.clear()
    assert len(first) == 0
    assert first.total_bytes == 0
    first.add(b"fresh", 1, 5)
    first._destroy()
    assert entries_of(reopen()) == [(b"fresh", 1, 5)]


def test_term_and_vote_persist_and_reload(reopen: ReopenFn) -> None:
    first = reopen()
    assert first.getCurrentTerm() == 0
    assert first.getVotedForNodeId() is None
    first.setCurrentTerm(7, "127.0.0.1:7001")
    assert (first.getCurrentTerm(), first.getVotedForNodeId()) == (7, "127.0.0.1:7001")
    # No flush or destroy: term and vote must be durable as soon as they are set.
    second = reopen()
    assert second.getCurrentTerm() == 7
    assert second.getVotedForNodeId() == "127.0.0.1:7001"
    second._destroy()
    first.setCurrentTerm(8, None)
    first._destroy()
    third = reopen()
    assert (third.getCurrentTerm(), third.getVotedForNodeId()) == (8, None)


def test_commit_index_is_written_lazily_by_the_one_second_timer(reopen: ReopenFn) -> None:
    first = reopen()
    assert first.getRaftCommitIndex() == 1  # pysyncobj's initial value
    first.setRaftCommitIndex(42)
    assert first.getRaftCommitIndex() == 42
    peek = reopen()
    assert peek.getRaftCommitIndex() == 1  # not yet on disk
    # Close without touching the metadata (destroy would write it).
    os.close(peek._fd)
    peek._fd = -1

    first.onOneSecondTimer()
    assert reopen().getRaftCommitIndex() == 42


def test_commit_index_is_written_by_flush(reopen: ReopenFn) -> None:
    first = reopen()
    first.setRaftCommitIndex(17)
    first.flush()
    assert reopen().getRaftCommitIndex() == 17


def test_commit_index_survives_a_term_change_and_destroy(reopen: ReopenFn) -> None:
    first = reopen()
    first.setRaftCommitIndex(5)
    first.setCurrentTerm(3, "a")
    first.setRaftCommitIndex(6)
    first._destroy()
    second = reopen()
    assert (second.getRaftCommitIndex(), second.getCurrentTerm(), second.getVotedForNodeId()) == (6, 3, "a")


def test_corrupt_metadata_file_refuses_to_open(reopen: ReopenFn, journal_dir: Path) -> None:
    first = reopen()
    first.setCurrentTerm(2, "b")
    first._destroy()
    (journal_dir / "journal.meta").write_bytes(b"\xc1")  # a byte msgpack never uses
    with pytest.raises(RuntimeError, match="corrupt Raft metadata"):
        DurableJournal(journal_dir, fsync=False)


def test_indexing_and_slicing_behave_like_a_list(reopen: ReopenFn) -> None:
    entries = sample_entries(6)
    journal = reopen()
    fill(journal, entries)
    assert journal[0] == entries[0]
    assert journal[-1] == entries[-1]
    assert journal[2:4] == entries[2:4]
    assert journal[4:] == entries[4:]
    assert journal[:-2] == entries[:-2]
    assert journal[::2] == entries[::2]
    assert journal[10:] == []
    with pytest.raises(IndexError):
        _ = journal[6]


class SyncCounter:
    def __init__(self) -> None:
        self.fds: list[int] = []

    def __call__(self, fd: int) -> None:
        self.fds.append(fd)


@pytest.fixture
def fdatasync_calls(monkeypatch: pytest.MonkeyPatch) -> SyncCounter:
    counter = SyncCounter()
    monkeypatch.setattr(os, "fdatasync", counter)
    return counter


def test_fsync_always_makes_appends_durable_at_the_next_sync(reopen: ReopenFn, journal_dir: Path,
                                                              fdatasync_calls: SyncCounter) -> None:
    journal = reopen(fsync=True)
    journal.add(b"one", 1, 1)
    journal.add(b"two", 2, 1)
    assert fdatasync_calls.fds == []  # the engine decides when: before acknowledging or committing
    journal.sync()
    assert len(fdatasync_calls.fds) == 1
    journal.sync()  # nothing new since
    assert len(fdatasync_calls.fds) == 1
    # Each sync was on the journal file itself, not some other descriptor.
    log_inode = log_path(journal_dir).stat().st_ino
    assert all(os.fstat(fd).st_ino == log_inode for fd in fdatasync_calls.fds)


def test_fsync_always_syncs_a_truncation(reopen: ReopenFn, fdatasync_calls: SyncCounter) -> None:
    journal = reopen(fsync=True)
    fill(journal, sample_entries(3))
    before = len(fdatasync_calls.fds)
    journal.deleteEntriesFrom(1)
    assert len(fdatasync_calls.fds) == before + 1


def test_fsync_never_does_not_sync_on_add(reopen: ReopenFn, fdatasync_calls: SyncCounter) -> None:
    journal = reopen(fsync=False)
    fill(journal, sample_entries(5))
    journal.deleteEntriesFrom(2)
    assert fdatasync_calls.fds == []
    assert len(journal) == 2  # the writes themselves still happened


def test_preallocated_tail_left_by_a_crash_is_not_damage(reopen: ReopenFn, journal_dir: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    entries = sample_entries(6)
    crashed = reopen()
    fill(crashed, entries)
    crashed.sync()
    # No _destroy: the file still ends in zero-filled preallocated space, as after kill -9.
    path = log_path(journal_dir)
    size_with_tail = path.stat().st_size
    assert size_with_tail > sum(RECORD_HEADER_BYTES + len(c) for c, _, _ in entries)
    reopened = DurableJournal(journal_dir, fsync=False)
    try:
        assert entries_of(reopened) == entries
        assert not [r for r in caplog.records if "cutting" in r.getMessage()]
        reopened.add(b"next", 7, 2)
        assert entries_of(reopened)[-1] == (b"next", 7, 2)
    finally:
        reopened._destroy()
