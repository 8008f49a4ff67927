"""A pod added after the bootstrap (ordinal >= initial cluster size) learns its peers from the
running members before it starts Raft.

Raft adds members one at a time, from the leader: an operator first runs `raftmq cluster
add-member <pod> <pod's DNS name>:<raft port>`, then the pod starts with the members as its
peers (deploy/k8s/scale.sh does both). A pod that finds it is not a member (yet) waits and says
so in its log, again and again: starting without peers would bootstrap a second, empty cluster
under the same Service, the worst possible outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

import aiohttp

from raftmq.broker.k8s_identity import cluster_members, join_peers

__all__ = ["FetchDocument", "await_membership", "fetch_cluster_document"]

log = logging.getLogger(__name__)

ASK_TIMEOUT_S = 2.0
RETRY_PERIOD_S = 2.0
# Repeat the "not a member" line this often: an operator tailing the log must see it.
COMPLAINT_PERIOD_S = 30.0
MAX_DOCUMENT_BYTES = 1 << 20

FetchDocument = Callable[[str, float], Awaitable[Mapping[str, object] | None]]


async def fetch_cluster_document(base_url: str, timeout_s: float) -> Mapping[str, object] | None:
    """`GET <base_url>/v1/cluster` as JSON; None when the node does not answer usefully."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
                base_url.rstrip("/") + "/v1/cluster", headers={"Accept": "application/json"}
        ) as response:
            if response.status != 200:
                return None
            body = await response.content.read(MAX_DOCUMENT_BYTES + 1)
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None
    if len(body) > MAX_DOCUMENT_BYTES:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


async def _ask_members(urls: Sequence[str], fetch: FetchDocument) -> tuple[str, dict[str, str]] | None:
    """(who answered, the members it names) from the first node that names any."""
    for url in urls:
        document = await fetch(url, ASK_TIMEOUT_S)
        members = {} if document is None else cluster_members(document)
        if members:
            return url, members
    return None


async def await_membership(
    node_id: str, raft_advertise: str, urls: Sequence[str], stop: asyncio.Event,
    *, fetch: FetchDocument = fetch_cluster_document, retry_period_s: float = RETRY_PERIOD_S,
) -> dict[str, str] | None:
    """This node's peers once a member names it at `raft_advertise`; None if `stop` is set
    first. Never gives up on its own: a pod must not form a cluster of its own."""
    last_complaint = float("-inf")
    while not stop.is_set():
        answer = await _ask_members(urls, fetch)
        if answer is not None:
            url, members = answer
            peers = join_peers(node_id, raft_advertise, members)
            if peers is not None:
                log.info("%s is a member (asked %s); peers: %s", node_id, url,
                         ", ".join(sorted(peers)) or "none")
                return peers
        if time.monotonic() - last_complaint >= COMPLAINT_PERIOD_S:
            last_complaint = time.monotonic()
            _complain(node_id, raft_advertise, answer, len(urls))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), retry_period_s)
    return None


def _complain(node_id: str, raft_advertise: str, answer: tuple[str, dict[str, str]] | None,
              asked: int) -> None:
    if answer is None:
        log.warning("waiting to join: none of the %d lower-ordinal pods answered with the "
                    "cluster's membership; this pod will not start a cluster of its own", asked)
        return
    url, members = answer
    address = members.get(node_id)
    situation = ("is not a member" if address is None
                 else f"is a member at {address}, not at its own address {raft_advertise}")
    log.warning("waiting to join: %s %s (members as %s sees them: %s). Add it first: "
                "`raftmq cluster add-member %s %s` (deploy/k8s/scale.sh does this)",
                node_id, situation, url, ", ".join(sorted(members)), node_id, raft_advertise)
