"""The snapshot file: our own format, never pickle.

`MAGIC | crc32 | meta length | meta (msgpack) | state machine blob`. The meta holds what Raft
needs to resume after the snapshot (the last two covered entries and the membership) and the
cluster layer's node directory; the blob is whatever the state machine's `snapshot()` returned.
The crc covers everything after it, so a torn or tampered file is refused, never half-loaded.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import msgpack

__all__ = ["SnapshotCorruptError", "SnapshotMeta", "read_snapshot_file", "write_snapshot_file"]

_MAGIC = b"RMQSNAP1"
_HEADER = struct.Struct("<8sII")
_META_VERSION = 1

RaftEntry = tuple[bytes, int, int]


class SnapshotCorruptError(ValueError):
    pass


@dataclass(frozen=True)
class SnapshotMeta:
    last_entry: RaftEntry
    previous_entry: RaftEntry
    cluster: tuple[str, ...]
    directory: dict[str, dict[str, str]]

    @property
    def index(self) -> int:
        return self.last_entry[1]


def _encode_meta(meta: SnapshotMeta) -> bytes:
    fields = [_META_VERSION, list(meta.last_entry), list(meta.previous_entry),
              list(meta.cluster), meta.directory]
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def _entry(value: object) -> RaftEntry:
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], bytes)
            and isinstance(value[1], int) and isinstance(value[2], int)):
        raise SnapshotCorruptError("bad entry in snapshot meta")
    return (value[0], value[1], value[2])


def _decode_meta(data: bytes) -> SnapshotMeta:
    try:
        fields = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise SnapshotCorruptError(f"undecodable snapshot meta: {error}") from error
    if not isinstance(fields, list) or len(fields) != 5 or fields[0] != _META_VERSION:
        raise SnapshotCorruptError("unknown snapshot meta version")
    cluster, directory = fields[3], fields[4]
    if not isinstance(cluster, list) or not all(isinstance(node, str) for node in cluster):
        raise SnapshotCorruptError("bad membership in snapshot meta")
    if not isinstance(directory, dict):
        raise SnapshotCorruptError("bad directory in snapshot meta")
    return SnapshotMeta(_entry(fields[1]), _entry(fields[2]), tuple(cluster), directory)


def write_snapshot_file(path: Path, meta: SnapshotMeta, blob: bytes) -> None:
    """Write atomically and durably: a crash leaves either the old file or the new one."""
    meta_bytes = _encode_meta(meta)
    crc = zlib.crc32(blob, zlib.crc32(meta_bytes, zlib.crc32(struct.pack("<I", len(meta_bytes)))))
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            file.write(_HEADER.pack(_MAGIC, crc, len(meta_bytes)))
            file.write(meta_bytes)
            file.write(blob)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write (disk full) must not leave litter behind
        raise
    directory_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def read_snapshot_file(path: Path) -> tuple[SnapshotMeta, bytes]:
    data = path.read_bytes()
    if len(data) < _HEADER.size:
        raise SnapshotCorruptError(f"{path}: too short for a snapshot")
    magic, crc, meta_length = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise SnapshotCorruptError(f"{path}: not a raftmq snapshot")
    body = memoryview(data)[_HEADER.size - 4 :]
    if zlib.crc32(body) != crc:
        raise SnapshotCorruptError(f"{path}: checksum mismatch")
    meta_end = _HEADER.size + meta_length
    meta = _decode_meta(data[_HEADER.size : meta_end])
    return meta, data[meta_end:]
