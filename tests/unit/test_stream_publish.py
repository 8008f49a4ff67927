"""Publishing to streams: idempotent producers, exchanges routing to streams, the name space
shared with queues, the memory limit and the per-message size limit."""

from __future__ import annotations

from typing import Any

from raftmq.broker.commands import (
    Bind,
    DeclareExchange,
    DeclareQueue,
    DeleteQueue,
    OutMessage,
    Publish,
)
from raftmq.broker.results import (
    INVALID_ARGUMENT,
    MESSAGE_TOO_LARGE,
    PRECONDITION_FAILED,
    RESOURCE_EXHAUSTED,
    ErrorResult,
    OkResult,
    PublishResult,
)
from raftmq.broker.state import BrokerState
from raftmq.broker.stream_commands import (
    DeclareStream,
    DeleteStream,
    StreamArgs,
    StreamMessage,
    StreamPublish,
)
from raftmq.broker.stream_log import StreamRecord
from raftmq.broker.stream_results import FetchResult, StreamPublishResult


def declare(state: BrokerState, name: str, **args: Any) -> None:
    assert state.apply_command(DeclareStream(0, name, StreamArgs(**args))) == OkResult(True)


def code_of(result: object) -> str:
    assert isinstance(result, ErrorResult), result
    return result.code


def records(state: BrokerState, name: str, partition: int = 0) -> list[StreamRecord]:
    found = state.streams().fetch(name, partition, 0, 1000, 10**6)
    assert isinstance(found, FetchResult)
    return found.records


def next_offsets(state: BrokerState, name: str) -> list[int]:
    info = state.streams().info(name)
    assert info is not None
    return [p.next_offset for p in info.partitions]


# ---------------------------------------------------------------- idempotent producers


def test_a_retried_sequence_returns_the_same_offsets_and_stores_nothing() -> None:
    state = BrokerState()
    declare(state, "s", partitions=2)
    batch = (StreamMessage(b"a"), StreamMessage(b"b"), StreamMessage(b"c", partition=1))
    first = state.apply_command(StreamPublish(1, "s", batch, "p", 7))
    assert first == StreamPublishResult((0, 1, 1), (0, 0, 1))
    before = (next_offsets(state, "s"), state.snapshot())
    retry = state.apply_command(StreamPublish(1, "s", batch, "p", 7))
    assert retry == StreamPublishResult((0, 1, 1), (0, 0, 1), duplicate=True)
    assert (next_offsets(state, "s"), state.snapshot()) == before
    # A new sequence is stored; the old one still answers from the table.
    assert state.apply_command(StreamPublish(2, "s", batch, "p", 8)) == StreamPublishResult(
        (0, 1, 1), (1, 2, 3))
    assert state.apply_command(StreamPublish(3, "s", batch, "p", 7)) == retry


def test_a_sequence_is_shared_by_exchange_and_stream_publishes() -> None:
    state = BrokerState()
    declare(state, "s")
    exchange_first = state.apply_command(Publish(1, "", (OutMessage("s", b"x"),), "p", 1))
    assert isinstance(exchange_first, PublishResult) and exchange_first.accepted == 1
    reused = state.apply_command(StreamPublish(2, "s", (StreamMessage(b"y"),), "p", 1))
    assert code_of(reused) == INVALID_ARGUMENT
    stream_first = state.apply_command(StreamPublish(3, "s", (StreamMessage(b"z"),), "p", 2))
    assert stream_first == StreamPublishResult((0,), (1,))
    reused = state.apply_command(Publish(4, "", (OutMessage("s", b"w"),), "p", 2))
    assert code_of(reused) == INVALID_ARGUMENT
    assert [r[2] for r in records(state, "s")] == [b"x", b"z"]


# ---------------------------------------------------------------- routing to streams


def routed_state() -> BrokerState:
    state = BrokerState()
    declare(state, "events", partitions=2)
    declare(state, "audit", max_message_bytes=3)
    assert state.apply_command(DeclareQueue(0, "q")) == OkResult(True)
    for name, kind in (("fan", "fanout"), ("dir", "direct"), ("top", "topic")):
        assert state.apply_command(DeclareExchange(0, name, kind)) == OkResult(True)
    for exchange, target, key in (("fan", "events", ""), ("fan", "audit", ""), ("fan", "q", ""),
                                  ("dir", "events", "user-1"), ("top", "audit", "order.*")):
        assert state.apply_command(Bind(0, exchange, target, key)) == OkResult(True)
    return state


def all_records(state: BrokerState, name: str) -> list[StreamRecord]:
    return [r for p in range(len(next_offsets(state, name))) for r in records(state, name, p)]


