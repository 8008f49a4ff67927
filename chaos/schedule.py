"""Fault schedules: which fault when, for how long, drawn from a seed so a run can be replayed.

A schedule is a list of `FaultStep`s. Targets ("the leader", "a random half") are chosen when
the step runs, because who leads depends on the run; the step carries the seeded random
number that makes that choice, so the same seed against the same cluster history picks the
same nodes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

__all__ = [
    "FAULTS",
    "NETWORK_FAULTS",
    "SCENARIOS",
    "FaultStep",
    "ScheduleError",
    "plan",
    "scenario_faults",
]

# name -> (shortest hold, longest hold) in seconds. Pauses straddle the Raft timings the
# broker uses by default: elections after 1-2 s of silence, connections dropped after 3.5 s.
FAULTS: dict[str, tuple[float, float]] = {
    "kill-leader": (1.0, 4.0),
    "kill-follower": (1.0, 4.0),
    "kill-random": (1.0, 4.0),
    "pause-leader": (2.5, 3.2),        # past the election timeout, within the connection timeout
    "pause-leader-long": (5.0, 8.0),   # past the connection timeout: a stale leader wakes up
    "pause-follower": (2.5, 8.0),
    "partition-leader": (3.0, 8.0),
    "partition-halves": (3.0, 8.0),
    "partition-ring": (3.0, 8.0),
    "partition-one-way": (3.0, 8.0),
    "crash-all": (0.5, 2.0),
    "wipe-restart": (1.0, 3.0),
    "membership": (1.0, 3.0),
    "lose-unsynced": (0.5, 1.0),
}
NETWORK_FAULTS = frozenset(name for name in FAULTS if name.startswith("partition-"))
SCENARIOS: dict[str, tuple[str, ...]] = {
    **{name: (name,) for name in FAULTS},
    "kills": ("kill-leader", "kill-follower", "kill-random"),
    "pauses": ("pause-leader", "pause-leader-long", "pause-follower"),
    "partitions": tuple(sorted(NETWORK_FAULTS)),
    "smoke": ("kill-leader", "partition-leader", "pause-leader"),
    "all": tuple(FAULTS),
}
# Quiet time after a fault heals, before the next one: the cluster gets to recover, so each
# fault's effect can be told apart in the timeline.
QUIET_S = (3.0, 6.0)
FIRST_FAULT_AFTER_S = 3.0


class ScheduleError(ValueError):
    """An unknown scenario, or one this cluster cannot run (a partition without namespaces)."""


@dataclass(frozen=True)
class FaultStep:
    at_s: float
    fault: str
    hold_s: float
    pick: float  # the seeded choice of targets, in [0, 1)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def scenario_faults(scenario: str, *, network: bool) -> tuple[list[str], list[str]]:
    """(faults to run, faults skipped because they need network namespaces). A scenario made
    only of network faults without namespaces is an error, not an empty run."""
    faults: list[str] = []
    for part in scenario.split(","):
        name = part.strip()
        if name not in SCENARIOS:
            raise ScheduleError(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
        faults += [fault for fault in SCENARIOS[name] if fault not in faults]
    skipped = [] if network else [fault for fault in faults if fault in NETWORK_FAULTS]
    runnable = [fault for fault in faults if fault not in skipped]
    if not runnable:
        raise ScheduleError(f"scenario {scenario!r} needs network namespaces (--network netns)")
    return runnable, skipped


def plan(faults: Sequence[str], duration_s: float, seed: int) -> list[FaultStep]:
    """Faults in turn (cycling through `faults`) until `duration_s`, each held for a seeded time
    within its range and followed by a seeded quiet time. Every fault gets at least one turn,
    even when that runs past `duration_s`."""
    if not faults:
        raise ScheduleError("no faults to schedule")
    rng = random.Random(seed)
    steps: list[FaultStep] = []
    at_s = FIRST_FAULT_AFTER_S
    turn = 0
    while turn < len(faults) or at_s < duration_s:
        fault = faults[turn % len(faults)]
        shortest, longest = FAULTS[fault]
        hold_s = round(rng.uniform(shortest, longest), 2)
        steps.append(FaultStep(round(at_s, 2), fault, hold_s, rng.random()))
        at_s += hold_s + rng.uniform(*QUIET_S)
        turn += 1
    return steps
