"""One Raft entry = a batch of (kind, command) pairs, lz4-compressed when that helps."""

from __future__ import annotations

import os

import lz4.block
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftmq.cluster.entry_codec import APP, SYSTEM, EntryDecodeError, decode_entry, encode_entry

MAX_ENTRY_BYTES = 1 << 20
COMPRESS_MIN_BYTES = 256
HEADER = b"R\x01"  # magic and version; the flags byte follows
FLAG_PLAIN = b"\x00"
FLAG_LZ4 = b"\x01"


def round_trip(commands: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    encoded = encode_entry(commands, compress_min_bytes=COMPRESS_MIN_BYTES)
    return decode_entry(encoded, max_entry_bytes=MAX_ENTRY_BYTES)


def is_compressed(encoded: bytes) -> bool:
    return encoded[2] & 1 == 1


def decode(entry: bytes) -> list[tuple[int, bytes]]:
    return decode_entry(entry, max_entry_bytes=MAX_ENTRY_BYTES)


@pytest.mark.parametrize(
    "commands",
    [
        [],
        [(APP, b"")],
        [(APP, b"x")],
        [(APP, b"a"), (SYSTEM, b"b"), (APP, b"c")],
        [(APP, os.urandom(100_000))],
        [(APP, b"abc" * 50_000)],
        [(APP, bytes(i % 7 for i in range(500))) for _ in range(200)],
        [(SYSTEM, os.urandom(300)) for _ in range(50)],
    ],
    ids=["empty", "empty-command", "one-byte", "mixed-kinds", "large-random", "large-repetitive",
         "many-compressible", "many-random"],
)
def test_round_trip(commands: list[tuple[int, bytes]]) -> None:
    assert round_trip(commands) == commands


@given(st.lists(st.tuples(st.sampled_from([APP, SYSTEM]), st.binary(max_size=600)), max_size=30),
       st.integers(min_value=0, max_value=4096))
@settings(max_examples=200, deadline=None)
def test_round_trip_any_batch(commands: list[tuple[int, bytes]], compress_min_bytes: int) -> None:
    encoded = encode_entry(commands, compress_min_bytes=compress_min_bytes)
    assert decode(encoded) == commands


def test_compressible_payload_is_compressed() -> None:
    commands = [(APP, b"the same message body " * 40) for _ in range(20)]
    encoded = encode_entry(commands, compress_min_bytes=COMPRESS_MIN_BYTES)
    assert is_compressed(encoded)
    assert len(encoded) < len(msgpack.packb(commands, use_bin_type=True)) // 4


def test_incompressible_payload_is_stored_plain() -> None:
    commands = [(APP, os.urandom(4096))]
    encoded = encode_entry(commands, compress_min_bytes=COMPRESS_MIN_BYTES)
    assert not is_compressed(encoded)
    assert encoded[3:] == msgpack.packb(commands, use_bin_type=True)


def test_small_payload_is_not_compressed_even_if_it_would_shrink() -> None:
    commands = [(APP, b"a" * 100)]
    assert len(lz4.block.compress(msgpack.packb(commands, use_bin_type=True))) < 100
    encoded = encode_entry(commands, compress_min_bytes=COMPRESS_MIN_BYTES)
    assert not is_compressed(encoded)


@given(st.lists(st.tuples(st.sampled_from([APP, SYSTEM]), st.binary(max_size=2000)), max_size=10))
@settings(max_examples=100, deadline=None)
def test_compression_is_chosen_only_when_it_makes_the_entry_smaller(
        commands: list[tuple[int, bytes]]) -> None:
    plain_bytes = len(msgpack.packb(commands, use_bin_type=True))
    encoded = encode_entry(commands, compress_min_bytes=0)
    if is_compressed(encoded):
        assert len(encoded) - 3 < plain_bytes
    else:
        assert len(encoded) - 3 == plain_bytes


# -- malformed input ----------------------------------------------------------------------

def plain(items: object) -> bytes:
    packed: bytes = msgpack.packb(items, use_bin_type=True)
    return HEADER + FLAG_PLAIN + packed


def compressed_with_size_header(size: int, body: bytes) -> bytes:
    return HEADER + FLAG_LZ4 + size.to_bytes(4, "little") + body


VALID = encode_entry([(APP, b"hello")], compress_min_bytes=COMPRESS_MIN_BYTES)
VALID_LZ4 = encode_entry([(APP, b"hello " * 200)], compress_min_bytes=0)


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"R\x01", id="header-too-short"),
        pytest.param(b"X" + VALID[1:], id="wrong-magic"),
        pytest.param(b"R\x02" + VALID[2:], id="wrong-version"),
        pytest.param(b"R\x00" + VALID[2:], id="version-zero"),
        pytest.param(HEADER + FLAG_PLAIN, id="no-payload"),
        pytest.param(VALID[:-2], id="truncated-msgpack"),
        pytest.param(VALID + b"\x00", id="trailing-bytes"),
        pytest.param(HEADER + FLAG_PLAIN + b"\xc1", id="never-used-msgpack-byte"),
        pytest.param(VALID_LZ4[:-5], id="truncated-lz4"),
        pytest.param(VALID_LZ4[:6], id="lz4-only-partial-size-header"),
        pytest.param(HEADER + FLAG_LZ4, id="lz4-no-size-header"),
        pytest.param(compressed_with_size_header(MAX_ENTRY_BYTES + 1, VALID_LZ4[7:]),
                     id="lz4-size-above-max"),
        pytest.param(compressed_with_size_header(0xFFFFFFFF, b"\x00" * 16), id="lz4-size-huge"),
        pytest.param(compressed_with_size_header(1000, b"\xff" * 40), id="lz4-garbage-block"),
        pytest.param(compressed_with_size_header(0, b""), id="lz4-empty"),
        pytest.param(plain({"kind": 0}), id="payload-map"),
        pytest.param(plain(7), id="payload-int"),
        pytest.param(plain(b"bytes"), id="payload-bytes"),
        pytest.param(plain(None), id="payload-nil"),
        pytest.param(plain([7]), id="item-not-a-list"),
        pytest.param(plain([[APP]]), id="item-too-short"),
        pytest.param(plain([[APP, b"x", b"y"]]), id="item-too-long"),
        pytest.param(plain([["0", b"x"]]), id="kind-not-int"),
        pytest.param(plain([[APP, "text not bytes"]]), id="command-not-bytes"),
        pytest.param(plain([[APP, None]]), id="command-nil"),
        pytest.param(plain([[APP, b"ok"], [APP, 5]]), id="second-item-bad"),
        pytest.param(HEADER + FLAG_PLAIN + b"\x91\x92\x00\xa2\xff\xfe", id="invalid-utf8-string"),
        pytest.param(HEADER + FLAG_PLAIN + b"\x81\x90\x00", id="list-as-map-key"),
        pytest.param(HEADER + FLAG_PLAIN + b"\xdd\xff\xff\xff\xff", id="huge-array-header"),
        pytest.param(HEADER + FLAG_PLAIN + b"\x91" * 100_000, id="deeply-nested"),
    ],
)
def test_malformed_entry_raises_entry_decode_error(entry: bytes) -> None:
    with pytest.raises(EntryDecodeError):
        decode(entry)


