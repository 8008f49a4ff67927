"""Consumer groups: membership with sessions, deterministic assignment, committed offsets.

A group belongs to one stream. Members join and heartbeat with the command's time; a member
whose session runs out (judged against state time, so on every replica alike) is removed.
Every membership change starts a new generation and recomputes the assignment from the
sorted member names alone: partition p goes to member p mod n, which every replica computes
the same way and which leaves member loads at most one partition apart. Commits carry the
generation they were made in, so a member that was replaced cannot move offsets any more.
"""

from __future__ import annotations

from raftmq.broker.results import (
    INVALID_ARGUMENT,
    PARTITION_NOT_ASSIGNED,
    RESOURCE_EXHAUSTED,
    STALE_GENERATION,
    UNKNOWN_MEMBER,
    ErrorResult,
    OkResult,
)
from raftmq.broker.stream_results import GroupAssignment, GroupInfo, MemberInfo

__all__ = ["MAX_GROUP_MEMBERS", "ConsumerGroup", "Member"]

MAX_GROUP_MEMBERS = 1000


class Member:
    __slots__ = ("expires_ms", "session_timeout_ms")

    def __init__(self, session_timeout_ms: int, expires_ms: int) -> None:
        self.session_timeout_ms = session_timeout_ms
        self.expires_ms = expires_ms


class ConsumerGroup:
    __slots__ = ("_assignment", "committed", "generation", "members", "name", "partition_count")

    def __init__(self, name: str, partition_count: int) -> None:
        self.name = name
        self.partition_count = partition_count
        self.generation = 0
        self.members: dict[str, Member] = {}
        self.committed: dict[int, int] = {}  # partition -> next offset to read
        self._assignment: dict[str, tuple[int, ...]] = {}  # derived from members

    # ------------------------------------------------------------ membership

    def join(self, member: str, session_timeout_ms: int, now_ms: int) -> GroupAssignment | ErrorResult:
        found = self.members.get(member)
        if found is not None:
            # A rejoin (e.g. after a client reconnect) keeps the generation: nothing moved.
            found.session_timeout_ms = session_timeout_ms
            found.expires_ms = now_ms + session_timeout_ms
            return self.assignment_of(member)
        if len(self.members) >= MAX_GROUP_MEMBERS:
            return ErrorResult(
                RESOURCE_EXHAUSTED, f"group {self.name!r} already has {MAX_GROUP_MEMBERS} members"
            )
        self.members[member] = Member(session_timeout_ms, now_ms + session_timeout_ms)
        self.rebalance()
        return self.assignment_of(member)

    def heartbeat(self, member: str, now_ms: int) -> GroupAssignment | ErrorResult:
        found = self.members.get(member)
        if found is None:
            return self._unknown(member)
        found.expires_ms = now_ms + found.session_timeout_ms
        return self.assignment_of(member)

    def leave(self, member: str) -> OkResult | ErrorResult:
        if self.members.pop(member, None) is None:
            return self._unknown(member)
        self.rebalance()
        return OkResult()

    def expire(self, now_ms: int) -> bool:
        """Remove members whose session ran out; True if any was removed."""
        dead = [name for name, m in self.members.items() if m.expires_ms <= now_ms]
        for name in dead:
            del self.members[name]
        if dead:
            self.rebalance()
        return bool(dead)

    def next_expiry_ms(self) -> int | None:
        return min((m.expires_ms for m in self.members.values()), default=None)

    def rebalance(self) -> None:
        self.generation += 1
        self.rebuild_assignment()

    def rebuild_assignment(self) -> None:
        ordered = sorted(self.members)
        assigned: dict[str, list[int]] = {name: [] for name in ordered}
        for partition in range(self.partition_count if ordered else 0):
            assigned[ordered[partition % len(ordered)]].append(partition)
        self._assignment = {name: tuple(parts) for name, parts in assigned.items()}

    # ------------------------------------------------------------ offsets

    def commit(
        self,
        member: str | None,
        generation: int,
        offsets: tuple[tuple[int, int], ...],
        next_offsets: list[int],
        now_ms: int,
    ) -> OkResult | ErrorResult:
        """`next_offsets[p]` is partition p's next offset: nobody can have read past it."""
        problem = self._commit_problem(member, generation, offsets, next_offsets)
        if problem is not None:
            return problem
        for partition, offset in offsets:
            self.committed[partition] = offset
        if member is not None:
            found = self.members[member]
            found.expires_ms = now_ms + found.session_timeout_ms  # a commit shows it is alive
        return OkResult()

    def _commit_problem(
        self,
        member: str | None,
        generation: int,
        offsets: tuple[tuple[int, int], ...],
        next_offsets: list[int],
    ) -> ErrorResult | None:
        for partition, offset in offsets:
            if partition >= self.partition_count:
                return ErrorResult(INVALID_ARGUMENT, f"partition {partition} does not exist")
            if offset > next_offsets[partition]:
                return ErrorResult(
                    INVALID_ARGUMENT,
                    f"offset {offset} is past the end of partition {partition} "
                    f"({next_offsets[partition]})",
                )
        if member is None:
            if self.members:
                return ErrorResult(
                    STALE_GENERATION,
                    f"group {self.name!r} has members; only they can commit, with its generation",
                )
            return None
        if member not in self.members:
            return self._unknown(member)
        if generation != self.generation:
            return ErrorResult(
                STALE_GENERATION,
                f"generation {generation} of group {self.name!r} is over; it is at "
                f"{self.generation}: rejoin or heartbeat for the current assignment",
            )
        owned = self._assignment[member]
        for partition, _ in offsets:
            if partition not in owned:
                return ErrorResult(
                    PARTITION_NOT_ASSIGNED,
                    f"partition {partition} is not assigned to {member!r} in generation "
                    f"{self.generation}",
                )
        return None

    # ------------------------------------------------------------ views

    def assignment_of(self, member: str) -> GroupAssignment:
        partitions = self._assignment[member]
        committed = self.committed
        return GroupAssignment(
            generation=self.generation,
            member=member,
            partitions=partitions,
            members=tuple(sorted(self.members)),
            committed=tuple((p, committed[p]) for p in partitions if p in committed),
            session_expires_ms=self.members[member].expires_ms,
        )

    def info(self, stream: str) -> GroupInfo:
        members = tuple(
            MemberInfo(name, self._assignment[name], m.session_timeout_ms, m.expires_ms)
            for name, m in sorted(self.members.items())
        )
        return GroupInfo(stream, self.name, self.generation, members,
                         tuple(sorted(self.committed.items())))

    def _unknown(self, member: str) -> ErrorResult:
        return ErrorResult(
            UNKNOWN_MEMBER,
            f"{member!r} is not a member of group {self.name!r} (its session may have ended): "
            "join again",
        )
