"""What every handler needs: the node, the state, limits, clock, metrics; and `propose`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web

from raftmq.broker.api.errors import ApiError, from_proposal_error, from_state_error
from raftmq.broker.api.limits import ApiLimits
from raftmq.broker.api.longpoll import LongPollHub
from raftmq.broker.api.metrics import ApiMetrics
from raftmq.broker.api.rates import RateTracker
from raftmq.broker.api.stream_waits import StreamWaits
from raftmq.broker.commands import (
    Command,
    Tick,
    encode_command,
    encode_raw_publish,
    encode_raw_stream_publish,
)
from raftmq.broker.names import MAX_ROUTING_KEY_LEN
from raftmq.broker.queue_validation import (
    message_range_problem,
    publish_problem,
    validate_command,
)
from raftmq.broker.queue_wire import RawPublish, message_type_problem
from raftmq.broker.results import ErrorResult, PublishResult
from raftmq.broker.state import BrokerState
from raftmq.broker.stream_commands import RawStreamPublish
from raftmq.broker.stream_results import StreamPublishResult
from raftmq.broker.stream_validation import raw_stream_publish_problem
from raftmq.broker.value_checks import encodable_problem
from raftmq.client import errors as codes
from raftmq.cluster import ProposalError, RaftNode

__all__ = ["CONTEXT_KEY", "ApiContext", "context_of", "raw_publish_command_problem"]

log = logging.getLogger(__name__)

ResultT = TypeVar("ResultT")


@dataclass
class ApiContext:
    node: RaftNode
    state: BrokerState
    limits: ApiLimits
    clock_ms: Callable[[], int]
    metrics: ApiMetrics
    hub: LongPollHub
    rates: RateTracker
    stream_waits: StreamWaits
    # (leader id, its http url): every response names the leader, and node_metadata() takes
    # the lock that apply holds, so it is looked up again only when the leader changes.
    _leader_url_cache: tuple[str, str] | None = None

    def read(self, query: Callable[[BrokerState], ResultT]) -> ResultT:
        """Run a read-only query against the state under the lock `apply` holds."""
        with self.node.state_lock():
            return query(self.state)

    def http_url_of(self, node_id: str | None) -> str | None:
        if node_id is None:
            return None
        return self.node.node_metadata().get(node_id, {}).get("http_url")

    def leader_url(self) -> str | None:
        leader_id = self.node.leader_id
        if leader_id is None:
            return None
        cached = self._leader_url_cache
        if cached is not None and cached[0] == leader_id:
            return cached[1]
        url = self.http_url_of(leader_id)
        if url is not None:  # not cached while unknown: the leader may announce it any moment
            self._leader_url_cache = (leader_id, url)
        return url

    async def propose(self, command: Command, expected: type[ResultT]) -> tuple[ResultT, int]:
        """Replicate `command`; return its local result (of type `expected`) and Raft index.

        ErrorResults become ApiErrors (definite: the command applied and changed nothing);
        replication failures become ApiErrors carrying the cluster layer's `definite`.
        """
        label = type(command).__name__
        # The state runs the same check in `apply`; here it saves a Raft round trip and keeps
        # invalid commands out of the log.
        problem = validate_command(command)
        if problem is not None:
            raise ApiError(codes.INVALID_ARGUMENT, problem)
        try:
            data = encode_command(command)
        except (ValueError, TypeError, OverflowError) as exc:
            # The edge validation should make this impossible; never let it become a 500.
            raise ApiError(codes.INVALID_ARGUMENT, f"cannot encode {label}: {exc}") from None
        return await self._replicate(label, data, expected)

    async def propose_publish(self, now_ms: int, fields: RawPublish) -> tuple[PublishResult, int]:
        """`propose` for a Publish in wire form (see `read_publish_fields`): the same checks and
        the same log bytes, without a record per message."""
        problem = raw_publish_command_problem(now_ms, fields)
        if problem is not None:
            raise ApiError(codes.INVALID_ARGUMENT, problem)
        return await self._replicate("Publish", encode_raw_publish(now_ms, fields), PublishResult)

    async def propose_stream_publish(
        self, now_ms: int, fields: RawStreamPublish
    ) -> tuple[StreamPublishResult, int]:
        """`propose` for a StreamPublish in wire form (each message a [key, partition, body,
        headers] list): the checks of `validate_command` and the same log bytes."""
        problem = validate_command(Tick(now_ms)) or raw_stream_publish_problem(fields)
        if problem is not None:
            raise ApiError(codes.INVALID_ARGUMENT, problem)
        try:
            data = encode_raw_stream_publish(now_ms, fields)
        except (ValueError, TypeError, OverflowError) as exc:
            # The checks above should make this impossible; never let it become a 500.
            raise ApiError(codes.INVALID_ARGUMENT, f"cannot encode StreamPublish: {exc}") from None
        return await self._replicate("StreamPublish", data, StreamPublishResult)

    async def _replicate(
        self, label: str, data: bytes, expected: type[ResultT]
    ) -> tuple[ResultT, int]:
        started_s = time.perf_counter()
        try:
            applied = await self.node.propose(data, timeout_s=self.limits.propose_timeout_s)
        except ProposalError as exc:
            raise from_proposal_error(
                exc.code, str(exc), definite=exc.definite, leader_id=exc.leader_id
            ) from None
        finally:
            self.metrics.observe_propose(label, time.perf_counter() - started_s)
        result = applied.result
        if isinstance(result, ErrorResult):
            raise from_state_error(result.code, result.message)
        if not isinstance(result, expected):
            # The cluster layer's ApplyFailure, or a bug: the entry is in the log regardless.
            log.error("%s at index %d applied to unexpected %r", label, applied.index, result)
            raise ApiError(codes.INTERNAL_ERROR, f"{label} was not applied cleanly",
                           definite=False)
        return result, applied.index


def raw_publish_command_problem(now_ms: int, fields: RawPublish) -> str | None:
    """`validate_command` of the Publish that `fields` stand for, checked in the same order
    (types, ranges, names, and what msgpack can encode), so that once it passes,
    `encode_raw_publish` cannot fail."""
    exchange, messages, producer_id, sequence, max_total_bytes = fields
    # A Tick's only check is the one on now_ms that every command gets.
    problem = validate_command(Tick(now_ms))
    if problem is not None:
        return problem
    if type(messages) is not list:
        return "messages must be a list"
    problem = publish_problem(exchange, len(messages), producer_id, sequence, max_total_bytes)
    if problem is not None:
        return problem
    for message in messages:
        # The common shape passes on a few inline checks; anything else gets all of them.
        if (
            type(message) is list and len(message) == 5
            and type(message[0]) is str and message[0].isascii()
            and len(message[0]) <= MAX_ROUTING_KEY_LEN
            and type(message[1]) is bytes and type(message[2]) is dict and not message[2]
            and message[3] is None and message[4] is None
        ):
            continue
        problem = message_type_problem(message) or message_range_problem(
            message[0], message[3], message[4]
        ) or encodable_problem("routing key", [message[0]], message[2])
        if problem is not None:
            return problem
    return None


CONTEXT_KEY = web.AppKey("raftmq_api_context", ApiContext)


def context_of(request: web.Request) -> ApiContext:
    return request.app[CONTEXT_KEY]
