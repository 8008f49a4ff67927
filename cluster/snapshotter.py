"""Snapshots for pysyncobj's compaction, in our own format, written by a forked child.

It implements the interface of pysyncobj's `Serializer` (which raft_engine swaps for it), so the
library keeps deciding *when* to compact while we decide *how*: never the whole-state pickle,
never on the tick thread or the event loop. pysyncobj's constants and node class are passed in,
so that raft_engine stays the only module importing pysyncobj.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .snapshot_file import SnapshotMeta, read_snapshot_file, write_snapshot_file

__all__ = ["ForkingSnapshotter", "SerializerStates"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SerializerStates:
    """pysyncobj's SERIALIZER_STATE values."""

    not_serializing: int
    serializing: int
    success: int
    failed: int


class ForkingSnapshotter:
    """pysyncobj's Serializer interface over our snapshot file.

    `serialize` forks: the child sees the state exactly as of the snapshot index (copy-on-write)
    and writes it while the parent keeps replicating; pysyncobj compacts the journal only after
    the child exits successfully.
    """

    def __init__(self, path: Path, chunk_bytes: int,
                 capture: Callable[[], tuple[bytes, dict[str, dict[str, str]]]],
                 restore: Callable[[SnapshotMeta, bytes], None],
                 states: SerializerStates, make_node: Callable[[str], Any]) -> None:
        self._states = states
        self._make_node = make_node
        self._path = path
        self._incoming = path.with_name(path.name + ".incoming")
        self._chunk_bytes = chunk_bytes
        self._capture = capture
        self._restore = restore
        self._pid = 0
        self._serializing_id: int | None = None
        self._transmissions: dict[Any, Any] = {}
        self._incoming_file: Any = None
        self.snapshots_written = 0

    def checkSerializing(self) -> tuple[int, int | None]:
        if self._pid == 0:
            return self._states.not_serializing, None
        pid, status = os.waitpid(self._pid, os.WNOHANG)
        if pid == 0:
            return self._states.serializing, self._serializing_id
        self._pid = 0
        if os.waitstatus_to_exitcode(status) == 0:
            self.snapshots_written += 1
            return self._states.success, self._serializing_id
        log.error("snapshot child failed with status %s", status)
        return self._states.failed, self._serializing_id

    def serialize(self, data: tuple[Any, ...], entry_id: int) -> None:
        if self._pid != 0:
            return
        _, last_entry, previous_entry, cluster = data
        membership = tuple(sorted(str(node.id) for node in cluster))
        self._serializing_id = entry_id
        pid = os.fork()
        if pid != 0:
            self._pid = pid
            return
        self._child_write(tuple(last_entry), tuple(previous_entry), membership)

    def _child_write(self, last_entry: Any, previous_entry: Any, membership: tuple[str, ...]) -> None:
        exit_code = 1
        try:
            blob, directory = self._capture()
            meta = SnapshotMeta(last_entry, previous_entry, membership, directory)
            write_snapshot_file(self._path, meta, blob)
            exit_code = 0
        except BaseException as error:
            os.write(2, f"raftmq snapshot child failed: {error!r}\n".encode())
        finally:
            os._exit(exit_code)

    def deserialize(self) -> tuple[None, Any, Any, list[Any]]:
        meta, blob = read_snapshot_file(self._path)
        self._restore(meta, blob)
        return None, meta.last_entry, meta.previous_entry, [self._make_node(a) for a in meta.cluster]

    def getTransmissionData(self, node: Any) -> tuple[bytes, bool, bool] | None:
        # The current file stays consistent while a newer one is being written (atomic rename,
        # and the journal is compacted only afterwards), so catching up never waits on a dump.
        transmission = self._transmissions.get(node)
        if transmission is None:
            if not self._path.exists():
                return None
            transmission = self._transmissions[node] = open(self._path, "rb")  # noqa: SIM115
        is_first = transmission.tell() == 0
        chunk = transmission.read(self._chunk_bytes)
        is_last = len(chunk) == 0
        if is_last:
            transmission.close()
            del self._transmissions[node]
        return chunk, is_first, is_last

    def setTransmissionData(self, data: tuple[bytes, bool, bool] | None) -> bool:
        if data is None:
            return False
        chunk, is_first, is_last = data
        if is_first:
            if self._incoming_file is not None:
                self._incoming_file.close()
            self._incoming_file = open(self._incoming, "wb")  # noqa: SIM115
        if self._incoming_file is None:
            return False
        self._incoming_file.write(chunk)
        if not is_last:
            return False
        self._incoming_file.flush()
        os.fsync(self._incoming_file.fileno())
        self._incoming_file.close()
        self._incoming_file = None
        try:
            read_snapshot_file(self._incoming)
        except ValueError:
            log.exception("received a corrupt snapshot; waiting for the leader to resend")
            return False
        os.replace(self._incoming, self._path)
        return True

    def cancelTransmisstion(self, node: Any) -> None:
        transmission = self._transmissions.pop(node, None)
        if transmission is not None:
            transmission.close()
