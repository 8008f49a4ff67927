"""The Raft log on disk, with an fsync policy pysyncobj lacks.

It implements the journal interface pysyncobj's SyncObj calls (add, clear, deleteEntriesFrom,
deleteEntriesTo, indexing, term/vote/commit metadata), so the library keeps its Raft logic and we
own durability. Records are `len | crc32 | index | term | command`; a torn or corrupt tail left by
a crash is cut off at the first record that fails its checksum.

With fsync "always", appended records are made durable by `sync()`, which the Raft engine calls
at the two points where durability matters: on a follower before it acknowledges entries, and on
the leader right after it has sent them (so its own fsync overlaps the followers') and again before
it computes the commit index. A committed entry has therefore been fsynced on a majority before any
client hears about it. The file grows in preallocated, zero-filled chunks so that an fdatasync
does not also have to commit a new file size to the filesystem's journal on every append.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Any, overload

import msgpack

from .sync_marker import DurableMark, LossReport, NodeLock, lose_unsynced, write_marker

__all__ = ["DurableJournal", "JournalEntry", "lose_unsynced_writes", "record_ends"]

log = logging.getLogger(__name__)

JournalEntry = tuple[bytes, int, int]  # (command, raft index, raft term), pysyncobj's shape
_RECORD_HEADER = struct.Struct("<IIQQ")
_MAX_RECORD_BYTES = 1 << 30
_PREALLOCATE_BYTES = 8 * 1024 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _record_crc(index: int, term: int, command: bytes) -> int:
    return zlib.crc32(command, zlib.crc32(struct.pack("<QQ", index, term)))


def _encode_record(command: bytes, index: int, term: int) -> bytes:
    header = _RECORD_HEADER.pack(len(command), _record_crc(index, term, command), index, term)
    return header + command


def _scan(data: bytes) -> tuple[list[JournalEntry], list[int], int]:
    """The valid records at the start of `data`: entries, their offsets, and where they end."""
    entries: list[JournalEntry] = []
    offsets: list[int] = []
    offset = 0
    while offset + _RECORD_HEADER.size <= len(data):
        length, crc, index, term = _RECORD_HEADER.unpack_from(data, offset)
        start = offset + _RECORD_HEADER.size
        command = data[start : start + length]
        if length > _MAX_RECORD_BYTES or len(command) != length:
            break
        if _record_crc(index, term, command) != crc:
            break
        entries.append((command, index, term))
        offsets.append(offset)
        offset = start + length
    return entries, offsets, offset


def record_ends(data: bytes) -> list[int]:
    """The end offset of every valid record in journal file contents `data`."""
    entries, offsets, _ = _scan(data)
    return [offset + _RECORD_HEADER.size + len(entry[0])
            for entry, offset in zip(entries, offsets, strict=True)]


def lose_unsynced_writes(raft_dir: Path) -> LossReport:
    """Power-loss simulation on a stopped node (see sync_marker): cut what was never synced."""
    return lose_unsynced(raft_dir, record_ends)


class _MetaFile:
    """Term, vote and commit index. Term and vote are written synchronously: Raft requires them
    durable before any vote or message reflecting them leaves the node."""

    def __init__(self, path: Path, fsync: bool) -> None:
        self._path = path
        self._fsync = fsync
        self.values: dict[str, Any] = {}
        if path.exists():
            try:
                loaded = msgpack.unpackb(path.read_bytes(), raw=False)
            except (ValueError, msgpack.UnpackException) as error:
                raise RuntimeError(f"corrupt Raft metadata file {path}: {error}") from error
            if isinstance(loaded, dict):
                self.values = loaded

    def current_bytes(self) -> bytes | None:
        return self._path.read_bytes() if self._path.exists() else None

    def store(self) -> bytes:
        """Write the values; returns the bytes written."""
        packed: bytes = msgpack.packb(self.values, use_bin_type=True)
        tmp = self._path.with_name(self._path.name + ".tmp")
        with open(tmp, "wb") as file:
            file.write(packed)
            file.flush()
            if self._fsync:
                os.fsync(file.fileno())
        os.replace(tmp, self._path)
        if self._fsync:
            _fsync_dir(self._path.parent)
        return packed


class DurableJournal:
    """`sync_marker=True` also records the durable prefix after every sync (sync_marker.py);
    what exists when the journal is opened counts as durable."""

    def __init__(self, directory: Path, *, fsync: bool, sync_marker: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._path = directory / "journal.log"
        self._fsync = fsync
        self._lock = NodeLock(directory) if sync_marker else None
        self._meta = _MetaFile(directory / "journal.meta", fsync)
        self._durable = DurableMark(0, self._meta.current_bytes())
        self._meta_dirty = False
        self._entries: list[JournalEntry] = []
        self._offsets: list[int] = []
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        self._dirty = False
        self._end_offset = self._load()
        self._allocated_end = os.fstat(self._fd).st_size
        self.total_bytes = sum(len(entry[0]) for entry in self._entries)
        self.truncations = 0
        self.truncated_entries = 0
        self._mark_durable(journal_bytes=self._end_offset)  # what exists at start counts

    # -- reading the file back -------------------------------------------------------------
    def _load(self) -> int:
        data = os.pread(self._fd, os.fstat(self._fd).st_size, 0)
        self._entries, self._offsets, offset = _scan(data)
        if offset != len(data) and data.count(0, offset) == len(data) - offset:
            return offset  # the zero-filled preallocated tail, not damage
        if offset != len(data):
            log.warning(
                "journal %s: cutting %d bytes of torn or corrupt tail after entry %s",
                self._path, len(data) - offset, self._entries[-1][1] if self._entries else None,
            )
            os.ftruncate(self._fd, offset)
            if self._fsync:
                os.fdatasync(self._fd)
        return offset

    def _sync(self) -> None:
        if self._fsync:
            os.fdatasync(self._fd)
            self._mark_durable(journal_bytes=self._end_offset)

    def _mark_durable(self, *, journal_bytes: int | None = None, meta: bytes | None = None) -> None:
        """Record a new durable state for the power-loss simulation (only with the marker);
        None leaves that part as it was."""
        if self._lock is None:
            return
        self._durable = DurableMark(
            self._durable.journal_bytes if journal_bytes is None else journal_bytes,
            self._durable.meta if meta is None else meta)
        write_marker(self._directory, self._durable)

    def sync(self) -> None:
        """Make every appended record durable (a no-op with fsync "never")."""
        if self._dirty:
            self._dirty = False
            self._sync()

    def _ensure_allocated(self, end: int) -> None:
        if end <= self._allocated_end:
            return
        grow = max(_PREALLOCATE_BYTES, end - self._allocated_end)
        os.pwrite(self._fd, bytes(grow), self._allocated_end)
        self._allocated_end += grow
        self._dirty = True

    # -- the interface pysyncobj calls -----------------------------------------------------
    def add(self, command: bytes, idx: int, term: int) -> None:
        record = _encode_record(command, idx, term)
        self._ensure_allocated(self._end_offset + len(record))
        os.pwrite(self._fd, record, self._end_offset)
        self._dirty = True
        self._entries.append((command, idx, term))
        self._offsets.append(self._end_offset)
        self._end_offset += len(record)
        self.total_bytes += len(command)

    def clear(self) -> None:
        self._truncate_at(0)

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        removed = len(self._entries) - entryFrom
        if removed <= 0:
            return
        self.truncations += 1
        self.truncated_entries += removed
        log.warning(
            "journal: truncating %d entries from index %d (leader's log conflicts with ours)",
            removed, self._entries[entryFrom][1],
        )
        self._truncate_at(entryFrom)

    def _truncate_at(self, position: int) -> None:
        offset = self._offsets[position] if position < len(self._offsets) else self._end_offset
        self.total_bytes -= sum(len(entry[0]) for entry in self._entries[position:])
        del self._entries[position:]
        del self._offsets[position:]
        os.ftruncate(self._fd, offset)
        self._end_offset = offset
        self._allocated_end = offset
        self._sync()
        # Unsynced, the cut may not be durable; but what it removed is gone either way.
        self._mark_durable(journal_bytes=min(self._durable.journal_bytes, offset))

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop the prefix a snapshot now covers, rewriting the rest into a new file."""
        kept = self._entries[entryTo:]
        tmp = self._path.with_suffix(".tmp")
        offsets: list[int] = []
        offset = 0
        with open(tmp, "wb") as file:
            for command, idx, term in kept:
                record = _encode_record(command, idx, term)
                file.write(record)
                offsets.append(offset)
                offset += len(record)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, self._path)
        _fsync_dir(self._path.parent)
        os.close(self._fd)
        self._fd = os.open(self._path, os.O_RDWR, 0o600)
        self._entries = kept
        self._offsets = offsets
        self._end_offset = offset
        self._allocated_end = offset
        self._dirty = False
        self.total_bytes = sum(len(entry[0]) for entry in kept)
        self._mark_durable(journal_bytes=offset)  # the new file was fsynced above

    @overload
    def __getitem__(self, item: int) -> JournalEntry: ...
    @overload
    def __getitem__(self, item: slice) -> list[JournalEntry]: ...
    def __getitem__(self, item: int | slice) -> JournalEntry | list[JournalEntry]:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        if self._fd < 0:
            return
        self.flush()
        # A clean close leaves no preallocated tail; a crash may, and _load skips it.
        os.ftruncate(self._fd, self._end_offset)
        os.close(self._fd)
        self._fd = -1
        if self._lock is not None:
            self._lock.close()

    def flush(self) -> None:
        self.sync()
        if self._meta_dirty:
            self._store_meta()
        os.fsync(self._fd)
        self._mark_durable(journal_bytes=self._end_offset)

    def _store_meta(self) -> None:
        packed = self._meta.store()
        self._meta_dirty = False
        if self._fsync:
            self._mark_durable(meta=packed)

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        # Written lazily: after a crash the commit index is relearned from the leader.
        if self._meta.values.get("commit_index") != raftCommitIndex:
            self._meta.values["commit_index"] = raftCommitIndex
            self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:
        value = self._meta.values.get("commit_index", 1)
        return int(value) if isinstance(value, int) else 1

    def setCurrentTerm(self, term: int, votedForNodeId: str | None) -> None:
        self._meta.values["term"] = term
        self._meta.values["voted_for"] = votedForNodeId
        self._store_meta()

    def getCurrentTerm(self) -> int:
        value = self._meta.values.get("term", 0)
        return int(value) if isinstance(value, int) else 0

    def getVotedForNodeId(self) -> str | None:
        value = self._meta.values.get("voted_for")
        return value if isinstance(value, str) else None

    def onOneSecondTimer(self) -> None:
        if self._meta_dirty:
            self._store_meta()
