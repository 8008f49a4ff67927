"""A deliberately naive reference model of streams, consumer groups and routing to streams (no
tests in here; test_stream_stateful.py drives it next to BrokerState).

Plain lists and full scans: a partition keeps every record it was ever given (the offset is the
list index) and a `first` index; retention is stated as "the longest suffix that satisfies the
limits" and recomputed from scratch. Supports the default exchange, one exchange of each type
("fan", "dir", "top"), queues with default arguments (they only hold bodies), idempotent
producers (shared by exchange and stream publishes) and producer idle expiry. Results are the
real result dataclasses, except errors, which are `("error", code)`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from raftmq.broker import results as codes
from raftmq.broker.results import OkResult, PublishResult
from raftmq.broker.stream_commands import StreamArgs
from raftmq.broker.stream_results import (
    FetchResult,
    GroupAssignment,
    GroupInfo,
    MemberInfo,
    OffsetOutOfRange,
    PartitionInfo,
    StreamInfo,
    StreamPublishResult,
)
from tests.unit.test_stream_reference_parts import (
    EXCHANGE_TYPES,
    IDLE_MS,
    WINDOW,
    Answer,
    Error,
    Group,
    Partition,
    Producer,
    Record,
    Stream,
    error,
    key_partition,
    split_words,
    topic_match,
)


class StreamModel:
    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self.now = 0
        self.next_id = 1
        self.streams: dict[str, Stream] = {}
        self.queues: dict[str, list[bytes]] = {}
        self.bindings: dict[str, list[tuple[str, str]]] = {name: [] for name in EXCHANGE_TYPES}
        self.producers: dict[str, Producer] = {}

    # ---------------------------------------------------------------- time

    def begin(self, now: int) -> None:
        self.now = max(self.now, now)
        for pid in [p for p, rec in self.producers.items() if self.now - rec.last_seen > IDLE_MS]:
            del self.producers[pid]
        for stream in self.streams.values():
            max_age = stream.args.max_age_ms
            for part in stream.parts:  # a record older than max_age goes
                while (max_age is not None and part.first < len(part.log)
                       and self.now - part.log[part.first][0] > max_age):
                    part.first += 1
                    stream.trimmed += 1
            for group in stream.groups.values():
                dead = [n for n, (timeout, seen) in group.members.items() if seen + timeout <= self.now]
                for name in dead:
                    del group.members[name]
                if dead:
                    group.generation += 1

    def tick(self, now: int) -> Answer:
        self.begin(now)
        return OkResult()

    def next_deadline(self) -> int | None:
        found: list[int] = []
        for stream in self.streams.values():
            age = stream.args.max_age_ms
            if age is not None:
                found += [p.log[p.first][0] + age + 1 for p in stream.parts if p.live()]
            found += [seen + timeout for g in stream.groups.values()
                      for timeout, seen in g.members.values()]
        return min(found, default=None)

    # ---------------------------------------------------------------- topology

    def declare_stream(self, now: int, name: str, args: StreamArgs) -> Answer:
        self.begin(now)
        if name in self.queues:
            return error(codes.PRECONDITION_FAILED)
        found = self.streams.get(name)
        if found is None:
            self.streams[name] = Stream(name, args, [Partition() for _ in range(args.partitions)])
            return OkResult(True)
        return OkResult(False) if found.args == args else error(codes.PRECONDITION_FAILED)

    def delete_stream(self, now: int, name: str) -> Answer:
        self.begin(now)
        if self.streams.pop(name, None) is None:
            return error(codes.STREAM_NOT_FOUND)
        self.unbind_all(name)
        return OkResult()

    def declare_queue(self, now: int, name: str) -> Answer:
        self.begin(now)
        if name in self.streams:
            return error(codes.PRECONDITION_FAILED)
        created = name not in self.queues
        self.queues.setdefault(name, [])
        return OkResult(created)

    def delete_queue(self, now: int, name: str) -> Answer:
        self.begin(now)
        if self.queues.pop(name, None) is None:
            return error(codes.QUEUE_NOT_FOUND)
        self.unbind_all(name)
        return OkResult()

    def unbind_all(self, target: str) -> None:
        for exchange, pairs in self.bindings.items():
            self.bindings[exchange] = [(t, k) for t, k in pairs if t != target]

    def bind(self, now: int, exchange: str, target: str, key: str, bound: bool) -> Answer:
        self.begin(now)
        if target not in self.queues and target not in self.streams:
            return error(codes.QUEUE_NOT_FOUND)
        pairs = self.bindings[exchange]
        if not bound:
            if (target, key) in pairs:
                pairs.remove((target, key))
            return OkResult()
        if (target, key) in pairs:
            return OkResult(False)
        pairs.append((target, key))
        return OkResult(True)

    def route(self, exchange: str, key: str) -> list[str]:
        if exchange == "":
            return [key] if key in self.queues or key in self.streams else []
        kind, pairs = EXCHANGE_TYPES[exchange], self.bindings[exchange]
        if kind == "fanout":
            matched = [t for t, _ in pairs]
        elif kind == "direct":
            matched = [t for t, k in pairs if k == key]
        else:
            matched = [t for t, k in pairs if topic_match(split_words(k), split_words(key))]
        return list(dict.fromkeys(matched))

    # ---------------------------------------------------------------- producers

    def seen_before(self, pid: str | None, seq: int | None, kind: type) -> Answer | None:
        record = None if pid is None else self.producers.get(pid)
        if record is None:
            return None
        seq = seq or 0
        cached = record.results.get(seq) if seq > record.max_seq - self.window else None
        if cached is not None:
            record.last_seen = self.now
            if type(cached) is not kind:
                return error(codes.INVALID_ARGUMENT)
            return replace(cached, duplicate=True)
        if seq <= record.max_seq - self.window:
            return error(codes.SEQUENCE_TOO_OLD)
        return None

    def remember(self, pid: str | None, seq: int | None,
                 result: PublishResult | StreamPublishResult) -> None:
        if pid is None:
            return
        seq = seq or 0
        record = self.producers.setdefault(pid, Producer(seq, self.now))
        record.last_seen = self.now
        record.max_seq = max(record.max_seq, seq)
        record.results[seq] = result

    # ---------------------------------------------------------------- appending

    def held_bytes(self) -> int:
        queued = sum(len(b) for bodies in self.queues.values() for b in bodies)
        return queued + self.stream_bytes()

    def stream_bytes(self) -> int:
        return sum(p.bytes() for s in self.streams.values() for p in s.parts)

    def choose(self, stream: Stream, key: str | None) -> int:
        if key:
            return key_partition(key, len(stream.parts))
        partition = stream.turn
        stream.turn = (stream.turn + 1) % len(stream.parts)
        return partition

    def append(self, stream: Stream, partition: int, record: Record) -> int:
        part = stream.parts[partition]
        part.log.append(record)
        stream.published += 1
        args = stream.args
        while True:  # keep the longest suffix within both limits (the newest always stays)
            live = part.live()
            too_many = args.max_messages is not None and len(live) > args.max_messages
            too_big = args.max_bytes is not None and len(live) > 1 and part.bytes() > args.max_bytes
            if not (too_many or too_big):
                return len(part.log) - 1
            part.first += 1
            stream.trimmed += 1

    def publish_stream(self, now: int, name: str,
                       messages: list[tuple[str | None, int | None, bytes, dict[str, Any]]],
                       pid: str | None, seq: int | None, max_total: int) -> Answer:
        self.begin(now)
        seen = self.seen_before(pid, seq, StreamPublishResult)
        if seen is not None:
            return seen
        stream = self.streams.get(name)
        if stream is None:
            return error(codes.STREAM_NOT_FOUND)
        limit = stream.args.max_message_bytes
        for _key, partition, body, _headers in messages:
            if partition is not None and partition >= len(stream.parts):
                return error(codes.INVALID_ARGUMENT)
            if limit is not None and len(body) > limit:
                return error(codes.MESSAGE_TOO_LARGE)
        incoming = sum(len(m[2]) for m in messages)
        if max_total and self.held_bytes() + incoming > max_total:
            return error(codes.RESOURCE_EXHAUSTED)
        partitions, offsets = [], []
        for key, partition, body, headers in messages:
            chosen = self.choose(stream, key) if partition is None else partition
            offsets.append(self.append(stream, chosen, (self.now, key, body, headers)))
            partitions.append(chosen)
        result = StreamPublishResult(tuple(partitions), tuple(offsets))
        self.remember(pid, seq, result)
        return result

    def publish_exchange(self, now: int, exchange: str,
                         messages: list[tuple[str, bytes, dict[str, Any]]],
                         pid: str | None, seq: int | None, max_total: int) -> Answer:
        self.begin(now)
        seen = self.seen_before(pid, seq, PublishResult)
        if seen is not None:
            return seen
        incoming = sum(len(m[1]) for m in messages)
        if max_total and self.held_bytes() + incoming > max_total:
            return error(codes.RESOURCE_EXHAUSTED)
        first_id = self.next_id
        self.next_id += len(messages)
        accepted, unroutable, rejected = 0, [], []
        for index, (key, body, headers) in enumerate(messages):
            targets = self.route(exchange, key)
            if not targets:
                unroutable.append(index)
            stored = False
            for target in targets:
                if target in self.queues:
                    self.queues[target].append(body)
                    stored = True
                    continue
                stream = self.streams[target]
                limit = stream.args.max_message_bytes
                if limit is not None and len(body) > limit:
                    if index not in rejected:
                        rejected.append(index)
                    continue
                # Through the default exchange the key is the stream's name: no key then.
                record_key = key if exchange else None
                self.append(stream, self.choose(stream, record_key),
                            (self.now, record_key, body, headers))
                stored = True
            accepted += stored
        result = PublishResult(accepted, tuple(unroutable), tuple(rejected), False, first_id)
        self.remember(pid, seq, result)
        return result

    # ---------------------------------------------------------------- groups

    def assignment(self, stream: Stream, group: Group, member: str) -> GroupAssignment:
        mine = group.assignment(len(stream.parts))[member]
        timeout, seen = group.members[member]
        return GroupAssignment(
            group.generation, member, tuple(mine), tuple(sorted(group.members)),
            tuple((p, group.committed[p]) for p in mine if p in group.committed), seen + timeout,
        )

    def join(self, now: int, name: str, group_name: str, member: str, timeout: int) -> Answer:
        self.begin(now)
        stream = self.streams.get(name)
        if stream is None:
            return error(codes.STREAM_NOT_FOUND)
        group = stream.groups.setdefault(group_name, Group())
        if member not in group.members:
            group.generation += 1
        group.members[member] = (timeout, self.now)
        return self.assignment(stream, group, member)

    def member_problem(self, name: str, group_name: str, member: str) -> Error | None:
        stream = self.streams.get(name)
        if stream is None:
            return error(codes.STREAM_NOT_FOUND)
        group = stream.groups.get(group_name)
        return error(codes.UNKNOWN_MEMBER) if group is None or member not in group.members else None

    def heartbeat(self, now: int, name: str, group_name: str, member: str) -> Answer:
        self.begin(now)
        problem = self.member_problem(name, group_name, member)
        if problem is not None:
            return problem
        stream = self.streams[name]
        group = stream.groups[group_name]
        group.members[member] = (group.members[member][0], self.now)
        return self.assignment(stream, group, member)

    def leave(self, now: int, name: str, group_name: str, member: str) -> Answer:
        self.begin(now)
        problem = self.member_problem(name, group_name, member)
        if problem is not None:
            return problem
        group = self.streams[name].groups[group_name]
        del group.members[member]
        group.generation += 1
        return OkResult()

    def commit(self, now: int, name: str, group_name: str, member: str | None, generation: int,
               offsets: list[tuple[int, int]]) -> Answer:
        self.begin(now)
        stream = self.streams.get(name)
        if stream is None:
            return error(codes.STREAM_NOT_FOUND)
        group = stream.groups.get(group_name)
        if group is None and member is not None:
            return error(codes.UNKNOWN_MEMBER)
        problem = self.commit_problem(stream, group or Group(), member, generation, offsets)
        if problem is not None:
            return problem  # a rejected commit changes nothing, not even the group list
        group = stream.groups.setdefault(group_name, Group())
        group.committed.update(offsets)
        if member is not None:
            group.members[member] = (group.members[member][0], self.now)
        return OkResult()

    @staticmethod
    def commit_problem(stream: Stream, group: Group, member: str | None, generation: int,
                       offsets: list[tuple[int, int]]) -> Error | None:
        for partition, offset in offsets:
            if partition >= len(stream.parts) or offset > len(stream.parts[partition].log):
                return error(codes.INVALID_ARGUMENT)
        if member is None:
            return error(codes.STALE_GENERATION) if group.members else None
        if member not in group.members:
            return error(codes.UNKNOWN_MEMBER)
        if generation != group.generation:
            return error(codes.STALE_GENERATION)
        mine = group.assignment(len(stream.parts))[member]
        if any(p not in mine for p, _ in offsets):
            return error(codes.PARTITION_NOT_ASSIGNED)
        return None

    # ---------------------------------------------------------------- queries

    def info(self, name: str) -> StreamInfo:
        s = self.streams[name]
        parts = tuple(
            PartitionInfo(i, p.first, len(p.log), len(p.live()), p.bytes(),
                          p.live()[0][0] if p.live() else None)
            for i, p in enumerate(s.parts)
        )
        return StreamInfo(name, s.args, parts, tuple(s.groups), s.published, s.trimmed)

    def group_info(self, name: str, group_name: str) -> GroupInfo:
        s = self.streams[name]
        g = s.groups[group_name]
        owned = g.assignment(len(s.parts))
        members = tuple(MemberInfo(n, tuple(owned[n]), g.members[n][0], sum(g.members[n]))
                        for n in sorted(g.members))
        return GroupInfo(name, group_name, g.generation, members, tuple(sorted(g.committed.items())))

    def fetch(self, name: str, partition: int, offset: int, max_messages: int,
              max_bytes: int) -> Answer:
        stream = self.streams.get(name)
        if stream is None:
            return error(codes.STREAM_NOT_FOUND)
        if not 0 <= partition < len(stream.parts):
            return error(codes.PARTITION_NOT_FOUND)
        part = stream.parts[partition]
        if not part.first <= offset <= len(part.log):
            return OffsetOutOfRange(partition, offset, part.first, len(part.log))
        records: list[Record] = []
        for record in part.log[offset:offset + max_messages]:
            if records and sum(len(r[2]) for r in records) + len(record[2]) > max_bytes:
                break
            records.append(record)
        return FetchResult(partition, offset, records, part.first, len(part.log))

    def offset_for_timestamp(self, name: str, partition: int, timestamp_ms: int) -> int:
        part = self.streams[name].parts[partition]
        later = [o for o in range(part.first, len(part.log)) if part.log[o][0] >= timestamp_ms]
        return later[0] if later else len(part.log)
