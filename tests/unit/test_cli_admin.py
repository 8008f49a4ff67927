"""The client-side admin commands (`publish`, `consume`, `queues`, `streams`, `cluster status`)
against a real single-node broker, run in process through `raftmq.broker.cli.main`.

The broker serves on this test's event loop, so each command runs in a worker thread (with its
own `asyncio.run`, as from a shell) while the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from raftmq.broker.api import ApiLimits
from raftmq.broker.cli import main
from tests.unit.test_api_fixtures import Broker, free_port, start_broker, stop_broker, unique

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIMITS = ApiLimits(max_batch_messages=1000, max_request_bytes=4 * 2**20, max_wait_ms=5_000,
                   propose_timeout_s=5.0)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Broker]:
    started = await start_broker(tmp_path_factory.mktemp("raft"), LIMITS)
    try:
        yield started
    finally:
        await stop_broker(started)


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def queue_doc(broker: Broker, queue: str) -> dict[str, object]:
    response, document = await broker.call("GET", f"/v1/queues/{queue}")
    assert response.status == 200, document
    assert isinstance(document, dict)
    return document


async def test_publish_then_consume_round_trip(broker: Broker,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    queue = unique("cli-jobs")
    assert (await broker.call("PUT", f"/v1/queues/{queue}", {}))[0].status == 201
    assert await cli("publish", "--url", broker.url, "--queue", queue, "--header", "k=v",
                     "first", "second", "third") == 0
    assert "messages 3, accepted 3, unroutable 0, rejected 0, failed 0, unknown 0" in \
        capsys.readouterr().out

    assert await cli("queues", "--url", broker.url, "--json") == 0
    (listed,) = [q for q in json.loads(capsys.readouterr().out) if q["name"] == queue]
    assert listed["ready"] == 3

    assert await cli("consume", queue, "--url", broker.url, "--count", "3") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.rsplit(": ", 1)[1] for line in lines] == ["first", "second", "third"]
    assert all("headers={'k': 'v'}" in line for line in lines)
    document = await queue_doc(broker, queue)
    assert (document["ready"], document["leased"]) == (0, 0)
    counters = document["counters"]
    assert isinstance(counters, dict) and counters["acked"] == 3


async def test_consume_past_count_returns_the_rest_at_once(
        broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    queue = unique("cli-count")
    await broker.call("PUT", f"/v1/queues/{queue}", {})
    assert await cli("publish", "--url", broker.url, "--queue", queue, "a", "b", "c", "d") == 0
    capsys.readouterr()
    assert await cli("consume", queue, "--url", broker.url, "--count", "1", "--json") == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["body"] == "a"
    # Nothing that was pushed but not printed stays leased until its lease runs out.
    document = await queue_doc(broker, queue)
    assert (document["ready"], document["leased"]) == (3, 0)


async def test_no_ack_looks_without_taking(broker: Broker,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    queue = unique("cli-peek")
    await broker.call("PUT", f"/v1/queues/{queue}", {})
    assert await cli("publish", "--url", broker.url, "--queue", queue, "x", "y") == 0
    capsys.readouterr()
    assert await cli("consume", queue, "--url", broker.url, "--no-ack", "--exit-when-empty",
                     "--wait-ms", "500") == 0
    assert [line.rsplit(": ", 1)[1] for line in capsys.readouterr().out.splitlines()] == ["x", "y"]
    document = await queue_doc(broker, queue)
    assert (document["ready"], document["leased"]) == (2, 0)
    # Pull mode takes them for good.
    assert await cli("consume", queue, "--url", broker.url, "--pull", "--count", "2") == 0
    assert [line.rsplit(": ", 1)[1] for line in capsys.readouterr().out.splitlines()] == ["x", "y"]
    document = await queue_doc(broker, queue)
    assert (document["ready"], document["leased"]) == (0, 0)


async def test_a_missing_queue_is_a_definite_error_with_exit_status_1(
        broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli("consume", "no.such.queue", "--url", broker.url, "--count", "1") == 1
    error = capsys.readouterr().err
    assert "raftmq consume: error: queue_not_found:" in error
    assert "[definite: nothing was applied]" in error
    assert await cli("publish", "--url", broker.url, "--queue", "no.such.queue", "x") == 1
    assert "raftmq publish: error: queue_not_found:" in capsys.readouterr().err
    assert await cli("queues", "--url", broker.url, "--describe", "no.such.queue") == 1
    assert "error: queue_not_found:" in capsys.readouterr().err


async def test_publish_to_an_exchange_reports_unroutable_messages(
        broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    exchange = unique("cli-ex")
    await broker.call("PUT", f"/v1/exchanges/{exchange}", {"type": "direct"})
    assert await cli("publish", "--url", broker.url, "--exchange", exchange, "--routing-key",
                     "nowhere", "lost") == 1
    assert "messages 1, accepted 0, unroutable 1" in capsys.readouterr().out


async def test_streams_listing_describe_and_group_consume(
        broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    stream, group = unique("cli-stream"), unique("cli-group")
    await broker.call("PUT", f"/v1/streams/{stream}", {"partitions": 2})
    assert await cli("publish", "--url", broker.url, "--stream", stream, "--partition", "1",
                     "r0", "r1", "r2") == 0
    out = capsys.readouterr().out
    assert "records 3, appended 3, failed 0, unknown 0" in out
    assert "partition 1: offsets 0-2" in out

    assert await cli("streams", "--url", broker.url) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines()
              if line.startswith(stream + " ")]
    assert row.split()[:4] == [stream, "2", "3", "6"]  # partitions, messages, body bytes
    assert "0:0-0 1:0-3" in row

    assert await cli("consume", "--url", broker.url, "--stream", stream, "--group", group,
                     "--count", "3") == 0
    captured = capsys.readouterr()
    assert [line.rsplit(": ", 1)[1] for line in captured.out.splitlines()] == ["r0", "r1", "r2"]
    assert "generation" in captured.err  # the assignment is shown

    assert await cli("streams", "--url", broker.url, "--describe", stream, "--json") == 0
    described = json.loads(capsys.readouterr().out)
    assert [p["next_offset"] for p in described["stream"]["partitions"]] == [0, 3]
    (group_doc,) = described["groups"]
    assert group_doc["committed"] == {"0": 0, "1": 3}

    assert await cli("streams", "--url", broker.url, "--describe", stream) == 0
    text = capsys.readouterr().out.splitlines()
    assert any(line.split() == [group, "1", "3", "0"] for line in text)  # committed 3, lag 0


async def test_stream_consume_from_an_offset_and_errors(
        broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    stream = unique("cli-offsets")
    await broker.call("PUT", f"/v1/streams/{stream}", {"partitions": 1})
    assert await cli("publish", "--url", broker.url, "--stream", stream, "a", "b", "c") == 0
    capsys.readouterr()
    assert await cli("consume", "--url", broker.url, "--stream", stream, "--from", "1",
                     "--count", "2", "--json") == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["offset"], r["body"]) for r in records] == [(1, "b"), (2, "c")]

    assert await cli("consume", "--url", broker.url, "--stream", stream, "--from", "99",
                     "--count", "1") == 1
    assert "error: offset_out_of_range:" in capsys.readouterr().err
    assert await cli("consume", "--url", broker.url, "--stream", "no.such.stream",
                     "--count", "1") == 1
    assert "error: stream_not_found:" in capsys.readouterr().err


async def test_cluster_status_shows_the_leader_and_each_node(
        broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli("cluster", "status", "--url", broker.url) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("leader n1 http://127.0.0.1:")
    assert any(line.split()[:3] == ["n1", broker.url, "leader"] for line in lines[1:])


async def test_seeds_fail_over_past_a_dead_one(broker: Broker,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    assert await cli("queues", "--url", f"{dead},{broker.url}", "--json") == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)


async def test_no_reachable_node_is_a_connection_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    assert await cli("queues", "--url", dead, "--timeout", "0.5") == 1
    assert "raftmq queues: error: connection_error:" in capsys.readouterr().err


async def test_the_url_may_come_from_the_environment(
        broker: Broker, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAFTMQ_URL", broker.url)
    assert await cli("streams", "--json") == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)


@pytest.mark.parametrize("argv", [
    ["consume", "--url", "http://127.0.0.1:1"],  # neither a queue nor --stream
    ["consume", "q", "--group", "g"],  # a stream option without --stream
    ["consume", "--stream", "s", "--group", "g", "--partition", "0"],
    ["publish", "--queue", "q", "--header", "no-equals-sign", "x"],
    ["publish", "--queue", "q", "--key", "k", "x"],
])
async def test_bad_arguments_exit_2_before_connecting(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli(*argv) == 2
    assert f"raftmq {argv[0]}: error:" in capsys.readouterr().err


async def test_a_malformed_url_is_refused_by_the_parser(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        await cli("queues", "--url", "ftp://example")
    assert exited.value.code == 2
    assert "not an http:// or https:// URL" in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    ["publish"], ["consume"], ["queues"], ["streams"], ["cluster"], ["cluster", "status"],
    ["bench"],
])
async def test_every_command_has_help(command: list[str],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        await cli(*command, "--help")
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: raftmq {' '.join(command)}")
