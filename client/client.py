"""The asyncio client with failover: discovery, leader hints, retries within a deadline.

    async with Client.connect(["http://10.0.0.1:8080", "http://10.0.0.2:8080"]) as client:
        await client.declare_queue("jobs")

Every operation goes through `request`, the one failover path. It ends in exactly one of three
ways: a document (success); a definite `RaftMQError` (the operation did not happen, retrying it
is safe); or an `IndefiniteError` (definite=False: it may have happened; only an idempotent
retry is safe). Once any attempt's outcome was unknown, a later definite failure cannot prove
that nothing happened, so the call then ends indefinite too. A read changes nothing, so its
failure is always reported definite. Cancellation is never caught: it ends the call at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine, Generator, Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any

from raftmq.client import errors
from raftmq.client.admin import AdminMethods
from raftmq.client.cluster import ClusterMap
from raftmq.client.responses import decode_response, leader_hint
from raftmq.client.retry import DEFAULT_RETRY_POLICY, GiveUp, RetryPolicy, backoff_s, next_step
from raftmq.client.transport import AiohttpTransport, Transport
from raftmq.client.wire import MSGPACK_CONTENT_TYPE, WireFormat, encode_document

__all__ = ["CLUSTER_PATH", "DEFAULT_REQUEST_TIMEOUT_S", "Client", "Connecting"]

CLUSTER_PATH = "/v1/cluster"
DEFAULT_REQUEST_TIMEOUT_S = 10.0
# Even at the deadline a last attempt gets this long (a shorter one could never succeed).
_MIN_ATTEMPT_S = 0.05
_UNREACHABLE_CODES = frozenset({errors.CONNECTION_ERROR, errors.TIMEOUT})


class Connecting:
    """What `Client.connect` returns: `await` it for a Client, or use it in `async with`."""

    def __init__(self, make: Callable[[], Coroutine[Any, Any, Client]]) -> None:
        self._make = make
        self._client: Client | None = None

    def __await__(self) -> Generator[Any, None, Client]:
        return self._make().__await__()

    async def __aenter__(self) -> Client:
        self._client = await self._make()
        return self._client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.close()


class Client(AdminMethods):
    def __init__(
        self,
        cluster: ClusterMap,
        transport: Transport,
        *,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        random_fraction: Callable[[], float] = random.random,
    ) -> None:
        """Prefer `Client.connect`, which also discovers the cluster. The client owns (and
        closes) the transport."""
        if not request_timeout_s > 0:
            raise ValueError("request_timeout_s must be > 0")
        self._cluster = cluster
        self._transport = transport
        self._retry = retry
        self._request_timeout_s = request_timeout_s
        self._random = random_fraction

    @classmethod
    def connect(
        cls,
        seeds: str | Sequence[str],
        *,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        transport: Transport | None = None,
    ) -> Connecting:
        """Ask the seeds (all at once) for `/v1/cluster` until one answers and learn every node.
        Fails with a definite UnavailableError only when none answers within retry.deadline_s."""
        seed_list = [seeds] if isinstance(seeds, str) else list(seeds)

        async def make() -> Client:
            used = transport if transport is not None else AiohttpTransport()
            try:
                # Seed expansion resolves host names, which blocks: not on the event loop.
                cluster = await asyncio.to_thread(ClusterMap, seed_list)
                client = cls(cluster, used, retry=retry, request_timeout_s=request_timeout_s)
                await client.refresh()
            except BaseException:
                await used.close()
                raise
            return client

        return Connecting(make)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._transport.close()

    @property
    def nodes(self) -> list[str]:
        return self._cluster.urls

    @property
    def leader_url(self) -> str | None:
        return self._cluster.leader_url

    @property
    def cluster_map(self) -> ClusterMap:
        """For consumers that attach to one node themselves (WebSocket): pick and report."""
        return self._cluster

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._retry

    @property
    def request_timeout_s(self) -> float:
        return self._request_timeout_s

    # -- discovery -------------------------------------------------------------------------------

    async def refresh(self, *, deadline_s: float | None = None) -> None:
        """Learn the nodes and the leader again from the first node to answer /v1/cluster."""
        budget_s = self._retry.deadline_s if deadline_s is None else deadline_s
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempt = 0
        while True:
            remaining_s = budget_s - (loop.time() - started)
            timeout_s = max(_MIN_ATTEMPT_S, min(self._request_timeout_s, remaining_s))
            candidates = [*self._cluster.urls,
                          *(seed for seed in self._cluster.seeds if seed not in self._cluster.urls)]
            failures = await self._probe(candidates, timeout_s)
            if not failures:
                return
            remaining_s = budget_s - (loop.time() - started)
            if remaining_s <= 0:
                summary = "; ".join(f"{url}: {reason}" for url, reason in failures.items())
                raise errors.error_for(
                    errors.CONNECTION_ERROR,
                    f"no node answered {CLUSTER_PATH} within {budget_s:g} s ({summary})",
                    definite=True,
                )
            await asyncio.sleep(min(remaining_s, backoff_s(self._retry, attempt, self._random())))
            attempt += 1

    async def _probe(self, urls: Sequence[str], timeout_s: float) -> dict[str, str]:
        """Ask every node at once; {} as soon as one document was learned, else why each failed."""
        tasks = [asyncio.create_task(self._cluster_document(url, timeout_s)) for url in urls]
        failures: dict[str, str] = {}
        try:
            for next_done in asyncio.as_completed(tasks):
                url, outcome = await next_done
                if isinstance(outcome, errors.RaftMQError):
                    failures[url] = str(outcome)
                    continue
                self._cluster.learn(outcome)
                return {}
            return failures
        finally:
            # The slower probes are no longer needed (or the caller was cancelled): leave no task.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _cluster_document(
        self, url: str, timeout_s: float
    ) -> tuple[str, dict[str, Any] | errors.RaftMQError]:
        try:
            document = await self._attempt(url, "GET", CLUSTER_PATH, payload=None,
                                           headers=_headers(None, None), params=None,
                                           write=False, timeout_s=timeout_s)
        except errors.RaftMQError as error:
            self._cluster.note_failure(url)
            return url, error
        return url, document

    # -- the failover path -----------------------------------------------------------------------

    async def request(
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
        """One operation with failover; see the module docstring for its three outcomes.

        `raw_body` is sent as is (with `content_encoding`, e.g. an lz4 frame of a msgpack
        document); `attempt_timeout_s` overrides the per-attempt timeout (a long-poll needs
        its wait on top); `deadline_s` overrides the policy's overall deadline."""
        payload = _payload(body, raw_body, content_encoding)
        headers = _headers(payload, content_encoding)
        policy = self._retry if deadline_s is None else replace(self._retry, deadline_s=deadline_s)
        per_attempt_s = self._request_timeout_s if attempt_timeout_s is None else attempt_timeout_s
        loop = asyncio.get_running_loop()
        started = loop.time()
        excluded: set[str] = set()
        maybe_happened = False
        attempt = 0
        while True:
            url = self._cluster.pick(write=write, exclude=excluded)
            leader_before = self._cluster.leader_url
            remaining_s = policy.deadline_s - (loop.time() - started)
            try:
                return await self._attempt(
                    url, method, path, payload=payload, headers=headers, params=params, write=write,
                    timeout_s=max(_MIN_ATTEMPT_S, min(per_attempt_s, remaining_s)),
                )
            except errors.RaftMQError as raised:
                error = raised if write else _as_definite(raised)
            maybe_happened = maybe_happened or not error.definite
            self._follow_hint(error.leader, leader_before, excluded)
            step = next_step(policy, error, attempt=attempt, elapsed_s=loop.time() - started,
                             idempotent=idempotent, random_fraction=self._random())
            if isinstance(step, GiveUp):
                if error.code in _UNREACHABLE_CODES:
                    self._cluster.note_failure(url)  # spare the next call the same node
                if maybe_happened and error.definite:
                    raise _unknown_outcome(error, step.reason) from error
                raise error
            if step.switch_node:
                self._cluster.note_failure(url)
                excluded.add(url)
            await asyncio.sleep(step.delay_s)
            attempt += 1

    def _follow_hint(self, hint: str | None, leader_before: str | None, excluded: set[str]) -> None:
        if hint:
            self._cluster.note_leader(hint)
        leader = self._cluster.leader_url
        if leader is not None and leader != leader_before:
            # A newly named leader is worth trying even if it failed earlier in this call.
            excluded.discard(leader)

    async def _attempt(
        self,
        url: str,
        method: str,
        path: str,
        *,
        payload: bytes | None,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
        write: bool,
        timeout_s: float,
    ) -> dict[str, Any]:
        response = await self._transport.request(url, method, path, body=payload, headers=headers,
                                                 params=params, timeout_s=timeout_s)
        self._cluster.note_success(url)
        hint = leader_hint(response)
        if hint is not None:
            self._cluster.note_leader(hint)
        return decode_response(response, write=write)

    # -- cluster status (the other admin calls: AdminMethods) ------------------------------------

    async def cluster_status(self) -> dict[str, Any]:
        """The answering node's view of the cluster; the client learns its nodes from it."""
        document = await self.request("GET", CLUSTER_PATH, write=False, idempotent=True)
        self._cluster.learn(document)
        return document


