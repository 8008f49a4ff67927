"""Streams in snapshots: exact round trips, restored states that behave identically, corrupt
stream sections refused with SnapshotError, version 1 snapshots, and determinism."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import lz4.frame
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftmq.broker.commands import (
    Bind,
    Command,
    DeclareExchange,
    DeclareQueue,
    OutMessage,
    Publish,
    Tick,
    encode_command,
)
from raftmq.broker.results import INTERNAL_ERROR, ErrorResult
from raftmq.broker.snapshot_checks import SnapshotError
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
from raftmq.broker.stream_results import StreamPublishResult
from tests.unit.test_stream_stateful import queries

# ---------------------------------------------------------------- random command sequences

_names = st.sampled_from(["s0", "s1"])
_members = st.sampled_from(["m0", "m1", "m2"])
_args = st.builds(StreamArgs, partitions=st.integers(1, 3),
                  max_age_ms=st.none() | st.just(50), max_bytes=st.none() | st.just(8),
                  max_messages=st.none() | st.just(3), max_message_bytes=st.none() | st.just(4))
_messages = st.lists(st.builds(StreamMessage, body=st.binary(max_size=5),
                               key=st.none() | st.sampled_from(["a", "b", ""]),
                               partition=st.none() | st.integers(0, 2),
                               headers=st.sampled_from([{}, {"h": 1}])), min_size=1, max_size=3)


_at = st.just(0)  # the time is set when the command takes its place in a sequence
_command: st.SearchStrategy[Command] = st.one_of(
    st.builds(DeclareStream, _at, _names, _args),
    st.builds(DeleteStream, _at, _names),
    st.builds(StreamPublish, _at, _names, _messages.map(tuple)),
    st.builds(StreamPublish, _at, _names, _messages.map(tuple)),  # twice: publishes feed the rest
    st.builds(StreamPublish, _at, _names, _messages.map(tuple), st.just("p"), st.integers(0, 3),
              st.sampled_from([0, 30])),
    st.builds(Publish, _at, st.sampled_from(["", "fan"]),
              st.lists(st.builds(OutMessage, st.sampled_from(["s0", "s1", "a"]),
                                 st.binary(max_size=4)), min_size=1, max_size=2).map(tuple)),
    st.builds(JoinGroup, _at, _names, st.just("g"), _members, st.sampled_from([100, 400])),
    st.builds(GroupHeartbeat, _at, _names, st.just("g"), _members),
    st.builds(LeaveGroup, _at, _names, st.just("g"), _members),
    st.builds(CommitOffsets, _at, _names, st.just("g"), _members, st.integers(0, 4),
              st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3)), max_size=2).map(tuple)),
    st.builds(CommitOffsets, _at, _names, st.just("g"), st.none(), st.just(0),
              st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3)), max_size=2).map(tuple)),
    st.builds(Tick, _at),
)


@st.composite
def command_lists(draw: st.DrawFn, max_size: int = 25, setup: bool = True) -> list[Command]:
    commands: list[Command] = []
    if setup:  # mostly streams that exist, one of them bound to an exchange
        commands += [DeclareStream(0, "s0", draw(_args)), DeclareStream(0, "s1", draw(_args)),
                     DeclareExchange(0, "fan", "fanout"), Bind(0, "fan", "s0", "")]
    now = 0
    for _ in range(draw(st.integers(0, max_size))):
        now += draw(st.sampled_from([0, 0, 10, 30, 60]))
        commands.append(replace(draw(_command), now_ms=now))
    return commands


def assert_usable(state: BrokerState) -> None:
    """No query raises and no command hits an internal error on this (restored) state."""
    queries(state)
    probe: list[Command] = [*(StreamPublish(state.now_ms, name, (StreamMessage(b"x", partition=p),))
               for name in ("s0", "s1", "s") for p in range(3)),
             JoinGroup(state.now_ms, "s", "g", "new", 100), Tick(state.now_ms + 10**6)]
    for cmd in probe:
        result = state.apply_command(cmd)
        assert not (isinstance(result, ErrorResult) and result.code == INTERNAL_ERROR), result
    state.snapshot()


@settings(max_examples=60, deadline=None)
@given(before=command_lists(), after=command_lists(max_size=15, setup=False))
def test_a_restored_state_is_identical_and_stays_identical(
    before: list[Command], after: list[Command]
) -> None:
    original = BrokerState()
    for cmd in before:
        original.apply_command(cmd)
    snapshot = original.snapshot()
    restored = BrokerState()
    restored.restore(snapshot)
    assert restored.snapshot() == snapshot
    assert queries(restored) == queries(original)
    start = original.now_ms
    for cmd in after:
        moved = replace(cmd, now_ms=start + cmd.now_ms)
        assert restored.apply_command(moved) == original.apply_command(moved)
    assert restored.snapshot() == original.snapshot()
    assert queries(restored) == queries(original)


@settings(max_examples=40, deadline=None)
@given(commands=command_lists())
def test_the_same_command_bytes_give_the_same_snapshot(commands: list[Command]) -> None:
    encoded = [encode_command(cmd) for cmd in commands]
    first, second = BrokerState(), BrokerState()
    assert [first.apply(data) for data in encoded] == [second.apply(data) for data in encoded]
    assert first.snapshot() == second.snapshot()


# ---------------------------------------------------------------- corrupt stream sections


def built() -> BrokerState:
    state = BrokerState()
    for cmd in (
        DeclareStream(0, "s", StreamArgs(partitions=2, max_age_ms=1000)),
        DeclareStream(0, "empty", StreamArgs(partitions=3)),  # empty partitions restore too
        DeclareQueue(0, "q"), DeclareExchange(0, "fan", "fanout"), Bind(0, "fan", "s", ""),
        StreamPublish(5, "s", (StreamMessage(b"a", "k", None, {"h": 1}), StreamMessage(b"bb")),
                      "p", 1),
        JoinGroup(6, "s", "g", "m", 1000),
        CommitOffsets(7, "s", "g", "m", 1, ((0, 1),)),
    ):
        assert not isinstance(state.apply_command(cmd), ErrorResult), cmd
    return state


def payload_of(snapshot: bytes) -> list[Any]:
    payload = msgpack.unpackb(lz4.frame.decompress(snapshot[4:]), raw=False)
    assert isinstance(payload, list)
    return payload


def encoded(payload: list[Any]) -> bytes:
    data: bytes = lz4.frame.compress(msgpack.packb(payload, use_bin_type=True))
    return b"RMQS" + data


# Paths into the payload: 9 is the streams section; stream "s" is [name, args, round_robin,
# published, trimmed, partitions, groups]; a partition [first_offset, timestamps, keys, bodies,
# headers]; a group [name, generation, members, committed].
S = (9, 0)
P0 = (*S, 5, 0)
G = (*S, 6, 0)
Edit = Callable[[Any], None]


def put(path: tuple[int, ...], value: Any) -> Edit:
    def edit(payload: Any) -> None:
        for step in path[:-1]:
            payload = payload[step]
        payload[path[-1]] = value
    return edit


def grow(path: tuple[int, ...], extra: Any) -> Edit:
    def edit(payload: Any) -> None:
        for step in path:
            payload = payload[step]
        payload.append(extra)
    return edit


CORRUPTIONS: dict[str, Edit] = {
    "streams not a list": put((9,), {"s": 1}),
    "stream arity": grow(S, 0),
    "stream name": put((*S, 0), "bad name!"),
    "stream twice": lambda p: p[9].append(copy.deepcopy(p[9][0])),
    "stream named like a queue": put((*S, 0), "q"),
    "no partitions": put((*S, 1, 0), 0),
    "too many partitions": put((*S, 1, 0), 5000),
    "max_bytes zero": put((*S, 1, 2), 0),
    "round robin out of range": put((*S, 2), 2),
    "published negative": put((*S, 3), -1),
    "partition count differs from args": lambda p: p[9][0][5].pop(),
    "first offset negative": put((*P0, 0), -1),
    "ragged columns": grow((*P0, 2), None),
    "timestamps backwards": lambda p: p[9][0][5][0][1].insert(0, 6),
    "timestamp after state time": put((*P0, 1, 0), 10**6),
    "timestamp not an int": put((*P0, 1, 0), 1.5),
    "key not text": put((*P0, 2, 0), 7),
    "body not binary": put((*P0, 3, 0), "text"),
    "headers not a map": put((*P0, 4, 0), [1]),
    "header value": put((*P0, 4, 0), {"h": [1]}),
    "group arity": grow(G, 0),
    "group twice": lambda p: p[9][0][6].append(copy.deepcopy(p[9][0][6][0])),
    "group name": put((*G, 0), ""),
    "members without a generation": put((*G, 1), 0),
    "member twice": lambda p: p[9][0][6][0][2].append(list(p[9][0][6][0][2][0])),
    "member expiry": put((*G, 2, 0, 2), "soon"),
    "committed not pairs": grow((*G, 3), 1),
    "commit of a missing partition": put((*G, 3, 0), 2),
    "commit past the end": put((*G, 3, 1), 2),
    "binding to a missing stream": put((5, 0, 3, 0, 0), "gone"),
    "stream producer result": lambda p: p[8][0][3][0][2].append(5),
    "version 1 with streams": put((0,), 1),
    "version 2 without streams": lambda p: p.pop(),
}


def test_the_untouched_payload_restores() -> None:
    state = built()
    restored = BrokerState()
    restored.restore(encoded(payload_of(state.snapshot())))
    assert restored.snapshot() == state.snapshot()


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_corrupt_stream_section_raises_snapshot_error(name: str) -> None:
    state = built()
    before = state.snapshot()
    payload = payload_of(before)
    CORRUPTIONS[name](payload)
    with pytest.raises(SnapshotError):
        state.restore(encoded(payload))
    assert state.snapshot() == before  # a failed restore leaves the state as it was


_JUNK = st.sampled_from([None, -1, 0, 1, 3, 2**63, 1.5, True, "x", "", b"x", [], [0], {}, {"a": 1}])


def _leaves(value: Any, path: tuple[int, ...]) -> list[tuple[int, ...]]:
    if isinstance(value, list):
        return [path] + [leaf for i, item in enumerate(value) for leaf in _leaves(item, (*path, i))]
    return [path]


@settings(max_examples=200, deadline=None)
@given(data=st.data(), junk=_JUNK)
def test_any_damage_to_the_stream_section_is_refused_or_harmless(
    data: st.DataObject, junk: Any
) -> None:
    payload = payload_of(built().snapshot())
    path = data.draw(st.sampled_from(_leaves(payload[9], (9,))))
    put(path, junk)(payload)
    restored = BrokerState()
    try:
        restored.restore(encoded(payload))
    except SnapshotError:
        return
    assert_usable(restored)


# ---------------------------------------------------------------- version 1


def test_a_version_1_snapshot_without_streams_restores() -> None:
    state = BrokerState()
    state.apply_command(DeclareQueue(0, "q"))
    state.apply_command(Publish(3, "", (OutMessage("q", b"body"),)))
    payload = payload_of(state.snapshot())
    assert payload[0] == 2 and payload[9] == []
    old = [1, *payload[1:9]]
    restored = BrokerState()
    restored.restore(encoded(old))
    assert restored.list_queues() == state.list_queues()
    assert restored.snapshot() == state.snapshot()  # written back as version 2
    assert restored.streams().list_all() == []
    created = restored.apply_command(DeclareStream(4, "s", StreamArgs()))
    assert not isinstance(created, ErrorResult)
    published = restored.apply_command(StreamPublish(4, "s", (StreamMessage(b"x"),)))
    assert published == StreamPublishResult((0,), (0,))
