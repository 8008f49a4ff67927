"""The cluster layer's own replicated state: which node is where, and what it announces
(e.g. its HTTP URL), so any node can tell a client where the leader and the others are.

Three record kinds, all SYSTEM entries in the Raft log:
* announce `[1, node_id, address, metadata]`: a node publishes its address and metadata;
* member `[2, node_id, address]`: the leader registers a node it is about to add, so every
  replica can name the new member before that node has started and announced itself;
* forget `[3, node_id]`: the leader drops a node it has removed.
The directory only names nodes; who votes is pysyncobj's membership (RaftEngine.member_addresses).
"""

from __future__ import annotations

import msgpack

__all__ = ["NodeDirectory", "encode_announce", "encode_forget", "encode_member"]

_MAX_FIELD_CHARS = 512
_MAX_NODES = 64
_ANNOUNCE = 1
_MEMBER = 2
_FORGET = 3


def encode_announce(node_id: str, address: str, metadata: dict[str, str]) -> bytes:
    packed: bytes = msgpack.packb([_ANNOUNCE, node_id, address, metadata], use_bin_type=True)
    return packed


def encode_member(node_id: str, address: str) -> bytes:
    packed: bytes = msgpack.packb([_MEMBER, node_id, address], use_bin_type=True)
    return packed


def encode_forget(node_id: str) -> bytes:
    packed: bytes = msgpack.packb([_FORGET, node_id], use_bin_type=True)
    return packed


def _valid_text(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_FIELD_CHARS


class NodeDirectory:
    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, str]] = {}

    def apply(self, command: bytes) -> bool:
        """Deterministic, never raises: a malformed record is ignored (returns False)."""
        try:
            fields = msgpack.unpackb(command, raw=False)
        except (ValueError, msgpack.UnpackException):
            return False
        if not isinstance(fields, list) or not fields:
            return False
        if fields[0] == _ANNOUNCE and len(fields) == 4:
            return self._announce(fields[1], fields[2], fields[3])
        if fields[0] == _MEMBER and len(fields) == 3:
            return self._member(fields[1], fields[2])
        if fields[0] == _FORGET and len(fields) == 2 and _valid_text(fields[1]):
            return self.nodes.pop(fields[1], None) is not None
        return False

    def _announce(self, node_id: object, address: object, metadata: object) -> bool:
        if not (_valid_text(node_id) and _valid_text(address) and isinstance(metadata, dict)):
            return False
        if not all(_valid_text(k) and _valid_text(v) for k, v in metadata.items()):
            return False
        assert isinstance(node_id, str) and isinstance(address, str)
        if node_id not in self.nodes and len(self.nodes) >= _MAX_NODES:
            return False
        self.nodes[node_id] = {**metadata, "address": address}
        return True

    def _member(self, node_id: object, address: object) -> bool:
        if not (_valid_text(node_id) and _valid_text(address)):
            return False
        assert isinstance(node_id, str) and isinstance(address, str)
        # An address names one node: a node once removed from it is no longer there.
        for other in [n for n, info in self.nodes.items() if info.get("address") == address]:
            if other != node_id:
                del self.nodes[other]
        current = self.nodes.get(node_id)
        if current is not None and current.get("address") == address:
            return True  # keep what the node announced (its http_url)
        if current is None and len(self.nodes) >= _MAX_NODES:
            return False
        self.nodes[node_id] = {"address": address}
        return True

    def snapshot(self) -> dict[str, dict[str, str]]:
        return {node_id: dict(info) for node_id, info in self.nodes.items()}

    def restore(self, nodes: dict[str, dict[str, str]]) -> None:
        self.nodes = {str(k): {str(f): str(v) for f, v in info.items()} for k, info in nodes.items()}

    def node_id_at(self, address: str) -> str | None:
        for node_id, info in self.nodes.items():
            if info.get("address") == address:
                return node_id
        return None