def _payload(
    body: Mapping[str, object] | None, raw_body: bytes | None, content_encoding: str | None
) -> bytes | None:
    if body is not None and raw_body is not None:
        raise ValueError("pass either body or raw_body, not both")
    if raw_body is not None:
        return raw_body
    if content_encoding is not None:
        raise ValueError("content_encoding applies to a raw_body only")
    return None if body is None else encode_document(dict(body), WireFormat.MSGPACK)


def _headers(payload: bytes | None, content_encoding: str | None) -> dict[str, str]:
    headers = {"Accept": MSGPACK_CONTENT_TYPE}
    if payload is not None:
        headers["Content-Type"] = MSGPACK_CONTENT_TYPE
        if content_encoding is not None:
            headers["Content-Encoding"] = content_encoding
    return headers


def _as_definite(error: errors.RaftMQError) -> errors.RaftMQError:
    if error.definite:
        return error
    return errors.error_for(error.code, error.message, definite=True, leader=error.leader,
                            status=error.status)


def _unknown_outcome(error: errors.RaftMQError, reason: str) -> errors.IndefiniteError:
    return errors.IndefiniteError(
        error.code,
        f"{error.message} (gave up: {reason}; an earlier attempt may have been executed)",
        definite=False, leader=error.leader, status=error.status,
    )
