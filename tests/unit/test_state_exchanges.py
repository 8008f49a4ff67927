"""BrokerState: exchanges, queues, bindings, routing of publishes, body sharing."""

from __future__ import annotations

import pytest

from raftmq.broker.commands import (
    Bind,
    Claim,
    Command,
    DeclareExchange,
    DeclareQueue,
    DeleteExchange,
    DeleteQueue,
    OutMessage,
    Publish,
    QueueArgs,
    Unbind,
)
from raftmq.broker.results import (
    BindingInfo,
    ClaimResult,
    ErrorResult,
    ExchangeInfo,
    OkResult,
    PublishResult,
    Result,
)
from raftmq.broker.state import BrokerState


def run(state: BrokerState, *commands: Command) -> list[Result]:
    return [state.apply_command(cmd) for cmd in commands]


def error_code(result: Result) -> str:
    assert isinstance(result, ErrorResult), result
    return result.code


def publish(state: BrokerState, exchange: str, *keys: str, body: bytes = b"m") -> PublishResult:
    result = state.apply_command(
        Publish(1, exchange, tuple(OutMessage(key, body) for key in keys))
    )
    assert isinstance(result, PublishResult), result
    return result


def bodies(state: BrokerState, queue: str) -> list[bytes]:
    result = state.apply_command(Claim(1, queue, "c", 1000, 60_000))
    assert isinstance(result, ClaimResult), result
    return [d.body for d in result.deliveries]


def test_declare_exchange_created_then_idempotent_then_conflict() -> None:
    state = BrokerState()
    assert state.apply_command(DeclareExchange(1, "x", "topic")) == OkResult(created=True)
    assert state.apply_command(DeclareExchange(1, "x", "topic")) == OkResult(created=False)
    assert error_code(state.apply_command(DeclareExchange(1, "x", "direct"))) == (
        "precondition_failed"
    )
    assert error_code(state.apply_command(DeclareExchange(1, "x", "topic", "ae"))) == (
        "precondition_failed"
    )
    assert state.exchange_info("x") == ExchangeInfo("x", "topic", None, 0)
    assert state.has_exchange("x") and state.has_exchange("")
    assert not state.has_exchange("y")


@pytest.mark.parametrize(
    "cmd",
    [
        DeclareExchange(1, "", "direct"),  # the default exchange
        DeclareExchange(1, "amq.direct", "direct"),  # reserved prefix
        DeclareExchange(1, "x", "headers"),  # unknown type
        DeclareExchange(1, "bad/name", "direct"),
        DeclareExchange(1, "x" * 201, "direct"),
        DeclareExchange(1, "x", "direct", "bad name"),
        DeleteExchange(1, ""),
        DeclareQueue(1, "", QueueArgs()),
        DeclareQueue(1, "amq.q", QueueArgs()),
        DeclareQueue(1, "q", QueueArgs(overflow="drop-tail")),
        DeclareQueue(1, "q", QueueArgs(delivery_limit=0)),
        DeclareQueue(1, "q", QueueArgs(max_length=-1)),
        DeclareQueue(1, "q", QueueArgs(message_ttl_ms=-5)),
        DeclareQueue(1, "q", QueueArgs(dead_letter_exchange="no spaces")),
        DeclareQueue(1, "q", QueueArgs(dead_letter_routing_key="k" * 256)),
        Bind(1, "", "q", "k"),  # the default exchange has implicit bindings only
        Bind(1, "x", "q", "k" * 256),
        Publish(-1, "", ()),
        Publish(1, "", (OutMessage("k" * 256, b""),)),
        Publish(1, "", (OutMessage("k", b"", ttl_ms=-1),)),
        Publish(1, "", (), producer_id="p"),  # producer without sequence
        Publish(1, "", (), sequence=3),  # sequence without producer
        Publish(1, "", (), max_total_bytes=-1),
    ],
)
def test_invalid_arguments_are_rejected_without_changing_state(cmd: Command) -> None:
    state = BrokerState()
    before = state.snapshot()
    assert error_code(state.apply_command(cmd)) == "invalid_argument"
    assert state.snapshot() == before


def test_name_rules() -> None:
    state = BrokerState()
    ok_names = ["a", "A-b_c.d:e", "x" * 200]
    for name in ok_names:
        assert state.apply_command(DeclareQueue(1, name, QueueArgs())) == OkResult(created=True)
    for bad in ["a b", "é", "a/b", "a?b", "x" * 201]:
        assert error_code(state.apply_command(DeclareQueue(1, bad, QueueArgs()))) == (
            "invalid_argument"
        )