def test_exchanges_route_to_streams_keyed_by_the_routing_key() -> None:
    state = routed_state()
    fanned = state.apply_command(Publish(1, "fan", (OutMessage("k", b"ab", {"h": 1}),)))
    assert fanned == PublishResult(1, (), (), False, 1)
    assert all_records(state, "events") == [(1, "k", b"ab", {"h": 1})]
    assert all_records(state, "audit") == [(1, "k", b"ab", {"h": 1})]
    assert state.ready_count("q") == 1
    direct = state.apply_command(Publish(2, "dir", (OutMessage("user-1", b"d"),
                                                    OutMessage("user-2", b"e"))))
    assert direct == PublishResult(1, (1,), (), False, 2)
    topic = state.apply_command(Publish(3, "top", (OutMessage("order.eu", b"o"),
                                                   OutMessage("order", b"p"))))
    assert topic == PublishResult(1, (1,), (), False, 4)
    assert [r[1:3] for r in all_records(state, "audit")] == [("k", b"ab"), ("order.eu", b"o")]
    assert ("user-1", b"d") in [r[1:3] for r in all_records(state, "events")]


def test_the_default_exchange_routes_to_a_stream_by_its_name_without_a_key() -> None:
    state = routed_state()
    result = state.apply_command(Publish(1, "", (OutMessage("events", b"1"), OutMessage("events", b"2"),
                                                 OutMessage("nowhere", b"3"))))
    assert result == PublishResult(2, (2,), (), False, 1)
    # No key: the stream name is not a partitioning key, so the messages take turns.
    assert records(state, "events", 0) == [(1, None, b"1", {})]
    assert records(state, "events", 1) == [(1, None, b"2", {})]


def test_a_stream_rejects_a_routed_message_over_its_size_limit() -> None:
    state = routed_state()
    result = state.apply_command(Publish(1, "fan", (OutMessage("", b"big!"), OutMessage("", b"ok"))))
    assert result == PublishResult(2, (), (0,), False, 1)  # stored in events and q, not audit
    assert [r[2] for r in all_records(state, "audit")] == [b"ok"]
    assert len(all_records(state, "events")) == 2


def test_queues_and_streams_share_one_name_space() -> None:
    state = routed_state()
    assert code_of(state.apply_command(DeclareQueue(1, "events"))) == PRECONDITION_FAILED
    assert code_of(state.apply_command(DeclareStream(1, "q", StreamArgs()))) == PRECONDITION_FAILED
    assert state.apply_command(DeleteStream(1, "audit")) == OkResult()
    assert [b.queue for b in state.list_bindings()] == ["events", "q", "events"]  # audit's gone
    assert state.apply_command(DeclareQueue(1, "audit")) == OkResult(True)
    assert state.apply_command(DeleteQueue(1, "q")) == OkResult()
    assert state.apply_command(DeclareStream(1, "q", StreamArgs())) == OkResult(True)


# ---------------------------------------------------------------- limits


def test_the_memory_limit_counts_stream_bytes() -> None:
    state = BrokerState()
    declare(state, "s")
    assert state.apply_command(DeclareQueue(0, "q")) == OkResult(True)
    state.apply_command(StreamPublish(1, "s", (StreamMessage(b"x" * 60),)))
    state.apply_command(Publish(1, "", (OutMessage("q", b"y" * 30),)))
    # 90 bytes held: 10 more fit under 100, 11 do not, on either publish path.
    over = StreamPublish(2, "s", (StreamMessage(b"z" * 11),), max_total_bytes=100)
    assert code_of(state.apply_command(over)) == RESOURCE_EXHAUSTED
    over_exchange = Publish(2, "", (OutMessage("q", b"z" * 11),), max_total_bytes=100)
    assert code_of(state.apply_command(over_exchange)) == RESOURCE_EXHAUSTED
    fits = StreamPublish(2, "s", (StreamMessage(b"z" * 10),), max_total_bytes=100)
    assert state.apply_command(fits) == StreamPublishResult((0,), (1,))
    assert state.apply_command(DeleteStream(3, "s")) == OkResult()  # frees its 70 bytes
    again = Publish(3, "", (OutMessage("q", b"z" * 70),), max_total_bytes=100)
    assert isinstance(state.apply_command(again), PublishResult)


def test_max_message_bytes_rejects_the_whole_batch() -> None:
    state = BrokerState()
    declare(state, "s", max_message_bytes=4)
    batch = (StreamMessage(b"1234"), StreamMessage(b"12345"))
    assert code_of(state.apply_command(StreamPublish(1, "s", batch, "p", 1))) == MESSAGE_TOO_LARGE
    assert next_offsets(state, "s") == [0]
    # Nothing was recorded for the producer either: the same sequence can carry a valid batch.
    fixed = StreamPublish(1, "s", (StreamMessage(b"1234"),), "p", 1)
    assert state.apply_command(fixed) == StreamPublishResult((0,), (0,))
