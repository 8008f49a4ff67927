"""The synchronous client: the asyncio `Client` run on its own event loop in a daemon thread.

    with SyncClient.connect(["http://127.0.0.1:8080"]) as client:
        client.declare_queue("jobs")

Each method blocks until the async call ends, with the same outcomes (success, definite failure,
IndefiniteError). An exception in the waiting thread (KeyboardInterrupt) cancels the call in
the loop before it propagates. Do not call a SyncClient from inside its own loop.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from raftmq.client.client import DEFAULT_REQUEST_TIMEOUT_S, Client
from raftmq.client.producer import Producer, ProducerSettings
from raftmq.client.queue_consumer import PUSH, QueueConsumer
from raftmq.client.retry import DEFAULT_RETRY_POLICY, RetryPolicy
from raftmq.client.stream_consumer import EARLIEST, Assignment, StreamConsumer
from raftmq.client.sync_loop import LoopThread
from raftmq.client.sync_pubsub import SyncProducer, SyncQueueConsumer, SyncStreamConsumer
from raftmq.client.transport import Transport

__all__ = ["SyncClient"]

T = TypeVar("T")


class SyncClient:
    def __init__(self, client: Client, runner: LoopThread) -> None:
        """Prefer `SyncClient.connect`; `client` must belong to `runner`'s loop."""
        self._client = client
        self._runner = runner

    @classmethod
    def connect(
        cls,
        seeds: str | Sequence[str],
        *,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        transport: Transport | None = None,
    ) -> SyncClient:
        runner = LoopThread()

        async def connect() -> Client:
            return await Client.connect(seeds, retry=retry, request_timeout_s=request_timeout_s,
                                        transport=transport)

        try:
            client = runner.run(connect())
        except BaseException:
            runner.stop()
            raise
        return cls(client, runner)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._runner.run(self._client.close())
        except RuntimeError:
            pass  # already closed
        finally:
            self._runner.stop()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run any coroutine of the async client (`self.client`) and wait for its result."""
        return self._runner.run(coroutine)

    @property
    def client(self) -> Client:
        """The async client underneath; only use it through `run`."""
        return self._client

    @property
    def nodes(self) -> list[str]:
        return self._client.nodes

    @property
    def leader_url(self) -> str | None:
        return self._client.leader_url

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._client.retry_policy

    @property
    def request_timeout_s(self) -> float:
        return self._client.request_timeout_s

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, object] | None = None,
        params: Mapping[str, str] | None = None,
        write: bool,
        idempotent: bool,
        content_encoding: str | None = None,
        raw_body: bytes | None = None,
        deadline_s: float | None = None,
        attempt_timeout_s: float | None = None,
    ) -> dict[str, Any]:
        return self.run(self._client.request(
            method, path, body=body, params=params, write=write, idempotent=idempotent,
            content_encoding=content_encoding, raw_body=raw_body, deadline_s=deadline_s,
            attempt_timeout_s=attempt_timeout_s,
        ))

    def refresh(self, *, deadline_s: float | None = None) -> None:
        self.run(self._client.refresh(deadline_s=deadline_s))

    # -- admin -----------------------------------------------------------------------------------

    def declare_exchange(
        self, name: str, exchange_type: str = "direct", *, alternate_exchange: str | None = None
    ) -> bool:
        return self.run(self._client.declare_exchange(name, exchange_type,
                                                      alternate_exchange=alternate_exchange))

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        self.run(self._client.delete_exchange(name, if_unused=if_unused))

    def exchange_info(self, name: str) -> dict[str, Any]:
        return self.run(self._client.exchange_info(name))

    def list_exchanges(self) -> list[dict[str, Any]]:
        return self.run(self._client.list_exchanges())

    def declare_queue(
        self,
        name: str,
        *,
        max_length: int | None = None,
        max_length_bytes: int | None = None,
        overflow: str | None = None,
        message_ttl_ms: int | None = None,
        delivery_limit: int | None = None,
        dead_letter_exchange: str | None = None,
        dead_letter_routing_key: str | None = None,
    ) -> bool:
        return self.run(self._client.declare_queue(
            name, max_length=max_length, max_length_bytes=max_length_bytes, overflow=overflow,
            message_ttl_ms=message_ttl_ms, delivery_limit=delivery_limit,
            dead_letter_exchange=dead_letter_exchange,
            dead_letter_routing_key=dead_letter_routing_key,
        ))

    def delete_queue(self, name: str, *, if_empty: bool = False) -> None:
        self.run(self._client.delete_queue(name, if_empty=if_empty))

    def purge_queue(self, name: str) -> int:
        return self.run(self._client.purge_queue(name))

    def queue_info(self, name: str) -> dict[str, Any]:
        return self.run(self._client.queue_info(name))

    def list_queues(self) -> list[dict[str, Any]]:
        return self.run(self._client.list_queues())

    def bind(self, exchange: str, queue: str, binding_key: str = "") -> bool:
        return self.run(self._client.bind(exchange, queue, binding_key))

    def unbind(self, exchange: str, queue: str, binding_key: str = "") -> None:
        self.run(self._client.unbind(exchange, queue, binding_key))

    def list_bindings(
        self, *, exchange: str | None = None, queue: str | None = None
    ) -> list[dict[str, Any]]:
        return self.run(self._client.list_bindings(exchange=exchange, queue=queue))

    def declare_stream(
        self,
        name: str,
        *,
        partitions: int = 1,
        max_age_ms: int | None = None,
        max_bytes: int | None = None,
        max_messages: int | None = None,
        max_message_bytes: int | None = None,
    ) -> bool:
        return self.run(self._client.declare_stream(
            name, partitions=partitions, max_age_ms=max_age_ms, max_bytes=max_bytes,
            max_messages=max_messages, max_message_bytes=max_message_bytes,
        ))

    def delete_stream(self, name: str) -> None:
        self.run(self._client.delete_stream(name))

    def stream_info(self, name: str) -> dict[str, Any]:
        return self.run(self._client.stream_info(name))

    def list_streams(self) -> list[dict[str, Any]]:
        return self.run(self._client.list_streams())

    def cluster_status(self) -> dict[str, Any]:
        return self.run(self._client.cluster_status())

    def add_member(self, node_id: str, raft_address: str) -> list[dict[str, Any]]:
        return self.run(self._client.add_member(node_id, raft_address))

    def remove_member(self, node_id: str) -> list[dict[str, Any]]:
        return self.run(self._client.remove_member(node_id))

    def transfer_leadership(self, to: str | None = None) -> str:
        return self.run(self._client.transfer_leadership(to))

    def state_digest(self) -> dict[str, Any]:
        return self.run(self._client.state_digest())

    # -- producing and consuming -----------------------------------------------------------------

    def producer(
        self, *, exchange: str | None = None, stream: str | None = None,
        settings: ProducerSettings | None = None, producer_id: str | None = None,
    ) -> SyncProducer:
        """A `Producer` (see there) to one exchange or one stream, behind blocking calls."""
        async def make() -> Producer:
            return Producer(self._client, exchange=exchange, stream=stream, settings=settings,
                            producer_id=producer_id)

        return SyncProducer(self.run(make()), self._runner)

    def queue_consumer(
        self, queue: str, *, consumer: str | None = None, prefetch: int = 100,
        lease_ms: int = 30_000, mode: str = PUSH, wait_ms: int = 5_000,
    ) -> SyncQueueConsumer:
        """A started `QueueConsumer` (see there); `close()` it, or use it in a `with`."""
        started = self.run(QueueConsumer(
            self._client, queue, consumer=consumer, prefetch=prefetch, lease_ms=lease_ms,
            mode=mode, wait_ms=wait_ms).start())
        return SyncQueueConsumer(started, self._runner)

    def stream_consumer(
        self, stream: str, *, group: str | None = None, member: str | None = None,
        partitions: tuple[int, ...] | None = None, start: str | int = EARLIEST,
        start_timestamp_ms: int | None = None, session_timeout_ms: int = 10_000,
        max_buffered_records: int = 10_000, fetch_max_messages: int = 1000,
        wait_ms: int = 5_000, on_rebalance: Callable[[Assignment], None] | None = None,
    ) -> SyncStreamConsumer:
        """A started `StreamConsumer` (see there). `on_rebalance` runs on the client's loop
        thread: keep it short and do not call this client from it."""
        started = self.run(StreamConsumer(
            self._client, stream, group=group, member=member, partitions=partitions,
            start=start, start_timestamp_ms=start_timestamp_ms,
            session_timeout_ms=session_timeout_ms, max_buffered_records=max_buffered_records,
            fetch_max_messages=fetch_max_messages, wait_ms=wait_ms,
            on_rebalance=on_rebalance).start())
        return SyncStreamConsumer(started, self._runner)