def test_delete_exchange_if_unused_and_missing() -> None:
    state = BrokerState()
    run(state, DeclareExchange(1, "x", "fanout"), DeclareQueue(1, "q", QueueArgs()))
    run(state, Bind(1, "x", "q"))
    assert error_code(state.apply_command(DeleteExchange(1, "x", if_unused=True))) == "in_use"
    assert state.apply_command(DeleteExchange(1, "x")) == OkResult()
    assert not state.has_exchange("x")
    assert state.list_bindings() == []
    assert error_code(state.apply_command(DeleteExchange(1, "x"))) == "exchange_not_found"
    run(state, DeclareExchange(1, "y", "fanout"))
    assert state.apply_command(DeleteExchange(1, "y", if_unused=True)) == OkResult()


def test_bindings_listing_and_errors() -> None:
    state = BrokerState()
    run(
        state,
        DeclareExchange(1, "x", "direct"),
        DeclareExchange(1, "y", "topic"),
        DeclareQueue(1, "q1", QueueArgs()),
        DeclareQueue(1, "q2", QueueArgs()),
    )
    assert run(state, Bind(1, "x", "q1", "a"), Bind(1, "x", "q1", "a")) == [
        OkResult(created=True),
        OkResult(created=False),
    ]
    run(state, Bind(1, "x", "q2", "b"), Bind(1, "y", "q1", "#"))
    assert state.list_bindings() == [
        BindingInfo("x", "q1", "a"),
        BindingInfo("x", "q2", "b"),
        BindingInfo("y", "q1", "#"),
    ]
    assert state.list_bindings(exchange="y") == [BindingInfo("y", "q1", "#")]
    assert state.list_bindings(queue="q2") == [BindingInfo("x", "q2", "b")]
    assert state.exchange_info("x") == ExchangeInfo("x", "direct", None, 2)
    assert error_code(state.apply_command(Bind(1, "nope", "q1"))) == "exchange_not_found"
    assert error_code(state.apply_command(Bind(1, "x", "nope"))) == "queue_not_found"
    assert state.apply_command(Unbind(1, "x", "q1", "a")) == OkResult()
    assert state.apply_command(Unbind(1, "x", "q1", "a")) == OkResult()  # already gone: fine
    assert error_code(state.apply_command(Unbind(1, "x", "nope", "a"))) == "queue_not_found"
    assert state.list_bindings(exchange="x") == [BindingInfo("x", "q2", "b")]
    # Deleting a queue removes its bindings.
    assert state.apply_command(DeleteQueue(1, "q1")) == OkResult()
    assert state.list_bindings() == [BindingInfo("x", "q2", "b")]


def test_list_exchanges_includes_default() -> None:
    state = BrokerState()
    run(state, DeclareExchange(1, "x", "fanout", alternate_exchange="ae"))
    assert state.list_exchanges() == [
        ExchangeInfo("", "direct", None, 0),
        ExchangeInfo("x", "fanout", "ae", 0),
    ]
    assert state.exchange_info("") == ExchangeInfo("", "direct", None, 0)
    assert state.exchange_info("nope") is None


def test_default_exchange_routes_to_queue_named_by_key() -> None:
    state = BrokerState()
    run(state, DeclareQueue(1, "jobs", QueueArgs()))
    result = publish(state, "", "jobs", "missing", "jobs")
    assert result == PublishResult(2, (1,), (), False, 1)
    assert bodies(state, "jobs") == [b"m", b"m"]


def test_publish_to_missing_exchange_fails_whole_batch() -> None:
    state = BrokerState()
    result = state.apply_command(Publish(1, "nope", (OutMessage("k", b"x"),)))
    assert error_code(result) == "exchange_not_found"
    assert state.message_count == 0


def test_fanout_direct_topic_end_to_end() -> None:
    state = BrokerState()
    run(
        state,
        DeclareExchange(1, "fan", "fanout"),
        DeclareExchange(1, "dir", "direct"),
        DeclareExchange(1, "top", "topic"),
        DeclareQueue(1, "a", QueueArgs()),
        DeclareQueue(1, "b", QueueArgs()),
        Bind(1, "fan", "a"),
        Bind(1, "fan", "b"),
        Bind(1, "dir", "a", "red"),
        Bind(1, "top", "b", "*.eu.#"),
    )
    assert publish(state, "fan", "whatever").accepted == 1
    assert publish(state, "dir", "red", "blue").unroutable == (1,)
    assert publish(state, "top", "orders.eu", "orders.us", "x.eu.y.z").unroutable == (1,)
    assert state.ready_count("a") == 2  # fan + red
    assert state.ready_count("b") == 3  # fan + two topic matches
    assert state.ready_count("missing") == 0


