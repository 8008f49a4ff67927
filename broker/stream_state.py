"""One stream: its partitions, retention, partitioner and consumer groups.

The partitioner must give the same answer in every process, on every replica and in every
Python version, so it never uses the built-in `hash()` (salted per process for str): a key's
partition is the first 8 bytes of its BLAKE2b digest, big-endian, modulo the partition count.
Clients can compute the same function (`partition_for_key`).
"""

from __future__ import annotations

from hashlib import blake2b

from raftmq.broker.stream_commands import StreamArgs
from raftmq.broker.stream_groups import ConsumerGroup
from raftmq.broker.stream_log import PartitionLog, StreamRecord
from raftmq.broker.stream_results import PartitionInfo, StreamInfo

__all__ = ["MAX_GROUPS_PER_STREAM", "StreamState", "partition_for_key"]

MAX_GROUPS_PER_STREAM = 1000
# Keys recur (a customer, a device): the hash of recent ones is remembered, up to this many.
_MAX_CACHED_KEYS = 4096


def partition_for_key(key: str, partition_count: int) -> int:
    digest = blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partition_count


class StreamState:
    __slots__ = ("_key_partitions", "args", "groups", "logs", "name", "next_round_robin",
                 "published", "trimmed")

    def __init__(self, name: str, args: StreamArgs) -> None:
        self.name = name
        self.args = args
        self.logs = [PartitionLog() for _ in range(args.partitions)]
        self.groups: dict[str, ConsumerGroup] = {}
        self.next_round_robin = 0  # replicated: keyless messages go to partitions in turn
        self.published = 0
        self.trimmed = 0
        self._key_partitions: dict[str, int] = {}  # derived, not state: a cache

    def choose_partition(self, key: str | None) -> int:
        count = len(self.logs)
        if key:
            cached = self._key_partitions.get(key)
            if cached is None:
                if len(self._key_partitions) >= _MAX_CACHED_KEYS:
                    self._key_partitions.clear()
                cached = self._key_partitions[key] = partition_for_key(key, count)
            return cached
        partition = self.next_round_robin
        self.next_round_robin = (partition + 1) % count
        return partition

    def append(self, partition: int, record: StreamRecord) -> tuple[int, int]:
        """Append and apply the count and size limits; (offset, body bytes trimmed)."""
        log = self.logs[partition]
        offset = log.append(record)
        self.published += 1
        args = self.args
        max_messages, max_bytes = args.max_messages, args.max_bytes
        freed = 0
        if max_messages is not None:
            while len(log) > max_messages:
                freed += len(log.trim_head()[2])
                self.trimmed += 1
        if max_bytes is not None:
            # The newest record always stays, even if it alone is over the limit.
            while log.bytes > max_bytes and len(log) > 1:
                freed += len(log.trim_head()[2])
                self.trimmed += 1
        return offset, freed

    def trim_older_than(self, oldest_kept_ms: int) -> int:
        """Age retention: drop records stamped before `oldest_kept_ms`; body bytes freed."""
        freed = 0
        for log in self.logs:
            while True:
                head_ms = log.head_timestamp_ms()
                if head_ms is None or head_ms >= oldest_kept_ms:
                    break
                freed += len(log.trim_head()[2])
                self.trimmed += 1
        return freed

    def next_age_deadline_ms(self) -> int | None:
        """When the oldest record of any partition passes max_age (None: nothing will)."""
        max_age = self.args.max_age_ms
        if max_age is None:
            return None
        heads = [ts for ts in (log.head_timestamp_ms() for log in self.logs) if ts is not None]
        return min(heads) + max_age + 1 if heads else None

    def next_group_deadline_ms(self) -> int | None:
        expiries = [t for t in (g.next_expiry_ms() for g in self.groups.values()) if t is not None]
        return min(expiries, default=None)

    @property
    def bytes(self) -> int:
        return sum(log.bytes for log in self.logs)

    def info(self) -> StreamInfo:
        partitions = tuple(
            PartitionInfo(index, log.first_offset, log.next_offset, len(log), log.bytes,
                          log.head_timestamp_ms())
            for index, log in enumerate(self.logs)
        )
        return StreamInfo(self.name, self.args, partitions, tuple(self.groups), self.published,
                          self.trimmed)
