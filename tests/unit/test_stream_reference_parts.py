"""The data of the naive stream model in test_stream_reference_model.py (no tests in here):
partitions that keep every record ever given, groups, streams, producers, and the pure helpers
(partitioner, topic matching)."""

from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any, TypeAlias

from raftmq.broker.results import PublishResult
from raftmq.broker.stream_commands import StreamArgs
from raftmq.broker.stream_results import StreamPublishResult

WINDOW = 64
IDLE_MS = 24 * 3600 * 1000
EXCHANGE_TYPES = {"fan": "fanout", "dir": "direct", "top": "topic"}

Record: TypeAlias = tuple[int, str | None, bytes, dict[str, Any]]
Error: TypeAlias = tuple[str, str]
Answer: TypeAlias = Any  # a result dataclass or an Error


def error(code: str) -> Error:
    return ("error", code)


def key_partition(key: str, count: int) -> int:
    """The documented partitioner: BLAKE2b-64 of the UTF-8 key, big-endian, modulo count."""
    return int.from_bytes(blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") % count


def topic_match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(topic_match(rest, words[i:]) for i in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and topic_match(rest, words[1:])


def split_words(key: str) -> list[str]:
    return key.split(".") if key else []


@dataclass
class Partition:
    log: list[Record] = field(default_factory=list)  # every record ever: offset = index
    first: int = 0

    def live(self) -> list[Record]:
        return self.log[self.first:]

    def bytes(self) -> int:
        return sum(len(r[2]) for r in self.live())


@dataclass
class Group:
    generation: int = 0
    members: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (timeout, seen)
    committed: dict[int, int] = field(default_factory=dict)

    def assignment(self, count: int) -> dict[str, list[int]]:
        names = sorted(self.members)
        return {n: [p for p in range(count) if names[p % len(names)] == n] for n in names}


@dataclass
class Stream:
    name: str
    args: StreamArgs
    parts: list[Partition]
    groups: dict[str, Group] = field(default_factory=dict)
    turn: int = 0  # next round-robin partition
    published: int = 0
    trimmed: int = 0


@dataclass
class Producer:
    max_seq: int
    last_seen: int
    results: dict[int, PublishResult | StreamPublishResult] = field(default_factory=dict)
