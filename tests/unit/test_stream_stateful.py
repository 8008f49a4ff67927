"""Stateful property test: BrokerState's streams against the naive reference model.

Hypothesis drives the real state and `StreamModel` with the same random commands: streams with
random retention, stream publishes (keys, explicit partitions, producer retries, memory limit),
exchange publishes routed to streams and a queue, bindings, queues taking stream names,
consumer groups (joins, heartbeats, leaves, commits right and wrong), fetches and time jumps.
After every step every stream, partition, record and group is compared with the model.

Twins run alongside: one fed the encoded command bytes from the start (`apply`, the Raft path,
which takes the wire fast path for stream publishes) and the states restored from snapshots.
Each twin gets every further command and must return the same results, answer every query the
same way and snapshot to the same bytes.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from raftmq.broker.commands import (
    Bind,
    Command,
    DeclareExchange,
    DeclareQueue,
    DeleteQueue,
    OutMessage,
    Publish,
    Tick,
    Unbind,
    encode_command,
)
from raftmq.broker.results import (
    INVALID_ARGUMENT,
    PARTITION_NOT_ASSIGNED,
    ErrorResult,
    OkResult,
    PublishResult,
    Result,
)
from raftmq.broker.state import BrokerState
from raftmq.broker.stream_commands import (
    CommitOffsets,
    DeclareStream,
    DeleteStream,
    GroupHeartbeat,
    JoinGroup,
    LeaveGroup,
    StreamArgs,
    StreamMessage,
    StreamPublish,
)
from raftmq.broker.stream_results import FetchResult, OffsetOutOfRange
from tests.unit.test_stream_reference_model import StreamModel
from tests.unit.test_stream_reference_parts import EXCHANGE_TYPES

STREAMS = ["s0", "s1", "s2"]
GROUPS = ["g0", "g1"]
MEMBERS = ["m0", "m1", "m2", "m3"]
KEYS = ["", "a", "b", "a.b", "c.d"]
MAX_TWINS = 3  # restored states kept besides the wire twin
BIG_JUMP_MS = 25 * 3600 * 1000  # past the producers' idle expiry

stream_names = st.sampled_from(STREAMS)
group_names = st.sampled_from(GROUPS)
member_names = st.sampled_from(MEMBERS)
# Limits are off more often than on, or hardly anything would be kept.
stream_args = st.builds(
    StreamArgs,
    partitions=st.integers(1, 3),
    max_age_ms=st.none() | st.none() | st.sampled_from([40, 120]),
    max_bytes=st.none() | st.none() | st.integers(1, 16),
    max_messages=st.none() | st.none() | st.integers(1, 5),
    max_message_bytes=st.none() | st.none() | st.integers(2, 5),
)
headers = st.sampled_from([{}, {}, {"h": 1}, {"t": "x"}])
stream_batches = st.lists(
    st.tuples(st.none() | st.sampled_from(KEYS), st.none() | st.none() | st.none() | st.integers(0, 3),
              st.binary(max_size=5), headers),
    min_size=1, max_size=4,
)
exchange_batches = st.lists(
    st.tuples(st.sampled_from([*KEYS, *STREAMS, "q"]), st.binary(max_size=5), headers),
    min_size=1, max_size=3,
)
# "fits": the memory limit is exactly what the publish needs; "over": one byte less.
limit_modes = st.sampled_from(["none", "none", "fits", "over"])
producer_modes = st.sampled_from(["none", "none", "next", "next", "retry", "retry", "older",
                                  "inside", "edge", "ancient"])


def normalise(result: Any) -> Any:
    return ("error", result.code) if isinstance(result, ErrorResult) else result


def queries(state: BrokerState) -> list[Any]:
    """Everything a reader can ask a state, in one comparable value."""
    reader = state.streams()
    infos = reader.list_all()
    answers: list[Any] = [
        state.now_ms, state.total_body_bytes, state.message_count, state.producer_count,
        state.list_queues(), state.list_bindings(), state.list_exchanges(), infos,
        reader.info("nowhere"), reader.groups("nowhere"), reader.fetch("nowhere", 0, 0, 1, 1),
    ]
    for info in infos:
        name = info.name
        answers += [reader.groups(name), [reader.group(name, g) for g in GROUPS],
                    reader.fetch(name, len(info.partitions), 0, 1, 1)]
        for p in info.partitions:
            index, first = p.partition, p.first_offset
            answers += [reader.fetch(name, index, first, 1000, 10**6),
                        reader.fetch(name, index, first + 1, 2, 4),
                        reader.offset_for_timestamp(name, index, state.now_ms - 50)]
    return answers


class StreamComparison(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.real = BrokerState()
        self.wire_twin = BrokerState()  # fed encode_command bytes through apply()
        self.twins: list[BrokerState] = []  # restored from snapshots, fed typed commands
        self.model = StreamModel()
        self.now = 0
        self.sequence = 100  # producer "p"'s latest; high, so "ancient" ones are too old
        self.jumped = False

    def run(self, cmd: Command) -> Result:
        result = self.real.apply_command(cmd)
        assert self.wire_twin.apply(encode_command(cmd)) == result
        for twin in self.twins:
            assert twin.apply_command(cmd) == result
        return result

    def check(self, cmd: Command, expected: Any) -> Result:
        result = self.run(cmd)
        assert normalise(result) == expected, (cmd, result, expected)
        return result

    def pick_sequence(self, mode: str) -> int | None:
        return {"none": None, "next": self.sequence + 1, "retry": self.sequence,
                "older": self.sequence - 3, "inside": self.sequence - 63,
                "edge": self.sequence - 64, "ancient": self.sequence - 70}[mode]

    def memory_limit(self, mode: str, incoming: int) -> int:
        """max_total_bytes for a publish: 0 (no limit) or right at the edge, so that the
        stream bytes the broker holds decide whether the publish fits."""
        if mode == "none":
            return 0
        return max(0, self.model.held_bytes() + incoming - (mode == "over"))

    def note_sequence(self, seq: int | None) -> None:
        if seq is not None and seq > self.sequence:
            self.sequence = seq

    # ------------------------------------------------------------ topology

    @initialize(args=st.lists(stream_args, min_size=len(STREAMS), max_size=len(STREAMS)))
    def topology(self, args: list[StreamArgs]) -> None:
        for name, kind in EXCHANGE_TYPES.items():
            assert self.run(DeclareExchange(0, name, kind)) == OkResult(True)
        for name, stream_arg in zip(STREAMS, args, strict=True):
            self.declare_stream(name, stream_arg)

    @rule(name=stream_names, args=stream_args)
    def declare_stream(self, name: str, args: StreamArgs) -> None:
        self.check(DeclareStream(self.now, name, args), self.model.declare_stream(self.now, name, args))

    @rule(name=stream_names, args=stream_args)
    def recreate_stream(self, name: str, args: StreamArgs) -> None:
        """Delete and declare again: offsets start over, groups and bindings are gone."""
        self.check(DeleteStream(self.now, name), self.model.delete_stream(self.now, name))
        self.declare_stream(name, args)

    @rule(name=st.sampled_from([*STREAMS, "q"]), delete=st.booleans())
    def queue(self, name: str, delete: bool) -> None:
        """Queues share the streams' names: declaring one over a stream must fail."""
        if delete:
            self.check(DeleteQueue(self.now, name), self.model.delete_queue(self.now, name))
        else:
            self.check(DeclareQueue(self.now, name), self.model.declare_queue(self.now, name))

    @rule(exchange=st.sampled_from(list(EXCHANGE_TYPES)), bound_to=st.sampled_from([*STREAMS, "q"]),
          key=st.sampled_from(["", "a", "b", "*", "#", "a.*", "#.d"]), bound=st.booleans())
    def bind(self, exchange: str, bound_to: str, key: str, bound: bool) -> None:
        command = Bind if bound else Unbind
        expected = self.model.bind(self.now, exchange, bound_to, key, bound)
        self.check(command(self.now, exchange, bound_to, key), expected)

    # ------------------------------------------------------------ publishing

    @rule(name=st.sampled_from([*STREAMS, "nowhere"]), batch=stream_batches, mode=producer_modes,
          limit=limit_modes)
    def publish(self, name: str, batch: list[Any], mode: str, limit: str) -> None:
        max_total = self.memory_limit(limit, sum(len(m[2]) for m in batch))
        seq = self.pick_sequence(mode)
        pid = None if seq is None else "p"
        messages = tuple(StreamMessage(body, key, part, dict(h)) for key, part, body, h in batch)
        expected = self.model.publish_stream(
            self.now, name, [(k, part, body, dict(h)) for k, part, body, h in batch], pid, seq,
            max_total)
        self.check(StreamPublish(self.now, name, messages, pid, seq, max_total), expected)
        self.note_sequence(seq)

    @rule(name=stream_names, batch=stream_batches)
    def publish_plain(self, name: str, batch: list[Any]) -> None:
        """Publishing feeds everything else: a second rule makes it frequent."""
        self.publish(name, batch, "none", "none")

    @rule(exchange=st.sampled_from(["", *EXCHANGE_TYPES]), batch=exchange_batches,
          mode=producer_modes, limit=limit_modes)
    def publish_exchange(self, exchange: str, batch: list[Any], mode: str, limit: str) -> None:
        max_total = self.memory_limit(limit, sum(len(m[1]) for m in batch))
        seq = self.pick_sequence(mode)
        pid = None if seq is None else "p"
        out = tuple(OutMessage(key, body, dict(h)) for key, body, h in batch)
        expected = self.model.publish_exchange(
            self.now, exchange, [(k, body, dict(h)) for k, body, h in batch], pid, seq, max_total)
        self.check(Publish(self.now, exchange, out, pid, seq, max_total), expected)
        self.note_sequence(seq)

    def latest_kind(self) -> type | None:
        record = self.model.producers.get("p")
        found = None if record is None else record.results.get(self.sequence)
        return None if found is None else type(found)

    @precondition(lambda self: self.latest_kind() is not None)
    @rule(name=stream_names, batch=stream_batches, exchange_batch=exchange_batches)
    def reuse_sequence_other_kind(self, name: str, batch: list[Any],
                                  exchange_batch: list[Any]) -> None:
        """A producer's sequences are shared by exchange and stream publishes: retrying the
        latest one with the other kind is rejected, not answered as a duplicate."""
        if self.latest_kind() is PublishResult:
            self.publish(name, batch, "retry", "none")
        else:
            self.publish_exchange("", exchange_batch, "retry", "none")

    # ------------------------------------------------------------ consumer groups

    def pick_member(self, data: st.DataObject) -> tuple[str, str, str]:
        """Mostly a current member (else most group commands would hit nobody)."""
        known = [(name, group, member) for name, stream in self.model.streams.items()
                 for group, found in stream.groups.items() for member in found.members]
        anyone = st.tuples(stream_names, group_names, member_names)
        if not known:
            return data.draw(anyone)
        current = st.sampled_from(known)
        return data.draw(st.one_of(current, current, current, anyone))

    @rule(data=st.data(), timeout=st.sampled_from([100, 1000, 5000]))
    def join(self, data: st.DataObject, timeout: int) -> None:
        name, group, member = self.pick_member(data)
        expected = self.model.join(self.now, name, group, member, timeout)
        self.check(JoinGroup(self.now, name, group, member, timeout), expected)

    @rule(name=stream_names, member=member_names)
    def join_new(self, name: str, member: str) -> None:
        """Joins feed every other group rule: a second rule makes them frequent."""
        expected = self.model.join(self.now, name, "g0", member, 1000)
        self.check(JoinGroup(self.now, name, "g0", member, 1000), expected)

    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        name, group, member = self.pick_member(data)
        expected = self.model.heartbeat(self.now, name, group, member)
        self.check(GroupHeartbeat(self.now, name, group, member), expected)

    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        name, group, member = self.pick_member(data)
        self.check(LeaveGroup(self.now, name, group, member),
                   self.model.leave(self.now, name, group, member))

    @rule(data=st.data(), standalone=st.sampled_from([True, False, False]),
          generation=st.sampled_from(["current", "current", "previous"]))
    def commit(self, data: st.DataObject, standalone: bool, generation: str) -> None:
        name, group, picked = self.pick_member(data)
        member = None if standalone else picked
        stream = self.model.streams.get(name)
        found = None if stream is None else stream.groups.get(group)
        current = 0 if found is None else found.generation
        gen = 0 if member is None else max(0, current - (generation == "previous"))
        count = 1 if stream is None else len(stream.parts)
        pairs: list[tuple[int, int]] = []
        existing = [*range(count)] * 3 + [count]  # the last one does not exist
        for partition in data.draw(st.lists(st.sampled_from(existing), max_size=2)):
            part = stream.parts[partition] if stream and partition < count else None
            first, end = (0, 0) if part is None else (part.first, len(part.log))
            pairs.append((partition, data.draw(st.sampled_from([end, end, first, end + 1]))))
        expected = self.model.commit(self.now, name, group, member, gen, pairs)
        self.check(CommitOffsets(self.now, name, group, member, gen, tuple(pairs)), expected)

    def foreign_partitions(self) -> list[tuple[str, str, str, int]]:
        """(stream, group, member, partition) with the partition owned by another member."""
        found = []
        for name, stream in self.model.streams.items():
            for group, members in stream.groups.items():
                owned = members.assignment(len(stream.parts))
                found += [(name, group, member, p) for member, mine in owned.items()
                          for p in range(len(stream.parts)) if p not in mine]
        return found

    @precondition(lambda self: bool(self.foreign_partitions()))
    @rule(data=st.data())
    def commit_foreign(self, data: st.DataObject) -> None:
        """A member commits a partition that is someone else's in the current generation."""
        name, group, member, partition = data.draw(st.sampled_from(self.foreign_partitions()))
        generation = self.model.streams[name].groups[group].generation
        pairs = [(partition, self.model.streams[name].parts[partition].first)]
        expected = self.model.commit(self.now, name, group, member, generation, pairs)
        assert expected == ("error", PARTITION_NOT_ASSIGNED)
        self.check(CommitOffsets(self.now, name, group, member, generation, tuple(pairs)), expected)

    @rule(name=stream_names, member=member_names)
    def invalid_join(self, name: str, member: str) -> None:
        """A command that fails validation changes nothing, not even the state's clock."""
        result = self.run(JoinGroup(self.now + 10_000, name, "g0", member, 1))
        assert isinstance(result, ErrorResult) and result.code == INVALID_ARGUMENT

    # ------------------------------------------------------------ reading and time

    @rule(name=stream_names, partition=st.integers(0, 3), delta=st.integers(-2, 8),
          max_messages=st.integers(1, 4), max_bytes=st.integers(0, 12))
    def fetch(self, name: str, partition: int, delta: int, max_messages: int, max_bytes: int) -> None:
        stream = self.model.streams.get(name)
        first = stream.parts[partition].first if stream and partition < len(stream.parts) else 0
        offset = max(0, first + delta)
        result = self.real.streams().fetch(name, partition, offset, max_messages, max_bytes)
        assert normalise(result) == self.model.fetch(name, partition, offset, max_messages,
                                                     max_bytes)

    @rule(name=stream_names, partition=st.integers(0, 2), back_ms=st.integers(-5, 200))
    def offset_for_timestamp(self, name: str, partition: int, back_ms: int) -> None:
        stream = self.model.streams.get(name)
        if stream is None or partition >= len(stream.parts):
            return
        timestamp = max(0, self.now - back_ms)
        found = self.real.streams().offset_for_timestamp(name, partition, timestamp)
        assert found == self.model.offset_for_timestamp(name, partition, timestamp)

    # Round steps land exactly on deadlines (sessions of 100 ms, ages of 40 and 120 ms).
    @rule(step=st.sampled_from([0, 1, 10, 20, 20, 40, 50, 100]) | st.integers(0, 60),
          stale_clock=st.booleans())
    def tick(self, step: int, stale_clock: bool) -> None:
        self.now += step
        # A proposer with a slow clock: state time must not go backwards.
        stamp = max(0, self.now - 30) if stale_clock else self.now
        self.check(Tick(stamp), self.model.tick(stamp))

    @precondition(lambda self: (self.model.next_deadline() or 0) > self.now)
    @rule(early=st.booleans())
    def tick_to_deadline(self, early: bool) -> None:
        """Exactly to the model's next deadline (a session end, a record's age limit), or to
        one millisecond before it: the boundaries are where off-by-one errors live."""
        due = self.model.next_deadline()
        assert due is not None
        self.tick(due - early - self.now, False)

    @precondition(lambda self: not self.jumped)
    @rule()
    def idle_jump(self) -> None:
        """Once per run at most: a jump past every session, age limit and producer idle time."""
        self.jumped = True
        self.tick(BIG_JUMP_MS, False)

    @precondition(lambda self: bool(self.model.streams))
    @rule(from_twin=st.booleans())
    def snapshot_and_restore(self, from_twin: bool) -> None:
        """The restored state becomes the one compared with the model; the old one stays a
        twin, so original and restored keep getting the same commands."""
        source = self.twins[-1] if from_twin and self.twins else self.real
        snapshot = source.snapshot()
        restored = BrokerState()
        restored.restore(snapshot)
        assert restored.snapshot() == snapshot
        self.twins.append(self.real)
        self.real = restored
        del self.twins[:-MAX_TWINS]

    # ------------------------------------------------------------ invariants

    @invariant()
    def streams_agree_with_model(self) -> None:
        reader = self.real.streams()
        model = self.model
        assert [s.name for s in reader.list_all()] == list(model.streams)
        for name, stream in model.streams.items():
            assert reader.info(name) == model.info(name)
            assert reader.groups(name) == [model.group_info(name, g) for g in stream.groups]
            for index, part in enumerate(stream.parts):
                whole = reader.fetch(name, index, part.first, 10**6, 10**9)
                assert isinstance(whole, FetchResult) and whole.records == part.live()
                # Byte budget 0: still the first record, so a reader cannot get stuck.
                assert reader.fetch(name, index, part.first, 3, 0) == model.fetch(
                    name, index, part.first, 3, 0)
                after = len(part.log) + 1
                assert reader.fetch(name, index, after, 1, 1) == OffsetOutOfRange(
                    index, after, part.first, len(part.log))
                if part.first:
                    assert reader.fetch(name, index, part.first - 1, 1, 1) == OffsetOutOfRange(
                        index, part.first - 1, part.first, len(part.log))
        assert self.real._core.stream_bytes == model.stream_bytes()
        assert self.real.total_body_bytes == model.held_bytes() - model.stream_bytes()
        assert self.real.now_ms == model.now
        assert self.real.producer_count == len(model.producers)

    @invariant()
    def assignments_are_balanced_covers(self) -> None:
        for info in self.real.streams().list_all():
            count = len(info.partitions)
            for group in self.real.streams().groups(info.name) or []:
                owned = [p for m in group.members for p in m.partitions]
                assert sorted(owned) == (list(range(count)) if group.members else [])
                sizes = [len(m.partitions) for m in group.members]
                assert not sizes or max(sizes) - min(sizes) <= 1

    @invariant()
    def deadline_is_never_late(self) -> None:
        due = self.model.next_deadline()
        if due is not None:
            real_due = self.real.next_deadline_ms()
            assert real_due is not None and real_due <= due

    @invariant()
    def twins_agree(self) -> None:
        snapshot = self.real.snapshot()
        answers = queries(self.real)
        for twin in [self.wire_twin, *self.twins]:
            assert twin.snapshot() == snapshot
            assert queries(twin) == answers


StreamComparison.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_streams_match_reference_model = StreamComparison.TestCase
