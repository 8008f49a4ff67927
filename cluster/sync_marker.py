"""A record of what the journal has made durable, and the power-loss simulation built on it.

A `kill -9` loses nothing the process wrote (the page cache survives it); a power loss loses
whatever was not fsynced. To test the second with the first, a node run with `--sync-marker`
keeps, next to its journal, the journal's durable length and the last durable version of its
meta file (term, vote, commit index), updated after every fsync. `lose_unsynced`, run on a
stopped node's Raft directory, then cuts the files back to that: what a power loss would have
left. The marker is written without fsync on purpose: it only has to survive a `kill -9`.

While a node runs with the marker, it holds an exclusive lock on `LOCK_NAME`, so the
simulation refuses to touch the files of a running node.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgpack

__all__ = [
    "JOURNAL_NAME",
    "LOCK_NAME",
    "MARKER_NAME",
    "META_NAME",
    "DurableMark",
    "LossReport",
    "MarkerError",
    "NodeLock",
    "lose_unsynced",
    "read_marker",
    "write_marker",
]

JOURNAL_NAME = "journal.log"
META_NAME = "journal.meta"
MARKER_NAME = "journal.durable"
LOCK_NAME = "journal.lock"
_VERSION = 1


class MarkerError(RuntimeError):
    """No usable marker, or the node is running: nothing was changed."""


@dataclass(frozen=True)
class DurableMark:
    journal_bytes: int  # the journal file's durable prefix
    meta: bytes | None  # the meta file's durable content (None: no durable meta file)


@dataclass(frozen=True)
class LossReport:
    journal_bytes_kept: int
    journal_bytes_cut: int  # records and the zero-filled preallocated tail beyond them
    journal_records_cut: int  # records wholly or partly beyond the durable length
    meta_restored: bool  # the meta file was put back to (or removed as) its durable version


def write_marker(raft_dir: Path, mark: DurableMark) -> None:
    """Replace the marker atomically (tmp + rename); no fsync, see the module docstring."""
    path = raft_dir / MARKER_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(msgpack.packb([_VERSION, mark.journal_bytes, mark.meta], use_bin_type=True))
    os.replace(tmp, path)


def read_marker(raft_dir: Path) -> DurableMark:
    path = raft_dir / MARKER_NAME
    try:
        fields = msgpack.unpackb(path.read_bytes(), raw=False)
    except FileNotFoundError:
        raise MarkerError(f"no sync marker in {raft_dir}: the node must run with --sync-marker "
                          "(RAFTMQ_SYNC_MARKER=1) for its unsynced writes to be known") from None
    except (ValueError, msgpack.UnpackException) as error:
        raise MarkerError(f"unreadable sync marker {path}: {error}") from None
    if not (isinstance(fields, list) and len(fields) == 3 and fields[0] == _VERSION
            and isinstance(fields[1], int) and fields[1] >= 0
            and (fields[2] is None or isinstance(fields[2], bytes))):
        raise MarkerError(f"unrecognised sync marker {path}")
    return DurableMark(fields[1], fields[2])


class NodeLock:
    """An exclusive, non-blocking advisory lock on the Raft directory (released on close, or by
    the kernel when the process dies)."""

    def __init__(self, raft_dir: Path) -> None:
        self._fd = os.open(raft_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise MarkerError(f"{raft_dir} is in use by a running node; stop it first") from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def lose_unsynced(raft_dir: Path, record_ends: Callable[[bytes], list[int]]) -> LossReport:
    """Cut a stopped node's journal to its durable length and put its meta file back to its
    durable version. `record_ends(data)` gives the end offset of each valid journal record."""
    if not raft_dir.is_dir():
        raise MarkerError(f"{raft_dir} is not a Raft data directory")
    lock = NodeLock(raft_dir)
    try:
        mark = read_marker(raft_dir)
        journal = raft_dir / JOURNAL_NAME
        data = journal.read_bytes() if journal.exists() else b""
        kept = min(mark.journal_bytes, len(data))
        records_cut = sum(1 for end in record_ends(data) if end > kept)
        if len(data) > kept:
            with open(journal, "r+b") as file:
                file.truncate(kept)
        return LossReport(kept, len(data) - kept, records_cut, _restore_meta(raft_dir, mark))
    finally:
        lock.close()


def _restore_meta(raft_dir: Path, mark: DurableMark) -> bool:
    meta = raft_dir / META_NAME
    current = meta.read_bytes() if meta.exists() else None
    if current == mark.meta:
        return False
    if mark.meta is None:
        meta.unlink()
    else:
        meta.write_bytes(mark.meta)
    return True
