"""The deliberately broken broker (`--test-fault drop-publish-every=N`): exactly the messages
whose id is a multiple of N vanish from their queues while the publish is confirmed, the same
on every replica; without the option nothing changes. And its configuration."""

from __future__ import annotations

import pytest

from raftmq.broker.commands import (
    Bind,
    Claim,
    DeclareExchange,
    DeclareQueue,
    OutMessage,
    Publish,
    QueueArgs,
)
from raftmq.broker.config import ConfigError, TestFault, parse_node_settings, parse_test_fault
from raftmq.broker.results import ClaimResult, PublishResult
from raftmq.broker.state import BrokerState
from raftmq.broker.stream_commands import DeclareStream, StreamArgs

BASE_FLAGS = ["--node-id", "n1", "--raft-bind", "127.0.0.1:7001", "--secret", "s3cret"]


def publish(state: BrokerState, now: int, count: int, exchange: str = "", key: str = "q",
            producer: tuple[str, int] | None = None) -> PublishResult:
    messages = tuple(OutMessage(key, b"m%d" % i) for i in range(count))
    producer_id, sequence = producer if producer else (None, None)
    result = state.apply_command(Publish(now, exchange, messages, producer_id, sequence))
    assert isinstance(result, PublishResult), result
    return result


def claimed_ids(state: BrokerState, queue: str = "q") -> list[int]:
    result = state.apply_command(Claim(100, queue, "c", 1000, 60_000))
    assert isinstance(result, ClaimResult), result
    return [delivery.message_id for delivery in result.deliveries]


def with_queue(drop_publish_every: int) -> BrokerState:
    state = BrokerState(drop_publish_every=drop_publish_every)
    state.apply_command(DeclareQueue(1, "q", QueueArgs()))
    return state


def test_every_nth_message_is_dropped_while_the_publish_is_confirmed() -> None:
    state = with_queue(3)
    first = publish(state, 2, 10)
    assert (first.accepted, first.first_message_id) == (10, 1)
    second = publish(state, 3, 5)
    assert second.accepted == 5
    info = state.queue_info("q")
    assert info is not None and info.ready == 15 - 5 and info.published == 15
    assert claimed_ids(state) == [1, 2, 4, 5, 7, 8, 10, 11, 13, 14]
    assert state.message_count == 10


def test_without_the_option_nothing_changes() -> None:
    plain, explicit = BrokerState(), BrokerState(drop_publish_every=None)
    for state in (plain, explicit):
        state.apply_command(DeclareQueue(1, "q", QueueArgs()))
    for state in (plain, explicit):
        publish(state, 2, 10)
    assert plain.snapshot() == explicit.snapshot()
    assert claimed_ids(plain) == list(range(1, 11))


def test_replicas_drop_the_same_messages() -> None:
    replicas = [with_queue(4) for _ in range(2)]
    for state in replicas:
        publish(state, 2, 7)
        publish(state, 3, 9, producer=("p", 1))
        publish(state, 4, 9, producer=("p", 1))  # a retry: answered from the table, no new ids
    assert replicas[0].snapshot() == replicas[1].snapshot()
    assert claimed_ids(replicas[0]) == [i for i in range(1, 17) if i % 4 != 0]


def test_a_routed_message_is_dropped_from_every_queue_but_not_from_streams() -> None:
    state = BrokerState(drop_publish_every=2)
    state.apply_command(DeclareExchange(1, "fan", "fanout"))
    for queue in ("a", "b"):
        state.apply_command(DeclareQueue(1, queue, QueueArgs()))
        state.apply_command(Bind(1, "fan", queue, ""))
    state.apply_command(DeclareStream(1, "s", StreamArgs(partitions=1)))
    state.apply_command(Bind(1, "fan", "s", ""))
    assert publish(state, 2, 4, exchange="fan", key="").accepted == 4
    assert claimed_ids(state, "a") == claimed_ids(state, "b") == [1, 3]
    assert state.streams().next_offset("s", 0) == 4


def test_the_option_is_parsed_and_unknown_faults_are_refused() -> None:
    assert parse_node_settings(BASE_FLAGS).test_fault is None
    settings = parse_node_settings([*BASE_FLAGS, "--test-fault", "drop-publish-every=5"], {})
    assert settings.test_fault == TestFault(drop_publish_every=5)
    from_env = parse_node_settings(BASE_FLAGS, {"RAFTMQ_TEST_FAULT": "drop-publish-every=2"})
    assert from_env.test_fault == TestFault(drop_publish_every=2)
    for bad in ("drop-publish-every", "drop-publish-every=0", "drop-publish-every=x",
                "drop-everything=2", "chaos"):
        with pytest.raises(ValueError):
            parse_test_fault(bad)


def test_an_unknown_fault_on_the_command_line_exits_with_usage(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_node_settings([*BASE_FLAGS, "--test-fault", "drop-all=1"], {})
    assert exited.value.code == 2
    assert "unknown test fault" in capsys.readouterr().err


def test_a_state_refuses_a_nonsensical_setting() -> None:
    with pytest.raises(ValueError):
        BrokerState(drop_publish_every=0)
    assert issubclass(ConfigError, ValueError)
