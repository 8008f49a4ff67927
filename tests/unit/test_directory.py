"""NodeDirectory: replicated announcements of where each node is and what it serves."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftmq.cluster.directory import NodeDirectory, encode_announce

MAX_NODES = 64
MAX_FIELD_CHARS = 512


def packed(value: object) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def test_valid_announce_is_applied() -> None:
    directory = NodeDirectory()
    assert directory.apply(encode_announce("n1", "127.0.0.1:7001", {"http_url": "http://127.0.0.1:8001"}))
    assert directory.nodes == {"n1": {"address": "127.0.0.1:7001", "http_url": "http://127.0.0.1:8001"}}
    assert directory.node_id_at("127.0.0.1:7001") == "n1"
    assert directory.node_id_at("127.0.0.1:9999") is None


def test_reannounce_replaces_the_previous_entry() -> None:
    directory = NodeDirectory()
    directory.apply(encode_announce("n1", "127.0.0.1:7001", {"http_url": "http://old", "zone": "a"}))
    assert directory.apply(encode_announce("n1", "127.0.0.1:7011", {"http_url": "http://new"}))
    assert directory.nodes == {"n1": {"address": "127.0.0.1:7011", "http_url": "http://new"}}
    assert directory.node_id_at("127.0.0.1:7001") is None


def test_fields_at_the_length_limit_are_accepted() -> None:
    directory = NodeDirectory()
    longest = "x" * MAX_FIELD_CHARS
    assert directory.apply(encode_announce(longest, longest, {longest: longest}))


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="never-used-msgpack-byte"),
        pytest.param(encode_announce("n1", "a:1", {})[:-1], id="truncated"),
        pytest.param(encode_announce("n1", "a:1", {}) + b"\x00", id="trailing-bytes"),
        pytest.param(packed({"node_id": "n1"}), id="map-not-list"),
        pytest.param(packed([2, "n1", "a:1", {}]), id="future-version"),
        pytest.param(packed([1, "n1", "a:1"]), id="too-few-fields"),
        pytest.param(packed([1, "n1", "a:1", {}, "extra"]), id="too-many-fields"),
        pytest.param(packed([1, "", "a:1", {}]), id="empty-node-id"),
        pytest.param(packed([1, "n1", "", {}]), id="empty-address"),
        pytest.param(packed([1, b"n1", "a:1", {}]), id="node-id-bytes"),
        pytest.param(packed([1, 7, "a:1", {}]), id="node-id-int"),
        pytest.param(packed([1, "n1", None, {}]), id="address-nil"),
        pytest.param(packed([1, "x" * (MAX_FIELD_CHARS + 1), "a:1", {}]), id="node-id-too-long"),
        pytest.param(packed([1, "n1", "x" * (MAX_FIELD_CHARS + 1), {}]), id="address-too-long"),
        pytest.param(packed([1, "n1", "a:1", ["http_url"]]), id="metadata-list"),
        pytest.param(packed([1, "n1", "a:1", {"http_url": 8001}]), id="metadata-value-int"),
        pytest.param(packed([1, "n1", "a:1", {"http_url": ""}]), id="metadata-value-empty"),
        pytest.param(packed([1, "n1", "a:1", {"": "v"}]), id="metadata-key-empty"),
        pytest.param(packed([1, "n1", "a:1", {"k": "v" * (MAX_FIELD_CHARS + 1)}]),
                     id="metadata-value-too-long"),
        pytest.param(b"\x94\x01\xa2n1\xa3a:1\x81\x01\xa1v", id="metadata-int-key"),
        pytest.param(b"\x94\x01\xa2\xff\xfe\xa3a:1\x80", id="node-id-invalid-utf8"),
    ],
)
def test_malformed_announce_is_ignored(command: bytes) -> None:
    directory = NodeDirectory()
    directory.apply(encode_announce("n0", "127.0.0.1:7000", {}))
    before = directory.snapshot()
    assert directory.apply(command) is False
    assert directory.snapshot() == before
    # Deterministic: every replica applying the same command reaches the same verdict.
    assert directory.apply(command) is False


def test_node_count_is_bounded() -> None:
    directory = NodeDirectory()
    for i in range(MAX_NODES):
        assert directory.apply(encode_announce(f"n{i}", f"127.0.0.1:{7000 + i}", {}))
    assert directory.apply(encode_announce("one-too-many", "127.0.0.1:9000", {})) is False
    assert len(directory.nodes) == MAX_NODES
    assert "one-too-many" not in directory.nodes
    # A known node may still move, even with the directory full.
    assert directory.apply(encode_announce("n0", "127.0.0.1:9001", {}))
    assert directory.nodes["n0"]["address"] == "127.0.0.1:9001"


def test_snapshot_is_a_copy_and_restores() -> None:
    directory = NodeDirectory()
    directory.apply(encode_announce("n1", "127.0.0.1:7001", {"http_url": "http://h"}))
    snapshot = directory.snapshot()
    snapshot["n1"]["address"] = "changed"
    assert directory.nodes["n1"]["address"] == "127.0.0.1:7001"

    restored = NodeDirectory()
    restored.restore(directory.snapshot())
    assert restored.nodes == directory.nodes


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_fuzz_apply_never_raises_and_is_deterministic(command: bytes) -> None:
    first, second = NodeDirectory(), NodeDirectory()
    verdict = first.apply(command)
    assert isinstance(verdict, bool)
    assert second.apply(command) is verdict
    assert first.nodes == second.nodes
    assert len(first.nodes) == (1 if verdict else 0)


# Text around the length limit, plus values of every other msgpack type.
texts = st.one_of(st.text(max_size=8), st.sampled_from(["x" * MAX_FIELD_CHARS, "x" * (MAX_FIELD_CHARS + 1)]))
field_values = st.one_of(texts, st.none(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
                         st.binary(max_size=5), st.lists(texts, max_size=2))


def valid_text(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_FIELD_CHARS


metadata_values = st.one_of(st.dictionaries(texts, texts, max_size=3),
                            st.dictionaries(texts, field_values, max_size=3), field_values)
announce_fields = st.one_of(
    st.tuples(texts, texts, metadata_values).map(list),  # the right shape, possibly bad values
    st.lists(st.one_of(field_values, metadata_values), max_size=5),
)


@given(announce_fields)
@settings(max_examples=300, deadline=None)
def test_fuzz_structured_announces(fields: list[object]) -> None:
    directory = NodeDirectory()
    accepted = directory.apply(packed([1, *fields]))
    expected = (len(fields) == 3 and valid_text(fields[0]) and valid_text(fields[1])
                and isinstance(fields[2], dict)
                and all(valid_text(k) and valid_text(v) for k, v in fields[2].items()))
    assert accepted is expected
    if accepted:
        node_id, address = fields[0], fields[1]
        assert isinstance(node_id, str)
        assert isinstance(fields[2], dict)
        assert directory.nodes == {node_id: {"address": address, **fields[2]}}
    else:
        assert directory.nodes == {}
