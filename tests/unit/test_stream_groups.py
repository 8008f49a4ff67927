"""Consumer groups through BrokerState: assignment, generations, sessions and commits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raftmq.broker.commands import Tick
from raftmq.broker.results import (
    INVALID_ARGUMENT,
    PARTITION_NOT_ASSIGNED,
    STALE_GENERATION,
    STREAM_NOT_FOUND,
    UNKNOWN_MEMBER,
    ErrorResult,
    OkResult,
)
from raftmq.broker.state import BrokerState
from raftmq.broker.stream_commands import (
    CommitOffsets,
    DeclareStream,
    GroupHeartbeat,
    JoinGroup,
    LeaveGroup,
    StreamArgs,
    StreamMessage,
    StreamPublish,
)
from raftmq.broker.stream_results import GroupAssignment, GroupInfo


def with_stream(partitions: int, messages_per_partition: int = 0) -> BrokerState:
    state = BrokerState()
    assert state.apply_command(DeclareStream(0, "s", StreamArgs(partitions))) == OkResult(True)
    for p in range(partitions):
        batch = tuple(StreamMessage(b"x", partition=p) for _ in range(messages_per_partition))
        if batch:
            state.apply_command(StreamPublish(0, "s", batch))
    return state


def join(state: BrokerState, now: int, member: str, timeout_ms: int = 1000) -> GroupAssignment:
    result = state.apply_command(JoinGroup(now, "s", "g", member, timeout_ms))
    assert isinstance(result, GroupAssignment), result
    return result


def heartbeat(state: BrokerState, now: int, member: str) -> GroupAssignment:
    result = state.apply_command(GroupHeartbeat(now, "s", "g", member))
    assert isinstance(result, GroupAssignment), result
    return result


def group(state: BrokerState) -> GroupInfo:
    found = state.streams().group("s", "g")
    assert found is not None
    return found


def owners(state: BrokerState) -> dict[str, tuple[int, ...]]:
    return {m.member: m.partitions for m in group(state).members}


def code_of(result: object) -> str:
    assert isinstance(result, ErrorResult), result
    return result.code


def commit(state: BrokerState, now: int, member: str | None, generation: int,
           *pairs: tuple[int, int]) -> object:
    return state.apply_command(CommitOffsets(now, "s", "g", member, generation, pairs))


# ---------------------------------------------------------------- assignment


@settings(max_examples=60, deadline=None)
@given(partitions=st.integers(1, 12),
       members=st.lists(st.sampled_from([f"m{i}" for i in range(8)]), min_size=1, max_size=8,
                        unique=True),
       data=st.data())
def test_assignment_depends_on_the_members_only_and_is_a_balanced_cover(
    partitions: int, members: list[str], data: st.DataObject
) -> None:
    states = []
    for order in (members, data.draw(st.permutations(members))):
        state = with_stream(partitions)
        for now, member in enumerate(order):
            join(state, now, member)
        states.append(state)
    first, second = (owners(state) for state in states)
    assert first == second
    assert group(states[0]).generation == group(states[1]).generation == len(members)
    assigned = sorted(p for parts in first.values() for p in parts)
    assert assigned == list(range(partitions))  # every partition exactly once
    sizes = [len(parts) for parts in first.values()]
    assert max(sizes) - min(sizes) <= 1
    for member, parts in first.items():  # each member's own view agrees with the group's
        assert heartbeat(states[0], len(members), member).partitions == parts


def test_the_generation_moves_on_membership_changes_only() -> None:
    state = with_stream(4, messages_per_partition=3)
    assert join(state, 0, "a").generation == 1
    assert join(state, 0, "b").generation == 2
    assert join(state, 10, "a").generation == 2  # a rejoin changes nobody's partitions
    assert heartbeat(state, 20, "b").generation == 2
    assert commit(state, 30, "a", 2, (0, 1)) == OkResult()
    assert group(state).generation == 2
    assert state.apply_command(LeaveGroup(40, "s", "g", "b")) == OkResult()
    assert group(state).generation == 3
    assert code_of(state.apply_command(LeaveGroup(40, "s", "g", "b"))) == UNKNOWN_MEMBER
    assert group(state).generation == 3
    join(state, 50, "c", 100)
    join(state, 50, "d", 100)
    assert group(state).generation == 5
    heartbeat(state, 149, "a")
    state.apply_command(Tick(150))  # c and d expire together: one change, one generation
    assert group(state).generation == 6
    assert owners(state) == {"a": (0, 1, 2, 3)}


# ---------------------------------------------------------------- sessions


def test_a_member_is_removed_when_its_session_ends_in_command_time() -> None:
    state = with_stream(2)
    join(state, 0, "early", 1000)
    join(state, 0, "late", 5000)
    assert owners(state) == {"early": (0,), "late": (1,)}
    state.apply_command(Tick(999))
    assert set(owners(state)) == {"early", "late"}
    state.apply_command(Tick(1000))  # 1000 ms after its last sign of life: gone
    assert owners(state) == {"late": (0, 1)}
    assert heartbeat(state, 1000, "late") == GroupAssignment(3, "late", (0, 1), ("late",), (), 6000)
    assert code_of(state.apply_command(GroupHeartbeat(1001, "s", "g", "early"))) == UNKNOWN_MEMBER


def test_heartbeats_and_commits_keep_a_session_alive() -> None:
    state = with_stream(1, messages_per_partition=2)
    join(state, 0, "m", 100)
    heartbeat(state, 90, "m")
    assert commit(state, 180, "m", 1, (0, 1)) == OkResult()
    state.apply_command(Tick(279))
    assert set(owners(state)) == {"m"}
    state.apply_command(Tick(280))
    assert owners(state) == {}


def test_a_heartbeat_arriving_after_the_session_ended_is_refused() -> None:
    state = with_stream(1)
    join(state, 0, "m", 100)
    assert code_of(state.apply_command(GroupHeartbeat(100, "s", "g", "m"))) == UNKNOWN_MEMBER
    assert join(state, 100, "m", 100).generation == 3  # expired (2), joined again (3)


def test_the_new_owner_gets_the_committed_offset_of_a_dead_members_partition() -> None:
    state = with_stream(2, messages_per_partition=5)
    join(state, 0, "a", 100)
    b = join(state, 0, "b", 10_000)
    assert (b.generation, b.partitions) == (2, (1,))
    assert commit(state, 50, "a", 2, (0, 4)) == OkResult()
    assert commit(state, 50, "b", 2, (1, 2)) == OkResult()
    state.apply_command(Tick(150))
    taken_over = heartbeat(state, 150, "b")
    assert (taken_over.generation, taken_over.partitions) == (3, (0, 1))
    assert taken_over.committed == ((0, 4), (1, 2))
    assert group(state).committed == ((0, 4), (1, 2))


# ---------------------------------------------------------------- commits


def test_commits_are_checked_against_generation_assignment_and_log_end() -> None:
    state = with_stream(2, messages_per_partition=3)
    join(state, 0, "a")
    join(state, 0, "b")  # generation 2: a has 0, b has 1
    assert code_of(commit(state, 1, "a", 1, (0, 1))) == STALE_GENERATION
    assert code_of(commit(state, 1, "a", 2, (1, 1))) == PARTITION_NOT_ASSIGNED
    assert code_of(commit(state, 1, "a", 2, (0, 4))) == INVALID_ARGUMENT  # past next_offset 3
    assert code_of(commit(state, 1, "a", 2, (2, 0))) == INVALID_ARGUMENT  # no partition 2
    assert code_of(commit(state, 1, "zed", 2, (0, 1))) == UNKNOWN_MEMBER
    assert code_of(commit(state, 1, None, 0, (0, 1))) == STALE_GENERATION  # it has members
    assert group(state).committed == ()
    assert commit(state, 1, "a", 2, (0, 3)) == OkResult()  # up to next_offset is fine
    assert group(state).committed == ((0, 3),)


def test_standalone_commits_only_while_the_group_has_no_members() -> None:
    state = with_stream(2, messages_per_partition=3)
    nobody = state.apply_command(CommitOffsets(1, "s", "solo", None, 0, ((0, 9),)))
    assert code_of(nobody) == INVALID_ARGUMENT
    assert state.streams().groups("s") == []  # a rejected commit creates no group
    ok = state.apply_command(CommitOffsets(1, "s", "solo", None, 0, ((0, 2), (1, 3))))
    assert ok == OkResult()
    solo = state.streams().group("s", "solo")
    assert solo is not None and (solo.generation, solo.committed) == (0, ((0, 2), (1, 3)))
    assert code_of(state.apply_command(CommitOffsets(1, "s", "solo", None, 1, ()))) == (
        INVALID_ARGUMENT)  # a standalone commit names generation 0
    joined = state.apply_command(JoinGroup(2, "s", "solo", "m", 1000))
    assert isinstance(joined, GroupAssignment) and joined.committed == ((0, 2), (1, 3))
    late = state.apply_command(CommitOffsets(3, "s", "solo", None, 0, ((0, 3),)))
    assert code_of(late) == STALE_GENERATION


def test_group_commands_on_missing_streams_and_groups() -> None:
    state = with_stream(1)
    assert code_of(state.apply_command(JoinGroup(0, "t", "g", "m", 1000))) == STREAM_NOT_FOUND
    assert code_of(state.apply_command(GroupHeartbeat(0, "s", "g", "m"))) == UNKNOWN_MEMBER
    assert code_of(commit(state, 0, "m", 1, (0, 0))) == UNKNOWN_MEMBER
    assert state.streams().group("s", "g") is None
    assert code_of(state.apply_command(JoinGroup(0, "s", "g", "m", 1))) == INVALID_ARGUMENT
