"""raftmq.broker.api: the HTTP API (JSON and msgpack) and the dashboard of one node."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from raftmq.broker.api.app import build_app
from raftmq.broker.api.limits import ApiLimits
from raftmq.broker.state import BrokerState
from raftmq.cluster import RaftNode

__all__ = ["ApiLimits", "create_app"]


def create_app(
    node: RaftNode, state: BrokerState, limits: ApiLimits, *, clock_ms: Callable[[], int]
) -> web.Application:
    """The node's HTTP application. `clock_ms` stamps `now_ms` into every proposed command.

    The state is only read under `node.state_lock()` (apply runs on Raft's thread)."""
    return build_app(node, state, limits, clock_ms=clock_ms)