def test_two_bindings_to_one_queue_store_the_message_once() -> None:
    state = BrokerState()
    run(
        state,
        DeclareExchange(1, "t", "topic"),
        DeclareQueue(1, "q", QueueArgs()),
        Bind(1, "t", "q", "a.*"),
        Bind(1, "t", "q", "#"),
    )
    assert publish(state, "t", "a.b").accepted == 1
    assert state.ready_count("q") == 1


def test_body_shared_by_queues_counts_once() -> None:
    state = BrokerState()
    run(
        state,
        DeclareExchange(1, "fan", "fanout"),
        DeclareQueue(1, "a", QueueArgs()),
        DeclareQueue(1, "b", QueueArgs()),
        DeclareQueue(1, "c", QueueArgs()),
        Bind(1, "fan", "a"),
        Bind(1, "fan", "b"),
        Bind(1, "fan", "c"),
    )
    publish(state, "fan", "k", body=b"x" * 100)
    assert state.total_body_bytes == 100
    assert state.message_count == 3
    a_info = state.queue_info("a")
    assert a_info is not None and a_info.bytes == 100
    # The stored body object is literally shared.
    claimed = [state.apply_command(Claim(2, q, "c", 1, 1000)) for q in ("a", "b")]
    assert isinstance(claimed[0], ClaimResult) and isinstance(claimed[1], ClaimResult)
    assert claimed[0].deliveries[0].body is claimed[1].deliveries[0].body
    run(state, DeleteQueue(2, "a"), DeleteQueue(2, "b"))
    assert state.total_body_bytes == 100  # still in c
    run(state, DeleteQueue(2, "c"))
    assert state.total_body_bytes == 0
    assert state.message_count == 0


def test_alternate_exchange_takes_unroutable_messages() -> None:
    state = BrokerState()
    run(
        state,
        DeclareExchange(1, "main", "direct", alternate_exchange="alt"),
        DeclareQueue(1, "routed", QueueArgs()),
        DeclareQueue(1, "leftovers", QueueArgs()),
        Bind(1, "main", "routed", "good"),
    )
    # AE does not exist yet: unroutable.
    assert publish(state, "main", "bad").unroutable == (0,)
    run(state, DeclareExchange(1, "alt", "fanout"), Bind(1, "alt", "leftovers"))
    result = publish(state, "main", "good", "bad")
    assert result == PublishResult(2, (), (), False, 2)
    assert state.ready_count("routed") == 1
    assert state.ready_count("leftovers") == 1


def test_delete_queue_if_empty() -> None:
    state = BrokerState()
    run(state, DeclareQueue(1, "q", QueueArgs()))
    publish(state, "", "q")
    assert error_code(state.apply_command(DeleteQueue(1, "q", if_empty=True))) == "in_use"
    bodies(state, "q")  # leased is not empty either
    assert error_code(state.apply_command(DeleteQueue(1, "q", if_empty=True))) == "in_use"
    assert state.apply_command(DeleteQueue(1, "q")) == OkResult()
    assert not state.has_queue("q")
    assert state.total_body_bytes == 0
    assert error_code(state.apply_command(DeleteQueue(1, "q"))) == "queue_not_found"
    run(state, DeclareQueue(1, "e", QueueArgs()))
    assert state.apply_command(DeleteQueue(1, "e", if_empty=True)) == OkResult()


def test_redeclare_queue_with_other_args_fails() -> None:
    state = BrokerState()
    assert state.apply_command(DeclareQueue(1, "q", QueueArgs(max_length=5))) == OkResult(True)
    assert state.apply_command(DeclareQueue(1, "q", QueueArgs(max_length=5))) == OkResult(False)
    assert error_code(state.apply_command(DeclareQueue(1, "q", QueueArgs()))) == (
        "precondition_failed"
    )


def test_recreated_queue_does_not_inherit_old_messages_or_timers() -> None:
    state = BrokerState()
    run(state, DeclareQueue(1, "q", QueueArgs(message_ttl_ms=10)))
    publish(state, "", "q")
    run(state, DeleteQueue(2, "q"), DeclareQueue(3, "q", QueueArgs()))
    publish(state, "", "q")
    assert bodies(state, "q") == [b"m"]  # the old TTL timer fires harmlessly at 11
