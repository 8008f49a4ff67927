"""Idempotent producers: the table itself and its use by BrokerState publishes."""

from __future__ import annotations

import pytest

from raftmq.broker import producers
from raftmq.broker.commands import DeclareQueue, OutMessage, Publish, QueueArgs, Tick
from raftmq.broker.producers import PRODUCER_IDLE_MS, PRODUCER_WINDOW, ProducerTable
from raftmq.broker.results import ErrorResult, PublishResult
from raftmq.broker.state import BrokerState


def result(n: int) -> PublishResult:
    return PublishResult(n, (), (), False, n)


def test_duplicate_returns_cached_result_marked_duplicate() -> None:
    table = ProducerTable()
    assert table.check("p", 1, 0, PublishResult) is None
    table.record("p", 1, result(1), 0)
    assert table.check("p", 1, 5, PublishResult) == PublishResult(1, (), (), True, 1)
    assert table.check("p", 2, 5, PublishResult) is None
    assert table.check("other", 1, 5, PublishResult) is None


def test_window_and_too_old() -> None:
    table = ProducerTable()
    for seq in range(1, 101):
        table.record("p", seq, result(seq), 0)
    newest_forgotten = 100 - PRODUCER_WINDOW
    assert table.check("p", 100, 0, PublishResult) == PublishResult(100, (), (), True, 100)
    assert table.check("p", newest_forgotten + 1, 0, PublishResult) == PublishResult(
        newest_forgotten + 1, (), (), True, newest_forgotten + 1
    )
    too_old = table.check("p", newest_forgotten, 0, PublishResult)
    assert isinstance(too_old, ErrorResult) and too_old.code == "sequence_too_old"
    assert len(table.records["p"].results) == PRODUCER_WINDOW
    assert table.check("p", 500, 0, PublishResult) is None  # gaps ahead are fine


def test_out_of_order_sequence_inside_window_is_applied_and_remembered() -> None:
    table = ProducerTable()
    table.record("p", 10, result(10), 0)
    assert table.check("p", 5, 0, PublishResult) is None  # not seen, not too old
    table.record("p", 5, result(5), 0)
    assert table.check("p", 5, 0, PublishResult) == PublishResult(5, (), (), True, 5)
    table.record("p", 10 + PRODUCER_WINDOW, result(1), 0)
    # Both 5 and 10 are now out of the window: forgotten, and too old.
    for seq in (5, 10):
        assert isinstance(table.check("p", seq, 0, PublishResult), ErrorResult)
    assert list(table.records["p"].results) == [10 + PRODUCER_WINDOW]


def test_least_recently_seen_producer_is_evicted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producers, "MAX_PRODUCERS", 3)
    table = ProducerTable()
    for i, name in enumerate(["a", "b", "c"]):
        table.record(name, 1, result(1), i)
    table.check("a", 1, 10, PublishResult)  # a duplicate counts as being seen: "b" is now the oldest
    table.record("d", 1, result(1), 11)
    assert list(table.records) == ["c", "a", "d"]


def test_idle_producers_expire() -> None:
    table = ProducerTable()
    table.record("old", 1, result(1), 0)
    table.record("new", 1, result(1), 1000)
    table.expire_idle(PRODUCER_IDLE_MS)
    assert list(table.records) == ["old", "new"]  # idle exactly 24 h: kept
    table.expire_idle(PRODUCER_IDLE_MS + 1)
    assert list(table.records) == ["new"]


def make_state() -> BrokerState:
    state = BrokerState()
    state.apply_command(DeclareQueue(0, "q", QueueArgs()))
    return state


def publish(state: BrokerState, seq: int, *bodies: bytes, exchange: str = "", now: int = 0) -> (
    PublishResult | ErrorResult
):
    messages = tuple(OutMessage("q", body) for body in bodies)
    result = state.apply_command(Publish(now, exchange, messages, "prod-1", seq))
    assert isinstance(result, PublishResult | ErrorResult)
    return result


def test_state_duplicate_publish_is_not_stored_twice() -> None:
    state = make_state()
    first = publish(state, 7, b"a", b"b")
    assert first == PublishResult(2, (), (), False, 1)
    again = publish(state, 7, b"a", b"b")
    assert again == PublishResult(2, (), (), True, 1)
    assert state.ready_count("q") == 2
    assert publish(state, 8, b"c") == PublishResult(1, (), (), False, 3)


def test_state_failed_batch_is_not_recorded() -> None:
    state = make_state()
    failed = publish(state, 1, b"a", exchange="missing")
    assert isinstance(failed, ErrorResult) and failed.code == "exchange_not_found"
    assert state.producer_count == 0
    retried = publish(state, 1, b"a")
    assert isinstance(retried, PublishResult) and not retried.duplicate


def test_state_too_old_sequence() -> None:
    state = make_state()
    publish(state, 1000, b"a")
    too_old = publish(state, 1000 - PRODUCER_WINDOW, b"a")
    assert isinstance(too_old, ErrorResult) and too_old.code == "sequence_too_old"
    assert state.ready_count("q") == 1


def test_state_idle_producer_forgotten_after_a_day() -> None:
    state = make_state()
    publish(state, 1, b"a", now=0)
    state.apply_command(Tick(PRODUCER_IDLE_MS + 1))
    assert state.producer_count == 0
    again = publish(state, 1, b"a")  # treated as new: stored again
    assert isinstance(again, PublishResult) and not again.duplicate
    assert state.ready_count("q") == 2
