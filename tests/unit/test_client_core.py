"""The failover Client against a real single-node broker (RaftNode + state + HTTP app on a real
port). Faults are injected by a Transport wrapper around the real aiohttp transport: the
broker itself is never replaced, so every answer that reaches the client is a real one."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest

from raftmq.client import (
    AiohttpTransport,
    Client,
    IndefiniteError,
    InvalidRequestError,
    NotFoundError,
    OutOfRangeError,
    RawResponse,
    RetryPolicy,
    SyncClient,
    UnavailableError,
)
from raftmq.client import errors as codes
from raftmq.client.wire import MSGPACK_CONTENT_TYPE, error_document
from tests.unit.test_api_fixtures import MODULE_LOOP, Broker, broker, free_port, unique, wait_for

__all__ = ["broker"]

pytestmark = MODULE_LOOP

FAST = RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.05, deadline_s=5.0)
Responder = Callable[[str, str, Mapping[str, str] | None], Awaitable[RawResponse]]


@dataclass
class Call:
    url: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None
    outcome: str = "pending"


@dataclass
class FaultyTransport:
    """Wraps the real transport. `inject` queues faults for matching requests; `fake_nodes`
    answers for URLs no broker listens on (built from the real broker's answers)."""

    inner: AiohttpTransport = field(default_factory=AiohttpTransport)
    calls: list[Call] = field(default_factory=list)
    fake_nodes: dict[str, Responder] = field(default_factory=dict)
    hanging: int = 0
    hangs_cancelled: int = 0
    closed: bool = False
    _faults: list[tuple[str, str | None, str | None, int]] = field(default_factory=list)

    def inject(self, action: str, *, method: str | None = None, path: str | None = None,
               times: int = 1) -> None:
        """action: refuse (never sent), lose_answer (executed, answer lost), hang."""
        self._faults.append((action, method, path, times))

    def _take(self, method: str, path: str) -> str | None:
        for index, (action, want_method, want_path, times) in enumerate(self._faults):
            if want_method not in (None, method) or (want_path is not None and want_path != path):
                continue
            if times <= 1:
                del self._faults[index]
            else:
                self._faults[index] = (action, want_method, want_path, times - 1)
            return action
        return None

    async def request(self, url: str, method: str, path: str, *, body: bytes | None,
                      headers: Mapping[str, str], params: Mapping[str, str] | None,
                      timeout_s: float) -> RawResponse:
        call = Call(url, method, path, dict(headers), body)
        self.calls.append(call)
        action = self._take(method, path)
        if action == "refuse":
            call.outcome = "refused"
            raise codes.error_for(codes.CONNECTION_ERROR, "injected refusal", definite=True)
        if action == "hang":
            self.hanging += 1
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.hangs_cancelled += 1
                call.outcome = "cancelled"
                raise
        if url in self.fake_nodes:
            response = await self.fake_nodes[url](method, path, params)
        else:
            response = await self.inner.request(url, method, path, body=body, headers=headers,
                                                params=params, timeout_s=timeout_s)
        if action == "lose_answer":
            call.outcome = f"{response.status}, answer lost"
            raise codes.error_for(codes.TIMEOUT, "injected lost answer", definite=False)
        call.outcome = str(response.status)
        return response

    async def close(self) -> None:
        self.closed = True
        await self.inner.close()

    def paths(self, method: str | None = None) -> list[str]:
        return [call.path for call in self.calls if method in (None, call.method)]


def _msgpack_response(status: int, document: object, leader: str | None) -> RawResponse:
    headers = {"Content-Type": MSGPACK_CONTENT_TYPE, "X-Raftmq-Leader": leader or ""}
    return RawResponse(status, headers, msgpack.packb(document, use_bin_type=True))


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


async def _connect(broker: Broker, transport: FaultyTransport | None = None,
                   retry: RetryPolicy = FAST, seeds: list[str] | None = None) -> Client:
    return await Client.connect(seeds or [broker.url], retry=retry, request_timeout_s=2.0,
                                transport=transport)


def _publish_body(text: str, producer: str | None = None, sequence: int | None = None
                  ) -> dict[str, object]:
    body: dict[str, object] = {"messages": [{"body": text.encode()}]}
    if producer is not None:
        body.update(producer_id=producer, sequence=sequence)
    return body


def _other_tasks(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return {task for task in asyncio.all_tasks() - before if task is not current}


# -- connect ------------------------------------------------------------------------------------


async def test_connect_skips_dead_seeds_and_learns_the_node(broker: Broker) -> None:
    async with Client.connect([_dead_url(), _dead_url(), broker.url], retry=FAST) as client:
        # The advertised node replaces the seeds; the leader is known from the document.
        assert client.nodes == [broker.url]
        assert client.leader_url == broker.url
        assert (await client.cluster_status())["leader_url"] == broker.url


async def test_connect_through_a_host_name(broker: Broker) -> None:
    port = broker.url.rsplit(":", 1)[1]
    client = await Client.connect(f"http://localhost:{port}", retry=FAST)
    async with client:
        assert client.nodes == [broker.url]
        assert isinstance(await client.list_queues(), list)


async def test_connect_fails_definitely_when_no_seed_answers() -> None:
    transport = FaultyTransport()
    started = time.monotonic()
    with pytest.raises(UnavailableError) as raised:
        await Client.connect([_dead_url(), _dead_url()], transport=transport,
                             retry=RetryPolicy(initial_backoff_s=0.01, deadline_s=0.5))
    assert raised.value.definite and raised.value.code == codes.CONNECTION_ERROR
    assert 0.5 <= time.monotonic() - started < 3.0
    assert len(transport.calls) > 2  # rounds of probes, not a single try
    assert transport.closed


async def test_bad_seed_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not an http"):
        await Client.connect("127.0.0.1:8080")


# -- admin --------------------------------------------------------------------------------------


async def test_admin_round_trip(broker: Broker) -> None:
    exchange, queue, stream = unique("ex"), unique("q"), unique("s")
    async with Client.connect(broker.url, retry=FAST) as client:
        assert await client.declare_exchange(exchange, "topic") is True
        assert await client.declare_exchange(exchange, "topic") is False
        assert (await client.exchange_info(exchange))["type"] == "topic"
        assert exchange in [e["name"] for e in await client.list_exchanges()]
        assert await client.declare_queue(queue, max_length=10, delivery_limit=3) is True
        assert (await client.queue_info(queue))["args"]["max_length"] == 10
        assert queue in [q["name"] for q in await client.list_queues()]
        assert await client.bind(exchange, queue, "a.*") is True
        assert await client.bind(exchange, queue, "a.*") is False
        bindings = await client.list_bindings(queue=queue)
        assert [(b["exchange"], b["binding_key"]) for b in bindings] == [(exchange, "a.*")]
        await client.request("POST", f"/v1/queues/{queue}/publish", body=_publish_body("x"),
                             write=True, idempotent=False)
        assert await client.purge_queue(queue) == 1
        await client.unbind(exchange, queue, "a.*")
        assert await client.list_bindings(queue=queue) == []
        assert await client.declare_stream(stream, partitions=2, max_messages=100) is True
        info = await client.stream_info(stream)
        assert len(info["partitions"]) == 2 and info["args"]["max_messages"] == 100
        assert stream in [s["name"] for s in await client.list_streams()]
        await client.delete_stream(stream)
        await client.delete_exchange(exchange, if_unused=True)
        await client.delete_queue(queue, if_empty=True)
        with pytest.raises(NotFoundError):
            await client.queue_info(queue)


async def test_bad_input_fails_at_once_without_retries(broker: Broker) -> None:
    transport = FaultyTransport()
    async with await _connect(broker, transport) as client:
        before = len(transport.calls)
        with pytest.raises(InvalidRequestError) as raised:
            await client.declare_queue("no spaces allowed")
        assert raised.value.definite and len(transport.calls) == before + 1
        with pytest.raises(ValueError, match="either body or raw_body"):
            await client.request("POST", "/v1/publish", body={}, raw_body=b"x", write=True,
                                 idempotent=False)


async def test_error_details_carry_the_extra_fields(broker: Broker) -> None:
    stream = unique("s")
    async with await _connect(broker) as client:
        await client.declare_stream(stream)
        with pytest.raises(OutOfRangeError) as raised:
            await client.request("GET", f"/v1/streams/{stream}/partitions/0/messages",
                                 params={"offset": "5"}, write=False, idempotent=True)
        assert raised.value.details == {"first_offset": 0, "next_offset": 0}


# -- retries ------------------------------------------------------------------------------------


async def test_refused_connections_are_retried(broker: Broker) -> None:
    transport = FaultyTransport()
    queue = unique("q")
    async with await _connect(broker, transport) as client:
        transport.inject("refuse", method="PUT", times=2)
        assert await client.declare_queue(queue) is True
        assert [c.outcome for c in transport.calls if c.method == "PUT"] == [
            "refused", "refused", "201"]


async def test_a_lost_answer_of_an_idempotent_publish_is_retried_without_duplicate(
    broker: Broker,
) -> None:
    transport = FaultyTransport()
    queue, producer = unique("q"), unique("producer")
    async with await _connect(broker, transport) as client:
        await client.declare_queue(queue)
        transport.inject("lose_answer", method="POST")
        receipt = await client.request("POST", f"/v1/queues/{queue}/publish",
                                       body=_publish_body("once", producer, 1),
                                       write=True, idempotent=True)
        # The first attempt was stored; the retry with the same sequence is recognised.
        assert receipt["duplicate"] is True
        assert [c.outcome for c in transport.calls if c.method == "POST"] == [
            "200, answer lost", "200"]
        assert (await client.queue_info(queue))["ready"] == 1


async def test_a_lost_answer_of_a_plain_publish_is_indefinite_not_retried(broker: Broker) -> None:
    transport = FaultyTransport()
    queue = unique("q")
    async with await _connect(broker, transport) as client:
        await client.declare_queue(queue)
        transport.inject("lose_answer", method="POST")
        with pytest.raises(IndefiniteError) as raised:
            await client.request("POST", f"/v1/queues/{queue}/publish",
                                 body=_publish_body("maybe"), write=True, idempotent=False)
        assert raised.value.definite is False
        assert len([c for c in transport.calls if c.method == "POST"]) == 1
        # It did happen: reporting it as a (definite) failure would have been a lie.
        assert (await client.queue_info(queue))["ready"] == 1


async def test_a_definite_failure_after_an_unknown_outcome_stays_unknown(broker: Broker) -> None:
    transport = FaultyTransport()
    queue = unique("q")
    async with await _connect(broker, transport) as client:
        await client.declare_queue(queue)
        transport.inject("lose_answer", method="DELETE")
        # The lost attempt deleted the queue, so the retry finds none: not a plain NotFound.
        with pytest.raises(IndefiniteError) as raised:
            await client.delete_queue(queue)
        assert raised.value.code == codes.QUEUE_NOT_FOUND and not raised.value.definite
        with pytest.raises(NotFoundError):
            await client.queue_info(queue)


async def test_reads_fail_definitely(broker: Broker) -> None:
    transport = FaultyTransport()
    async with await _connect(broker, transport) as client:
        transport.inject("lose_answer", method="GET", times=1000)
        with pytest.raises(UnavailableError) as raised:
            await client.request("GET", "/v1/queues", write=False, idempotent=True,
                                 deadline_s=0.3)
        assert raised.value.definite and raised.value.code == codes.TIMEOUT
        assert len(transport.paths("GET")) > 2


async def test_the_deadline_bounds_the_retries(broker: Broker) -> None:
    transport = FaultyTransport()
    async with await _connect(broker, transport) as client:
        transport.inject("refuse", times=10_000)
        started = time.monotonic()
        with pytest.raises(UnavailableError) as raised:
            await client.request("PUT", f"/v1/queues/{unique('q')}", body={}, write=True,
                                 idempotent=True, deadline_s=0.5)
        elapsed = time.monotonic() - started
        assert raised.value.definite and raised.value.code == codes.CONNECTION_ERROR
        assert 0.5 <= elapsed < 1.5
        assert len(transport.calls) > 10


async def test_leader_hints_are_followed(broker: Broker) -> None:
    transport = FaultyTransport()
    stale = _dead_url()

    async def stale_leader(method: str, path: str, _params: Mapping[str, str] | None
                           ) -> RawResponse:
        if path == "/v1/cluster":
            # A node that still believes it leads, in a cluster that includes the real node.
            real = await transport.inner.request(
                broker.url, "GET", path, body=None, headers={"Accept": MSGPACK_CONTENT_TYPE},
                params=None, timeout_s=2.0)
            document = msgpack.unpackb(real.body)
            document.update(http_url=stale, leader_url=stale,
                            nodes={"old": {"http_url": stale}, **document["nodes"]})
            return _msgpack_response(200, document, stale)
        return _msgpack_response(503, error_document(
            codes.NO_LEADER, "lost the leadership", definite=True, leader=broker.url), broker.url)

    transport.fake_nodes[stale] = stale_leader
    queue = unique("q")
    async with await _connect(broker, transport, seeds=[stale]) as client:
        assert client.nodes == [stale, broker.url] and client.leader_url == stale
        assert await client.declare_queue(queue) is True
        assert [(c.url, c.outcome) for c in transport.calls if c.method == "PUT"] == [
            (stale, "503"), (broker.url, "201")]
        assert client.leader_url == broker.url
        await client.declare_queue(queue)  # straight to the leader now
        assert [c.url for c in transport.calls if c.method == "PUT"][-1] == broker.url


async def test_raw_bodies_go_out_verbatim_with_their_encoding(broker: Broker) -> None:
    transport = FaultyTransport()
    echo = _dead_url()

    async def accept(_method: str, _path: str, _params: Mapping[str, str] | None
                     ) -> RawResponse:
        return _msgpack_response(200, {"ok": True}, echo)

    transport.fake_nodes[echo] = accept
    async with await _connect(broker, transport) as client:
        client.cluster_map.note_leader(echo)
        await client.request("POST", "/v1/publish", raw_body=b"\x04\x22\x4d\x18frame",
                             content_encoding="lz4", write=True, idempotent=True)
        sent = transport.calls[-1]
        assert (sent.url, sent.body) == (echo, b"\x04\x22\x4d\x18frame")
        assert sent.headers["Content-Encoding"] == "lz4"
        assert sent.headers["Content-Type"] == MSGPACK_CONTENT_TYPE


# -- cancellation -------------------------------------------------------------------------------


async def test_cancelling_a_retrying_call_ends_it_at_once(broker: Broker) -> None:
    transport = FaultyTransport()
    slow = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=0.2, deadline_s=60.0)
    async with await _connect(broker, transport, retry=slow) as client:
        before = asyncio.all_tasks()
        transport.inject("refuse", times=10_000)
        call = asyncio.create_task(client.declare_queue(unique("q")))
        await wait_for(lambda: len(transport.paths("PUT")) >= 3, 5.0, "a few retries")
        call.cancel()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert time.monotonic() - started < 0.5
        attempts = len(transport.paths("PUT"))
        await asyncio.sleep(0.3)  # long enough for several more retries, had one survived
        assert len(transport.paths("PUT")) == attempts
        assert not _other_tasks(before)


async def test_cancelling_a_call_waiting_for_an_answer_ends_it_at_once(broker: Broker) -> None:
    transport = FaultyTransport()
    async with await _connect(broker, transport) as client:
        before = asyncio.all_tasks()
        transport.inject("hang", method="PUT")
        call = asyncio.create_task(client.declare_queue(unique("q")))
        await wait_for(lambda: transport.hanging == 1, 5.0, "the request to hang")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(call, 1.0)
        assert transport.hangs_cancelled == 1
        assert not _other_tasks(before)


async def test_cancelling_connect_stops_every_probe(broker: Broker) -> None:
    transport = FaultyTransport()
    transport.inject("hang", times=3)
    before = asyncio.all_tasks()
    connecting = asyncio.create_task(_connect(broker, transport,
                                              seeds=[_dead_url(), _dead_url(), broker.url]))
    await wait_for(lambda: transport.hanging == 3, 5.0, "three probes in flight at once")
    connecting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(connecting, 1.0)
    assert transport.hangs_cancelled == 3 and transport.closed
    assert not _other_tasks(before)


async def test_a_slow_seed_does_not_hold_up_connect(broker: Broker) -> None:
    transport = FaultyTransport()
    transport.inject("hang")  # the first probe never answers
    started = time.monotonic()
    async with await _connect(broker, transport, seeds=[_dead_url(), broker.url]) as client:
        assert client.nodes == [broker.url]
    assert time.monotonic() - started < 1.0 and transport.hangs_cancelled == 1


# -- the synchronous client ---------------------------------------------------------------------


def _loop_threads() -> int:
    return sum(thread.name == "raftmq-client-loop" for thread in threading.enumerate())


async def test_sync_client(broker: Broker) -> None:
    queue = unique("q")
    threads_before = _loop_threads()

    def use() -> tuple[bool, bool, int, list[str]]:
        with SyncClient.connect([_dead_url(), broker.url], retry=FAST) as client:
            created = client.declare_queue(queue)
            again = client.declare_queue(queue)
            client.request("POST", f"/v1/queues/{queue}/publish", body=_publish_body("s"),
                           write=True, idempotent=False)
            return created, again, client.queue_info(queue)["ready"], client.nodes

    # The broker runs on this loop: the blocking client must wait in another thread.
    assert await asyncio.to_thread(use) == (True, False, 1, [broker.url])
    assert _loop_threads() == threads_before

    def fail() -> None:
        SyncClient.connect([_dead_url()], retry=RetryPolicy(deadline_s=0.2))

    with pytest.raises(UnavailableError):
        await asyncio.to_thread(fail)
    assert _loop_threads() == threads_before


async def test_sync_client_refuses_use_after_close(broker: Broker) -> None:
    def use() -> None:
        client = SyncClient.connect(broker.url, retry=FAST)
        client.close()
        client.close()  # twice is fine
        with pytest.raises(RuntimeError, match="closed"):
            client.list_queues()

    await asyncio.to_thread(use)
