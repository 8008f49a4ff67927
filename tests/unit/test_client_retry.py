"""The pure retry policy: full-jitter backoff, caps, the deadline, and which errors are retried
(and on which node) for idempotent and non-idempotent operations."""

from __future__ import annotations

import pytest

from raftmq.client import errors
from raftmq.client.errors import RaftMQError, error_for
from raftmq.client.retry import GiveUp, Retry, RetryPolicy, backoff_s, next_step

POLICY = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=1.0, multiplier=2.0, deadline_s=10.0)


def _error(code: str, *, definite: bool, status: int | None = None) -> RaftMQError:
    return error_for(code, "test", definite=definite, status=status)


def _step(error: RaftMQError, *, idempotent: bool = False, attempt: int = 0,
          elapsed_s: float = 0.0, fraction: float = 0.5) -> Retry | GiveUp:
    return next_step(POLICY, error, attempt=attempt, elapsed_s=elapsed_s, idempotent=idempotent,
                     random_fraction=fraction)


# -- backoff ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("attempt", "ceiling_s"), [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8),
                                                     (4, 1.0), (10, 1.0)])
def test_full_jitter_spans_zero_to_the_capped_step(attempt: int, ceiling_s: float) -> None:
    assert backoff_s(POLICY, attempt, 0.0) == 0.0
    assert backoff_s(POLICY, attempt, 1.0) == pytest.approx(ceiling_s)
    assert backoff_s(POLICY, attempt, 0.25) == pytest.approx(ceiling_s / 4)


def test_backoff_never_exceeds_the_cap_even_for_huge_attempt_numbers() -> None:
    assert backoff_s(POLICY, 10_000, 1.0) == POLICY.max_backoff_s
    fractions = [i / 100 for i in range(101)]
    assert all(0.0 <= backoff_s(POLICY, attempt, f) <= POLICY.max_backoff_s
               for attempt in range(64) for f in fractions)


def test_backoff_rejects_out_of_range_arguments() -> None:
    with pytest.raises(ValueError, match="random_fraction"):
        backoff_s(POLICY, 0, 1.5)
    with pytest.raises(ValueError, match="random_fraction"):
        backoff_s(POLICY, 0, -0.1)
    with pytest.raises(ValueError, match="attempt"):
        backoff_s(POLICY, -1, 0.5)


@pytest.mark.parametrize("kwargs", [
    {"initial_backoff_s": -1.0},
    {"initial_backoff_s": 3.0, "max_backoff_s": 2.0},
    {"multiplier": 0.5},
    {"deadline_s": 0.0},
    {"deadline_s": float("inf")},
    {"max_backoff_s": float("nan")},
])
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


# -- which errors are retried --------------------------------------------------------------------


@pytest.mark.parametrize("code", [
    errors.NO_LEADER, errors.CONNECTION_ERROR, errors.NOT_READY, errors.DRAINING, errors.OVERLOADED,
    errors.TOO_MANY_WAITERS, errors.NOT_CAUGHT_UP, errors.PROPOSAL_REJECTED, errors.NODE_STOPPED,
])
@pytest.mark.parametrize("idempotent", [True, False])
def test_transient_definite_errors_are_retried_either_way(code: str, idempotent: bool) -> None:
    step = _step(_error(code, definite=True), idempotent=idempotent, attempt=1, fraction=1.0)
    assert isinstance(step, Retry) and step.delay_s == pytest.approx(0.2)


def test_any_definite_503_or_429_is_retried() -> None:
    assert isinstance(_step(_error("some_future_code", definite=True, status=503)), Retry)
    assert isinstance(_step(_error("some_future_code", definite=True, status=429)), Retry)
    # A proxy's 502 page for a read (our decoder made it definite) is a node being down.
    assert isinstance(_step(_error(errors.UNEXPECTED_RESPONSE, definite=True, status=502)), Retry)


@pytest.mark.parametrize("code", [
    errors.TIMEOUT, errors.LEADERSHIP_LOST, errors.NODE_STOPPED, errors.CONNECTION_ERROR,
])
def test_indefinite_errors_are_retried_only_when_idempotent(code: str) -> None:
    error = _error(code, definite=False)
    assert isinstance(_step(error, idempotent=True), Retry)
    gave_up = _step(error, idempotent=False)
    assert isinstance(gave_up, GiveUp) and "unknown" in gave_up.reason


def test_indefinite_server_bug_is_not_retried_even_if_idempotent() -> None:
    assert isinstance(_step(_error(errors.INTERNAL_ERROR, definite=False), idempotent=True), GiveUp)


@pytest.mark.parametrize(("code", "status"), [
    (errors.INVALID_ARGUMENT, 400), (errors.MALFORMED_REQUEST, 400), (errors.QUEUE_NOT_FOUND, 404),
    (errors.PRECONDITION_FAILED, 409), (errors.SEQUENCE_TOO_OLD, 409),
    (errors.MESSAGE_TOO_LARGE, 413), (errors.OFFSET_OUT_OF_RANGE, 416),
    (errors.RESOURCE_EXHAUSTED, 507), (errors.UNEXPECTED_RESPONSE, 200),
])
def test_answers_about_the_request_itself_are_not_retried(code: str, status: int) -> None:
    step = _step(_error(code, definite=True, status=status), idempotent=True)
    assert isinstance(step, GiveUp) and code in step.reason


# -- deadline -----------------------------------------------------------------------------------


def test_past_the_deadline_gives_up() -> None:
    error = _error(errors.NO_LEADER, definite=True)
    assert isinstance(_step(error, elapsed_s=POLICY.deadline_s), GiveUp)
    assert isinstance(_step(error, elapsed_s=POLICY.deadline_s + 5), GiveUp)
    gave_up = _step(_error(errors.TIMEOUT, definite=False), idempotent=True, elapsed_s=11.0)
    assert isinstance(gave_up, GiveUp) and "deadline" in gave_up.reason


def test_the_last_delay_never_sleeps_past_the_deadline() -> None:
    step = _step(_error(errors.NO_LEADER, definite=True), attempt=8, elapsed_s=9.95, fraction=1.0)
    assert isinstance(step, Retry) and step.delay_s == pytest.approx(0.05)


def test_an_indefinite_non_idempotent_outcome_is_never_retried_whatever_the_time() -> None:
    for elapsed_s in (0.0, 5.0, 50.0):
        step = _step(_error(errors.TIMEOUT, definite=False), elapsed_s=elapsed_s)
        assert isinstance(step, GiveUp)


# -- switch_node --------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [
    errors.CONNECTION_ERROR, errors.TIMEOUT, errors.NODE_STOPPED, errors.NOT_READY, errors.DRAINING,
    errors.NOT_CAUGHT_UP, errors.NO_LEADER, errors.LEADERSHIP_LOST, errors.PROPOSAL_REJECTED,
])
def test_unreachable_or_not_leading_nodes_are_switched(code: str) -> None:
    step = _step(_error(code, definite=True))
    assert isinstance(step, Retry) and step.switch_node


def test_cluster_wide_overload_stays_on_the_node() -> None:
    step = _step(_error(errors.OVERLOADED, definite=True))
    assert isinstance(step, Retry) and not step.switch_node


def test_an_idempotent_retry_after_a_timeout_moves_to_another_node() -> None:
    step = _step(_error(errors.TIMEOUT, definite=False), idempotent=True)
    assert isinstance(step, Retry) and step.switch_node
