"""Which node (and cluster) a data dir belongs to, recorded in the dir itself.

A Raft log replayed under another node's id, or into another cluster, breaks Raft's safety
silently: the node would vote and acknowledge with a history it never had. On Kubernetes that
happens when a volume outlives its pod (a retained PersistentVolume bound again, a StatefulSet
recreated under another name or namespace). So the first start writes the owner into the dir,
and every later start refuses a dir that names another node id or cluster.

A dir without the file is adopted: an empty one, or one from before this check existed. A dir
recorded without a cluster (outside Kubernetes) takes the cluster of its first start with one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["IDENTITY_FILE", "DataDirClaimError", "DataDirOwner", "claim_data_dir", "read_owner"]

IDENTITY_FILE = "raftmq-node.json"
# The file is tiny; anything bigger is not ours.
_MAX_FILE_BYTES = 4096


class DataDirClaimError(RuntimeError):
    """The data dir belongs to another node or cluster, or its record cannot be read."""


@dataclass(frozen=True)
class DataDirOwner:
    node_id: str
    cluster_name: str | None


def read_owner(data_dir: Path) -> DataDirOwner | None:
    """The recorded owner; None when the dir has no record yet."""
    path = data_dir / IDENTITY_FILE
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataDirClaimError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if len(raw) > _MAX_FILE_BYTES:
            raise ValueError("too large")
        document = json.loads(raw)
        node_id, cluster = document["node_id"], document.get("cluster")
        if not isinstance(node_id, str) or not (cluster is None or isinstance(cluster, str)):
            raise ValueError("wrong types")
    except (ValueError, KeyError, TypeError):
        raise DataDirClaimError(f"{path} is not a raftmq identity record; if this dir holds no "
                                "data of value, empty it") from None
    return DataDirOwner(node_id, cluster)


def _write_owner(data_dir: Path, owner: DataDirOwner) -> None:
    path = data_dir / IDENTITY_FILE
    temporary = path.with_suffix(".tmp")
    text = json.dumps({"node_id": owner.node_id, "cluster": owner.cluster_name})
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        raise DataDirClaimError(f"cannot write {path}: {exc.strerror or exc}") from None


def claim_data_dir(data_dir: Path, node_id: str, cluster_name: str | None) -> None:
    """Record this node as the dir's owner, or refuse (DataDirClaimError) another's dir."""
    recorded = read_owner(data_dir)
    if recorded is not None and recorded.node_id != node_id:
        raise DataDirClaimError(
            f"data dir {data_dir} belongs to node {recorded.node_id!r}, not {node_id!r}: a node "
            "must never start on another node's Raft log")
    if (recorded is not None and cluster_name is not None and recorded.cluster_name is not None
            and recorded.cluster_name != cluster_name):
        raise DataDirClaimError(
            f"data dir {data_dir} belongs to cluster {recorded.cluster_name!r}, not "
            f"{cluster_name!r}: its log is another cluster's history")
    wanted = DataDirOwner(node_id, cluster_name if cluster_name is not None else
                          (recorded.cluster_name if recorded is not None else None))
    if recorded != wanted:
        _write_owner(data_dir, wanted)
