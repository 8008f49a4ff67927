"""Stream partitions: offsets, the partitioner, per-key order, retention and fetching.

`PartitionLog` is checked against a plain list (with its compaction threshold lowered so that
the moving-head bookkeeping is exercised), the rest through `BrokerState` commands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from raftmq.broker import stream_log
from raftmq.broker.commands import Tick
from raftmq.broker.results import PARTITION_NOT_FOUND, STREAM_NOT_FOUND, ErrorResult, OkResult
from raftmq.broker.state import BrokerState
from raftmq.broker.stream_commands import (
    DeclareStream,
    JoinGroup,
    StreamArgs,
    StreamMessage,
    StreamPublish,
)
from raftmq.broker.stream_log import PartitionLog, StreamRecord
from raftmq.broker.stream_results import FetchResult, OffsetOutOfRange, StreamPublishResult
from raftmq.broker.stream_state import partition_for_key

# ---------------------------------------------------------------- PartitionLog against a list

log_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 3), st.integers(0, 5)),  # ms step, body size
        st.tuples(st.just("trim"), st.integers(1, 4), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=log_ops, data=st.data())
def test_partition_log_matches_a_list(ops: list[tuple[str, int, int]], data: st.DataObject) -> None:
    with mock.patch.object(stream_log, "COMPACT_MIN_DEAD", 2):
        log = PartitionLog()
        everything: list[StreamRecord] = []  # offset = index
        first, now = 0, 0
        for op, amount, size in ops:
            if op == "append":
                now += amount
                record: StreamRecord = (now, None, bytes(size), {})
                assert log.append(record) == len(everything)  # gap-free, from 0
                everything.append(record)
            else:
                for _ in range(min(amount, len(everything) - first)):
                    assert log.trim_head() == everything[first]
                    first += 1
            live = everything[first:]
            assert (log.first_offset, log.next_offset, len(log)) == (first, len(everything), len(live))
            assert log.bytes == sum(len(r[2]) for r in live)
            assert log.records() == live
            assert log.head_timestamp_ms() == (live[0][0] if live else None)
        offset = data.draw(st.integers(first, len(everything)))
        max_messages, max_bytes = data.draw(st.integers(1, 5)), data.draw(st.integers(0, 8))
        expected = everything[offset:offset + max_messages]
        while len(expected) > 1 and sum(len(r[2]) for r in expected) > max_bytes:
            expected.pop()
        assert log.read(offset, max_messages, max_bytes) == expected
        timestamp = data.draw(st.integers(0, now + 1))
        later = [o for o in range(first, len(everything)) if everything[o][0] >= timestamp]
        assert log.offset_for_timestamp(timestamp) == (later[0] if later else len(everything))


# ---------------------------------------------------------------- the partitioner

# Computed once from BLAKE2b-64: any change of the hash function must fail here, because every
# client and every replica must place a key the same way forever.
PINNED = {("user-1", 1024): 392, ("user-2", 1024): 968, ("order:42", 1024): 527,
          ("a", 1024): 559, ("é", 1024): 303, ("日本", 1024): 826, ("user-1", 7): 3,
          ("user-2", 7): 6, ("order:42", 7): 1, ("order:42", 16): 15, ("key", 2): 1}

_CHILD = (
    "import json, sys\n"
    "from raftmq.broker.stream_state import partition_for_key\n"
    "pairs = json.loads(sys.argv[1])\n"
    "print(json.dumps([[partition_for_key(k, n) for k, n in pairs], hash('user-1')]))\n"
)


def test_partitioner_values_are_pinned() -> None:
    assert {pair: partition_for_key(*pair) for pair in PINNED} == PINNED


def test_partitioner_does_not_depend_on_the_hash_seed() -> None:
    pairs = [list(pair) for pair in PINNED]
    outputs = []
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(pairs)], env=env,
                              capture_output=True, text=True, timeout=60, check=True)
        outputs.append(json.loads(done.stdout))
    (first, builtin_1), (second, builtin_2) = outputs
    assert builtin_1 != builtin_2  # the seeds do change str hashing in the children...
    assert first == second == list(PINNED.values())  # ...and not the partitioner


# ---------------------------------------------------------------- placing messages


def stream_state(name: str = "s", **args: Any) -> BrokerState:
    state = BrokerState()
    assert state.apply_command(DeclareStream(0, name, StreamArgs(**args))) == OkResult(True)
    return state


def publish(state: BrokerState, now: int, *messages: StreamMessage, name: str = "s") -> Any:
    return state.apply_command(StreamPublish(now, name, messages))


def records(state: BrokerState, partition: int, name: str = "s") -> list[StreamRecord]:
    info = state.streams().info(name)
    assert info is not None
    first = info.partitions[partition].first_offset
    found = state.streams().fetch(name, partition, first, 10**6, 10**9)
    assert isinstance(found, FetchResult)
    return found.records


@settings(max_examples=40, deadline=None)
@given(partitions=st.integers(1, 5),
       batches=st.lists(st.lists(st.sampled_from(["k1", "k2", "k3", "k4", None]), min_size=1,
                                 max_size=5), min_size=1, max_size=6))
def test_one_key_lands_in_one_partition_in_publish_order(
    partitions: int, batches: list[list[str | None]]
) -> None:
    state = stream_state(partitions=partitions)
    sent = 0
    for batch in batches:
        messages = [StreamMessage(str(sent + i).encode(), key) for i, key in enumerate(batch)]
        result = publish(state, sent, *messages)
        assert isinstance(result, StreamPublishResult)
        for key, partition in zip(batch, result.partitions, strict=True):
            if key is not None:
                assert partition == partition_for_key(key, partitions)
        sent += len(batch)
    for key in ("k1", "k2", "k3", "k4"):
        owner = partition_for_key(key, partitions)
        bodies = [int(r[2]) for p in range(partitions) for r in records(state, p) if r[1] == key]
        assert bodies == sorted(bodies)  # publish order
        assert all(r[1] != key for p in range(partitions) if p != owner for r in records(state, p))
    for p in range(partitions):  # offsets per partition: from 0, no gaps
        info = state.streams().info("s")
        assert info is not None and info.partitions[p].next_offset == len(records(state, p))


def test_explicit_partition_wins_and_keyless_messages_take_turns() -> None:
    state = stream_state(partitions=3)
    result = publish(state, 1, StreamMessage(b"0"), StreamMessage(b"pinned", "k", 2),
                     StreamMessage(b"1"), StreamMessage(b"keyed", "z"), StreamMessage(b"2"),
                     StreamMessage(b"3"))
    assert partition_for_key("z", 3) == 1
    # Explicit and keyed messages do not move the round-robin turn.
    assert result == StreamPublishResult((0, 2, 1, 1, 2, 0), (0, 0, 0, 1, 1, 1))
    assert publish(state, 2, StreamMessage(b"4")).partitions == (1,)


# ---------------------------------------------------------------- retention


def offsets(state: BrokerState, partition: int = 0) -> tuple[int, int, int]:
    info = state.streams().info("s")
    assert info is not None
    p = info.partitions[partition]
    return p.first_offset, p.next_offset, p.bytes


def test_max_messages_trims_the_oldest_and_offsets_are_never_reused() -> None:
    state = stream_state(max_messages=3)
    for i in range(7):
        assert publish(state, i, StreamMessage(b"x")).offsets == (i,)
        assert offsets(state) == (max(0, i - 2), i + 1, min(i + 1, 3))
    assert [r[0] for r in records(state, 0)] == [4, 5, 6]


def test_max_bytes_keeps_the_newest_record_even_when_it_alone_is_too_big() -> None:
    state = stream_state(max_bytes=10)
    publish(state, 1, StreamMessage(b"aaaa"), StreamMessage(b"bbbb"))
    assert offsets(state) == (0, 2, 8)
    publish(state, 2, StreamMessage(b"cccc"))  # 12 > 10: the oldest goes
    assert offsets(state) == (1, 3, 8)
    publish(state, 3, StreamMessage(b"d" * 25))
    assert offsets(state) == (3, 4, 25)
    assert [r[2] for r in records(state, 0)] == [b"d" * 25]


def test_max_age_is_judged_against_command_time() -> None:
    state = stream_state(max_age_ms=100)
    publish(state, 1000, StreamMessage(b"old"))
    publish(state, 1050, StreamMessage(b"new"))
    state.apply_command(Tick(1100))  # exactly max_age old: kept
    assert offsets(state) == (0, 2, 6)
    state.apply_command(Tick(1101))
    assert offsets(state) == (1, 2, 3)
    state.apply_command(Tick(1040))  # a stale clock does not move state time back
    assert state.now_ms == 1101
    state.apply_command(Tick(1151))
    assert offsets(state) == (2, 2, 0)
    assert publish(state, 1152, StreamMessage(b"next")).offsets == (2,)


def test_a_record_exactly_max_age_old_stays_when_another_deadline_fires_then() -> None:
    state = stream_state(max_age_ms=100)
    publish(state, 0, StreamMessage(b"r"))
    # A session ending at 100 makes the state check its deadlines at exactly that time.
    state.apply_command(JoinGroup(0, "s", "g", "m", 100))
    state.apply_command(Tick(100))
    group = state.streams().group("s", "g")
    assert group is not None and group.members == ()  # the session deadline did fire
    assert offsets(state) == (0, 1, 1)


# ---------------------------------------------------------------- fetching


def test_fetch_range_limits_and_errors() -> None:
    state = stream_state(partitions=2, max_messages=4)
    publish(state, 5, *(StreamMessage(bytes([i]) * (i + 1), partition=0) for i in range(6)))
    reader = state.streams()
    assert offsets(state) == (2, 6, 3 + 4 + 5 + 6)
    assert reader.fetch("s", 0, 1, 10, 100) == OffsetOutOfRange(0, 1, 2, 6)
    assert reader.fetch("s", 0, 7, 10, 100) == OffsetOutOfRange(0, 7, 2, 6)
    assert reader.fetch("s", 0, 6, 10, 100) == FetchResult(0, 6, [], 2, 6)
    assert reader.fetch("s", 1, 0, 10, 100) == FetchResult(1, 0, [], 0, 0)
    found = reader.fetch("s", 0, 3, 2, 100)
    assert isinstance(found, FetchResult) and [len(r[2]) for r in found.records] == [4, 5]
    found = reader.fetch("s", 0, 3, 10, 9)  # 4 + 5 fit, 4 + 5 + 6 do not
    assert isinstance(found, FetchResult) and [len(r[2]) for r in found.records] == [4, 5]
    found = reader.fetch("s", 0, 3, 10, 0)  # at least one record, however small the budget
    assert isinstance(found, FetchResult) and [len(r[2]) for r in found.records] == [4]
    missing_stream = reader.fetch("t", 0, 0, 1, 1)
    missing_partition = reader.fetch("s", 2, 0, 1, 1)
    assert isinstance(missing_stream, ErrorResult) and missing_stream.code == STREAM_NOT_FOUND
    assert isinstance(missing_partition, ErrorResult) and missing_partition.code == PARTITION_NOT_FOUND


def test_offset_for_timestamp() -> None:
    state = stream_state(max_messages=3)
    for now in (10, 20, 20, 30, 40):
        publish(state, now, StreamMessage(b"x"))
    reader = state.streams()  # offsets 2..4 are left, stamped 20, 30, 40
    assert [reader.offset_for_timestamp("s", 0, ts) for ts in (0, 20, 21, 30, 40, 41)] == [
        2, 2, 3, 3, 4, 5]
    assert reader.next_offset("s", 0) == 5
    missing = reader.offset_for_timestamp("s", 1, 0)
    assert isinstance(missing, ErrorResult) and missing.code == PARTITION_NOT_FOUND