def test_lz4_size_header_is_checked_before_decompressing() -> None:
    # A valid block that really decompresses to more than the limit is refused by its header.
    big = encode_entry([(APP, b"z" * 5000)], compress_min_bytes=0)
    assert is_compressed(big)
    assert decode_entry(big, max_entry_bytes=10_000) == [(APP, b"z" * 5000)]
    with pytest.raises(EntryDecodeError, match="too large"):
        decode_entry(big, max_entry_bytes=1000)


def test_entry_decode_error_is_a_value_error() -> None:
    # Callers that guard with `except ValueError` keep working.
    assert issubclass(EntryDecodeError, ValueError)


def decodes_or_refuses(entry: bytes) -> None:
    try:
        commands = decode(entry)
    except EntryDecodeError:
        return
    assert isinstance(commands, list)
    assert all(isinstance(kind, int) and isinstance(command, bytes) for kind, command in commands)


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_fuzz_random_bytes(entry: bytes) -> None:
    decodes_or_refuses(entry)


@given(st.sampled_from([FLAG_PLAIN, FLAG_LZ4, b"\x02", b"\xff"]), st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_fuzz_random_payload_behind_a_valid_header(flags: bytes, payload: bytes) -> None:
    decodes_or_refuses(HEADER + flags + payload)


@given(st.integers(min_value=0, max_value=4096), st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_fuzz_random_lz4_blocks(size: int, body: bytes) -> None:
    decodes_or_refuses(compressed_with_size_header(size, body))


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_fuzz_mutated_valid_entries(data: st.DataObject) -> None:
    source = data.draw(st.sampled_from([VALID, VALID_LZ4]))
    position = data.draw(st.integers(min_value=0, max_value=len(source) - 1))
    value = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=position + 1, max_value=len(source)))
    mutated = source[:position] + bytes([value]) + source[position + 1:cut]
    decodes_or_refuses(mutated)
