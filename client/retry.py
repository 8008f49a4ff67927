"""The retry policy: capped exponential backoff with full jitter inside one overall deadline.

Pure: no I/O, no clock and no randomness of its own (elapsed time and the random fraction are
arguments), so every rule is testable as a plain function.

The rules keep outcomes honest. A definite error (nothing happened) of a transient kind is
retried. An indefinite one (the operation may have happened) is retried only when the
operation is idempotent, i.e. a repeat cannot apply it twice; otherwise the caller must raise it
as is: the outcome is unknown, neither a success nor a failure that is safe to retry blindly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from raftmq.client import errors
from raftmq.client.errors import RaftMQError

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "RETRYABLE_DEFINITE_CODES",
    "RETRYABLE_INDEFINITE_CODES",
    "SWITCH_NODE_CODES",
    "GiveUp",
    "Retry",
    "RetryPolicy",
    "backoff_s",
    "next_step",
]

# Definite errors that a later attempt (maybe on another node) can get past.
RETRYABLE_DEFINITE_CODES = frozenset({
    errors.NO_LEADER,
    errors.CONNECTION_ERROR,
    errors.NOT_READY,
    errors.DRAINING,
    errors.OVERLOADED,
    errors.TOO_MANY_WAITERS,
    errors.NOT_CAUGHT_UP,
    errors.PROPOSAL_REJECTED,
    errors.NODE_STOPPED,
    errors.TIMEOUT,
    errors.LEADERSHIP_LOST,
})
# Indefinite errors caused by a failover or a lost connection, not by the request itself.
# internal_error (a server bug) is not among them: repeating the request would hit it again.
RETRYABLE_INDEFINITE_CODES = frozenset({
    errors.TIMEOUT,
    errors.LEADERSHIP_LOST,
    errors.NODE_STOPPED,
    errors.CONNECTION_ERROR,
})
# The node looked unreachable, unready, behind, or no longer the leader: try another one.
SWITCH_NODE_CODES = frozenset({
    errors.CONNECTION_ERROR,
    errors.TIMEOUT,
    errors.NODE_STOPPED,
    errors.NOT_READY,
    errors.DRAINING,
    errors.NOT_CAUGHT_UP,
    errors.NO_LEADER,
    errors.LEADERSHIP_LOST,
    errors.PROPOSAL_REJECTED,
    errors.TOO_MANY_WAITERS,  # a per-node bound on waiting requests
})
# What a proxy in front of a node answers when the node is down or slow (no raftmq body).
_GATEWAY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    deadline_s: float = 30.0  # overall, per operation, across all attempts

    def __post_init__(self) -> None:
        if not (math.isfinite(self.initial_backoff_s) and self.initial_backoff_s >= 0):
            raise ValueError("initial_backoff_s must be a finite number >= 0")
        if not (math.isfinite(self.max_backoff_s) and self.max_backoff_s >= self.initial_backoff_s):
            raise ValueError("max_backoff_s must be finite and >= initial_backoff_s")
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1.0):
            raise ValueError("multiplier must be a finite number >= 1")
        if not (math.isfinite(self.deadline_s) and self.deadline_s > 0):
            raise ValueError("deadline_s must be a finite number > 0")


DEFAULT_RETRY_POLICY = RetryPolicy()


@dataclass(frozen=True)
class Retry:
    delay_s: float
    switch_node: bool


@dataclass(frozen=True)
class GiveUp:
    reason: str


def backoff_s(policy: RetryPolicy, attempt: int, random_fraction: float) -> float:
    """Full jitter: a uniform share of the capped exponential step for this attempt (0-based)."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    if not 0.0 <= random_fraction <= 1.0:
        raise ValueError("random_fraction must be within [0, 1]")
    try:
        step_s = policy.initial_backoff_s * policy.multiplier**attempt
    except OverflowError:  # a huge attempt number: the cap applies anyway
        step_s = policy.max_backoff_s
    return random_fraction * min(policy.max_backoff_s, step_s)


def _is_transient(error: RaftMQError) -> bool:
    if error.definite:
        if error.code in RETRYABLE_DEFINITE_CODES:
            return True
        # Any other definite 503 means "not now" (nothing happened); 429 likewise.
        return error.status in (429, 503) or (
            error.code == errors.UNEXPECTED_RESPONSE and error.status in _GATEWAY_STATUSES
        )
    if error.code in RETRYABLE_INDEFINITE_CODES:
        return True
    return error.code == errors.UNEXPECTED_RESPONSE and error.status in _GATEWAY_STATUSES


def next_step(
    policy: RetryPolicy,
    error: RaftMQError,
    *,
    attempt: int,
    elapsed_s: float,
    idempotent: bool,
    random_fraction: float,
) -> Retry | GiveUp:
    """What to do after attempt number `attempt` (0-based) failed with `error`."""
    if not error.definite and not idempotent:
        return GiveUp(f"outcome unknown ({error.code}) and the operation is not idempotent")
    if not _is_transient(error):
        return GiveUp(f"{error.code} is not a transient error")
    remaining_s = policy.deadline_s - elapsed_s
    if remaining_s <= 0:
        return GiveUp(f"deadline of {policy.deadline_s:g} s reached")
    delay_s = min(backoff_s(policy, attempt, random_fraction), remaining_s)
    unreachable = error.code in SWITCH_NODE_CODES or error.code == errors.UNEXPECTED_RESPONSE
    return Retry(delay_s=delay_s, switch_node=unreachable)
