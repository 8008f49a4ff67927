"""The snapshot file: checksummed, written atomically, refused whole when damaged."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import msgpack
import pytest

from raftmq.cluster.snapshot_file import (
    SnapshotCorruptError,
    SnapshotMeta,
    read_snapshot_file,
    write_snapshot_file,
)

META = SnapshotMeta(
    last_entry=(b"last-command", 120, 7),
    previous_entry=(b"previous-command", 119, 6),
    cluster=("127.0.0.1:7001", "127.0.0.1:7002"),
    directory={"n1": {"address": "127.0.0.1:7000", "http_url": "http://127.0.0.1:8000"}},
)
BLOB = b"state machine bytes \x00\xff" * 3


@pytest.fixture
def snapshot_path(tmp_path: Path) -> Path:
    return tmp_path / "snapshot.bin"


def test_round_trip(snapshot_path: Path) -> None:
    write_snapshot_file(snapshot_path, META, BLOB)
    meta, blob = read_snapshot_file(snapshot_path)
    assert meta == META
    assert meta.index == 120
    assert blob == BLOB


def test_round_trip_empty_blob_and_directory(snapshot_path: Path) -> None:
    meta = SnapshotMeta((b"", 1, 1), (b"", 0, 0), (), {})
    write_snapshot_file(snapshot_path, meta, b"")
    assert read_snapshot_file(snapshot_path) == (meta, b"")


def test_round_trip_large_blob(snapshot_path: Path) -> None:
    blob = os.urandom(3 * 1024 * 1024)
    write_snapshot_file(snapshot_path, META, blob)
    assert read_snapshot_file(snapshot_path) == (META, blob)


def test_overwrite_replaces_the_old_snapshot(snapshot_path: Path) -> None:
    write_snapshot_file(snapshot_path, META, b"old")
    newer = SnapshotMeta((b"n", 200, 8), (b"p", 199, 8), META.cluster, {})
    write_snapshot_file(snapshot_path, newer, b"new")
    assert read_snapshot_file(snapshot_path) == (newer, b"new")


def test_write_leaves_only_the_snapshot_behind(snapshot_path: Path) -> None:
    write_snapshot_file(snapshot_path, META, BLOB)
    write_snapshot_file(snapshot_path, META, BLOB + b"more")
    assert sorted(p.name for p in snapshot_path.parent.iterdir()) == ["snapshot.bin"]


def test_failed_write_keeps_the_old_snapshot(snapshot_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_snapshot_file(snapshot_path, META, b"old")

    def failing_fsync(fd: int) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk went away"):
        write_snapshot_file(snapshot_path, META, b"new")
    monkeypatch.undo()
    # The new bytes never replaced the file: a reader still gets the complete old snapshot.
    assert read_snapshot_file(snapshot_path) == (META, b"old")
    assert sorted(p.name for p in snapshot_path.parent.iterdir()) == ["snapshot.bin"]


def test_every_single_flipped_byte_is_detected(snapshot_path: Path) -> None:
    write_snapshot_file(snapshot_path, META, BLOB)
    original = snapshot_path.read_bytes()
    for position in range(len(original)):
        for flip in (0x01, 0x80, 0xFF):
            corrupted = bytearray(original)
            corrupted[position] ^= flip
            snapshot_path.write_bytes(bytes(corrupted))
            with pytest.raises(SnapshotCorruptError):
                read_snapshot_file(snapshot_path)


def test_every_truncation_is_detected(snapshot_path: Path) -> None:
    write_snapshot_file(snapshot_path, META, BLOB)
    original = snapshot_path.read_bytes()
    for length in range(len(original)):
        snapshot_path.write_bytes(original[:length])
        with pytest.raises(SnapshotCorruptError):
            read_snapshot_file(snapshot_path)


def test_appended_bytes_are_detected(snapshot_path: Path) -> None:
    write_snapshot_file(snapshot_path, META, BLOB)
    with open(snapshot_path, "ab") as file:
        file.write(b"\x00")
    with pytest.raises(SnapshotCorruptError, match="checksum"):
        read_snapshot_file(snapshot_path)


def test_not_a_snapshot(snapshot_path: Path) -> None:
    snapshot_path.write_bytes(b"PK\x03\x04 this is a zip file, not a snapshot")
    with pytest.raises(SnapshotCorruptError, match="not a raftmq snapshot"):
        read_snapshot_file(snapshot_path)


def forge(path: Path, meta_fields: object, blob: bytes = b"") -> None:
    """A file with a correct checksum around meta the writer would never produce."""
    meta_bytes: bytes = msgpack.packb(meta_fields, use_bin_type=True)
    body = struct.pack("<I", len(meta_bytes)) + meta_bytes + blob
    path.write_bytes(b"RMQSNAP1" + struct.pack("<I", zlib.crc32(body)) + body)


@pytest.mark.parametrize(
    "meta_fields",
    [
        pytest.param([2, [b"", 1, 1], [b"", 0, 0], [], {}], id="future-version"),
        pytest.param([1, [b"", 1, 1], [b"", 0, 0], []], id="too-few-fields"),
        pytest.param({"version": 1}, id="not-a-list"),
        pytest.param([1, [b"", 1], [b"", 0, 0], [], {}], id="short-entry"),
        pytest.param([1, ["text", 1, 1], [b"", 0, 0], [], {}], id="entry-command-not-bytes"),
        pytest.param([1, [b"", 1, 1], [b"", "0", 0], [], {}], id="entry-index-not-int"),
        pytest.param([1, [b"", 1, 1], [b"", 0, 0], [7], {}], id="member-not-text"),
        pytest.param([1, [b"", 1, 1], [b"", 0, 0], "a,b", {}], id="members-not-a-list"),
        pytest.param([1, [b"", 1, 1], [b"", 0, 0], [], []], id="directory-not-a-map"),
    ],
)
def test_well_checksummed_but_malformed_meta_is_refused(snapshot_path: Path, meta_fields: object) -> None:
    forge(snapshot_path, meta_fields)
    with pytest.raises(SnapshotCorruptError):
        read_snapshot_file(snapshot_path)


def test_forged_valid_meta_is_read(snapshot_path: Path) -> None:
    # The forging helper itself is faithful: the same layout with good meta reads back.
    forge(snapshot_path, [1, [b"c", 5, 2], [b"b", 4, 2], ["a:1"], {}], b"blob")
    meta, blob = read_snapshot_file(snapshot_path)
    assert (meta.last_entry, meta.previous_entry, meta.cluster, blob) == (
        (b"c", 5, 2), (b"b", 4, 2), ("a:1",), b"blob")
