"""Encoding of one Raft entry: a group-committed batch of commands.

An entry is `MAGIC | version | flags | payload`; the payload is a msgpack array of
`[kind, command]` pairs, lz4-compressed when that makes it smaller. Kind APP is the replicated
state machine's command; kind SYSTEM is the cluster layer's own (node directory).
"""

from __future__ import annotations

from collections.abc import Sequence

import lz4.block
import msgpack

__all__ = ["APP", "SYSTEM", "EntryDecodeError", "decode_entry", "encode_entry"]

APP = 0
SYSTEM = 1
_MAGIC = b"R"
_VERSION = 1
_FLAG_LZ4 = 1
_HEADER_BYTES = 3


class EntryDecodeError(ValueError):
    pass


def encode_entry(commands: Sequence[tuple[int, bytes]], *, compress_min_bytes: int) -> bytes:
    payload: bytes = msgpack.packb(commands, use_bin_type=True)
    flags = 0
    if len(payload) >= compress_min_bytes:
        compressed: bytes = lz4.block.compress(payload, store_size=True)
        # Random bodies do not compress; keep the cheaper form to decode.
        if len(compressed) < len(payload) * 0.9:
            payload = compressed
            flags |= _FLAG_LZ4
    return _MAGIC + bytes((_VERSION, flags)) + payload


def decode_entry(entry: bytes, *, max_entry_bytes: int) -> list[tuple[int, bytes]]:
    if len(entry) < _HEADER_BYTES or entry[:1] != _MAGIC:
        raise EntryDecodeError("not a raftmq entry")
    version, flags = entry[1], entry[2]
    if version != _VERSION:
        raise EntryDecodeError(f"unknown entry version {version}")
    payload = entry[_HEADER_BYTES:]
    try:
        if flags & _FLAG_LZ4:
            # lz4 stores the decompressed size first; check it before allocating that much.
            if len(payload) < 4 or int.from_bytes(payload[:4], "little") > max_entry_bytes:
                raise EntryDecodeError("entry too large or truncated")
            payload = lz4.block.decompress(payload)
        items = msgpack.unpackb(payload, use_list=True, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException, lz4.block.LZ4BlockError) as error:
        raise EntryDecodeError(f"undecodable entry: {error}") from error
    if not isinstance(items, list):
        raise EntryDecodeError("entry payload is not a list")
    commands: list[tuple[int, bytes]] = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], int)
                and isinstance(item[1], bytes)):
            raise EntryDecodeError("malformed command in entry")
        commands.append((item[0], item[1]))
    return commands
