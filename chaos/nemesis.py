"""The nemesis: runs a fault schedule against a `ChaosCluster`, recording each fault window.

Every fault is recorded as a `nemesis` start event (with the nodes it hit) and a stop event
once healed, so the checker and the report can line anomalies and stalls up with faults.
Process and network control block briefly, so they run in a worker thread.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from raftmq.chaos.history import HistoryWriter
from raftmq.chaos.launcher import ChaosCluster, LauncherError
from raftmq.chaos.schedule import FaultStep
from raftmq.client import RaftMQError, errors

__all__ = ["Nemesis"]

NEMESIS = "nemesis"
_LEADER_WAIT_S = 30.0
_AFTERMATH_S = 3.0
_REMOVE_ATTEMPTS = 5  # how long the leader is watched after a paused node wakes up


class Nemesis:
    def __init__(self, cluster: ChaosCluster, writer: HistoryWriter,
                 member_changes: MemberChanges | None = None) -> None:
        self._cluster = cluster
        self._writer = writer
        self._member_changes = member_changes
        self.applied: list[dict[str, Any]] = []  # the schedule as it ran, targets resolved

    async def run(self, steps: Sequence[FaultStep], stop: asyncio.Event, started_s: float) -> None:
        """Each step at its time (seconds after `started_s`, a loop time) until `stop` is set."""
        loop = asyncio.get_running_loop()
        for step in steps:
            delay_s = started_s + step.at_s - loop.time()
            if delay_s > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay_s)
                    return
                except TimeoutError:
                    pass
            if stop.is_set():
                return
            await self.apply(step)

    async def apply(self, step: FaultStep) -> None:
        rng = random.Random(step.pick)
        fault = _FAULTS.get(step.fault)
        if fault is None:
            raise ValueError(f"no such fault: {step.fault}")
        started = time.monotonic()
        nodes, detail = await fault(self, rng, step.hold_s)
        self.applied.append({**step.to_dict(), "nodes": nodes, "detail": detail,
                             "took_s": round(time.monotonic() - started, 2)})

    # -- bookkeeping -------------------------------------------------------------------------

    def _event(self, action: str, fault: str, nodes: Sequence[str],
               detail: dict[str, Any] | None = None) -> None:
        self._writer.event(NEMESIS, "nemesis", {"action": action, "fault": fault,
                                                "nodes": list(nodes), "detail": detail or {}})

    async def _leader(self) -> str:
        return await asyncio.to_thread(self._cluster.wait_for_leader, _LEADER_WAIT_S)

    def _followers(self, leader: str) -> list[str]:
        return [name for name, node in self._cluster.nodes.items()
                if name != leader and node.running]

    async def _window(self, fault: str, nodes: Sequence[str], hold_s: float,
                      begin: Callable[[], None], end: Callable[[], None],
                      detail: dict[str, Any] | None = None) -> None:
        """begin, record the start, hold, end, record the stop."""
        await asyncio.to_thread(begin)
        self._event("start", fault, nodes, detail)
        await asyncio.sleep(hold_s)
        await asyncio.to_thread(end)
        self._event("stop", fault, nodes)

    # -- faults ------------------------------------------------------------------------------

    async def _kill(self, rng: random.Random, hold_s: float, fault: str) -> Outcome:
        leader = await self._leader()
        if fault == "kill-leader":
            target = leader
        elif fault == "kill-follower":
            target = rng.choice(self._followers(leader))
        else:
            target = rng.choice(sorted(self._cluster.nodes))
        await self._window(fault, [target], hold_s,
                           lambda: self._cluster.kill(target),
                           lambda: self._cluster.start_node(target),
                           {"was_leader": target == leader})
        return [target], {"was_leader": target == leader}

    async def _pause(self, rng: random.Random, hold_s: float, fault: str) -> Outcome:
        leader = await self._leader()
        target = leader if fault.startswith("pause-leader") else rng.choice(
            self._followers(leader))
        await self._window(fault, [target], hold_s, lambda: self._cluster.pause(target),
                           lambda: self._cluster.resume(target))
        # pysyncobj has no PreVote: a woken node may stand and win. Watch what happens.
        await asyncio.sleep(_AFTERMATH_S)
        after = await asyncio.to_thread(self._cluster.leader)
        detail = {"leader_before": leader, "leader_after": after,
                  "woken_node_leads": after == target}
        self._event("observe", fault, [target], detail)
        return [target], detail

    async def _partition(self, rng: random.Random, hold_s: float, fault: str) -> Outcome:
        network = self._cluster.network
        if network is None:
            raise LauncherError(f"{fault} needs network namespaces")
        leader = await self._leader()
        names = sorted(self._cluster.nodes)
        detail: dict[str, Any] = {"leader_before": leader}
        if fault == "partition-leader":
            groups = [[leader], [n for n in names if n != leader]]
            begin: Callable[[], None] = lambda: network.partition(groups)  # noqa: E731
            detail["groups"] = groups
        elif fault == "partition-halves":
            shuffled = names[:]
            rng.shuffle(shuffled)
            half = len(shuffled) // 2
            groups = [sorted(shuffled[:half]), sorted(shuffled[half:])]
            begin = lambda: network.partition(groups)  # noqa: E731
            detail["groups"] = groups
        elif fault == "partition-ring":
            pairs = _ring_cuts(names, rng)

            def begin() -> None:
                for first, second in pairs:
                    network.partition([[first], [second]])

            detail["cut_pairs"] = pairs
        else:
            follower = rng.choice(self._followers(leader))
            begin = lambda: network.one_way(leader, follower)  # noqa: E731
            detail["dropped"] = [leader, follower]
        await self._window(fault, names, hold_s, begin, network.heal, detail)
        return names, detail

    async def _crash_all(self, _rng: random.Random, hold_s: float, fault: str) -> Outcome:
        names = sorted(self._cluster.nodes)

        def crash() -> None:
            for name in names:
                self._cluster.kill(name)

        def restart() -> None:
            for name in names:
                self._cluster.start_node(name)

        await self._window(fault, names, hold_s, crash, restart)
        return names, {}

    async def _lose_unsynced(self, _rng: random.Random, hold_s: float, fault: str) -> Outcome:
        """Every node crashes and loses what its journal had not made durable: a power loss."""
        names = sorted(self._cluster.nodes)
        cuts: dict[str, str] = {}

        def crash() -> None:
            for name in names:
                self._cluster.kill(name)
            for name in names:
                cuts[name] = _lose_unsynced_tail(self._cluster, name)

        def restart() -> None:
            for name in names:
                self._cluster.start_node(name)

        await self._window(fault, names, hold_s, crash, restart)
        self._event("observe", fault, names, {"cut": cuts})
        return names, {"cut": cuts}

    async def _wipe_restart(self, rng: random.Random, hold_s: float, fault: str) -> Outcome:
        leader = await self._leader()
        target = rng.choice(self._followers(leader))

        def wipe() -> None:
            self._cluster.kill(target)
            self._cluster.wipe(target)

        await self._window(fault, [target], hold_s, wipe,
                           lambda: self._cluster.start_node(target))
        return [target], {}

    async def _membership(self, rng: random.Random, hold_s: float, fault: str) -> Outcome:
        if self._member_changes is None:
            raise LauncherError("membership changes need a client (MemberChanges)")
        target = await self._remove_a_follower(rng, self._member_changes)
        node = self._cluster.nodes[target]
        members = sorted(self._cluster.nodes)
        await asyncio.to_thread(self._cluster.kill, target)
        await asyncio.to_thread(self._cluster.wipe, target)
        self._event("start", fault, [target], {"removed": target})
        await asyncio.sleep(hold_s)
        await self._member_changes.add(target, node.raft_address)
        await asyncio.to_thread(self._cluster.start_node, target, members)
        self._event("stop", fault, [target], {"added": target})
        return [target], {"removed_and_added": target}

    async def _remove_a_follower(self, rng: random.Random, changes: MemberChanges) -> str:
        """Remove a follower. Leadership can move between choosing it and removing it, and
        the broker refuses to remove its leader: then choose again."""
        for _ in range(_REMOVE_ATTEMPTS):
            leader = await self._leader()
            target = rng.choice(self._followers(leader))
            try:
                await changes.remove(target)
            except RaftMQError as error:
                if error.code != errors.CANNOT_REMOVE_LEADER:
                    raise
                continue
            return target
        raise LauncherError(f"no follower could be removed in {_REMOVE_ATTEMPTS} attempts")


Outcome = tuple[list[str], dict[str, Any]]


class MemberChanges:
    """Membership calls made through the client (the broker's admin API)."""

    def __init__(self, remove: Callable[[str], Awaitable[Any]],
                 add: Callable[[str, str], Awaitable[Any]]) -> None:
        self.remove = remove
        self.add = add


def _ring_cuts(names: Sequence[str], rng: random.Random) -> list[list[str]]:
    """Pairs to cut so each node still sees its ring neighbours: with 5 nodes every node keeps
    a majority of its own, each a different one. Three nodes have no non-neighbours, so there
    one pair is cut instead (a bridge: the node in the middle sees both sides)."""
    order = list(names)
    rng.shuffle(order)
    count = len(order)
    pairs = [sorted([order[i], order[j]]) for i in range(count) for j in range(i + 1, count)
             if min(j - i, count - (j - i)) > 1]
    return pairs or [sorted(order[:2])]


def _lose_unsynced_tail(cluster: ChaosCluster, name: str) -> str:
    node = cluster.nodes[name]
    command = [sys.executable, "-m", "raftmq.broker.cli", "debug", "lose-unsynced",
               "--data-dir", str(node.data_dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise LauncherError(f"lose-unsynced on {name} failed: {done.stderr.strip()}")
    return done.stdout.strip()


_FaultFn = Callable[[Nemesis, random.Random, float], Awaitable[Outcome]]


def _named(method: Callable[[Nemesis, random.Random, float, str], Awaitable[Outcome]],
           name: str) -> _FaultFn:
    return lambda nemesis, rng, hold_s: method(nemesis, rng, hold_s, name)


_FAULTS: dict[str, _FaultFn] = {
    **{name: _named(Nemesis._kill, name) for name in ("kill-leader", "kill-follower", "kill-random")},
    **{name: _named(Nemesis._pause, name)
       for name in ("pause-leader", "pause-leader-long", "pause-follower")},
    **{name: _named(Nemesis._partition, name)
       for name in ("partition-leader", "partition-halves", "partition-ring", "partition-one-way")},
    "crash-all": _named(Nemesis._crash_all, "crash-all"),
    "lose-unsynced": _named(Nemesis._lose_unsynced, "lose-unsynced"),
    "wipe-restart": _named(Nemesis._wipe_restart, "wipe-restart"),
    "membership": _named(Nemesis._membership, "membership"),
}
