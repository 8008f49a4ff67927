"""The cluster layer's own replicated state: which node is where, and what it announces
(e.g. its HTTP URL), so any node can tell a client where the leader and the others are."""

from __future__ import annotations

import msgpack

__all__ = ["NodeDirectory", "encode_announce"]

_MAX_FIELD_CHARS = 512
_MAX_NODES = 64


def encode_announce(node_id: str, address: str, metadata: dict[str, str]) -> bytes:
    packed: bytes = msgpack.packb([1, node_id, address, metadata], use_bin_type=True)
    return packed


def _valid_text(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_FIELD_CHARS


class NodeDirectory:
    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, str]] = {}

    def apply(self, command: bytes) -> bool:
        """Deterministic, never raises: a malformed announcement is ignored (returns False)."""
        try:
            fields = msgpack.unpackb(command, raw=False)
        except (ValueError, msgpack.UnpackException):
            return False
        if not (isinstance(fields, list) and len(fields) == 4 and fields[0] == 1):
            return False
        _, node_id, address, metadata = fields
        if not (_valid_text(node_id) and _valid_text(address) and isinstance(metadata, dict)):
            return False
        if not all(_valid_text(k) and _valid_text(v) for k, v in metadata.items()):
            return False
        if node_id not in self.nodes and len(self.nodes) >= _MAX_NODES:
            return False
        self.nodes[node_id] = {**metadata, "address": address}
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
