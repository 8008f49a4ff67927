"""Cluster operations over HTTP: membership changes, leadership transfer, the replica digest,
and draining this node before it stops (`/v1/node/drain`, see raftmq.broker.drain).

Membership changes and transfers run on the leader only: a follower answers 503 `not_leader`
with the leader's URL (`leader` in the error, and X-Raftmq-Leader), which the client follows.
They are not forwarded through Raft because their refusals (id taken, leader being removed)
are only meaningful from the leader's own view (cluster/membership.py).
"""

from __future__ import annotations

import asyncio
import hashlib

from aiohttp import WSCloseCode, web
from aiohttp.typedefs import Handler

from raftmq.broker.api.codec import Fields
from raftmq.broker.api.content import read_document, respond
from raftmq.broker.api.context import ApiContext, context_of
from raftmq.broker.api.errors import ApiError, bad_request, from_proposal_error
from raftmq.broker.api.ws import WS_HUB_KEY, WS_PATH
from raftmq.broker.config import parse_host_port, parse_node_id, split_host_port
from raftmq.broker.drain import Drainer
from raftmq.client import errors as codes
from raftmq.cluster import ProposalError, RaftNode

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT_MS",
    "DIGEST_BYTES",
    "DRAINING",
    "DRAIN_KEY",
    "MAX_DRAIN_TIMEOUT_MS",
    "ROUTES",
    "install_drain",
    "state_digest",
]

DIGEST_BYTES = 32
_MEMBER_FIELDS = frozenset({"node_id", "raft_address"})
_TRANSFER_FIELDS = frozenset({"to"})
_MAX_FIELD_CHARS = 300
_UNDIALABLE_HOSTS = frozenset({"0.0.0.0", "::"})
_DRAIN_FIELDS = frozenset({"timeout_ms"})
DEFAULT_DRAIN_TIMEOUT_MS = 30_000
MAX_DRAIN_TIMEOUT_MS = 600_000
# The error code of work refused by a draining node (503, definite: nothing happened).
DRAINING = codes.DRAINING
DRAIN_KEY = web.AppKey("raftmq_drainer", Drainer)
# Still served while draining: the drain itself, and membership changes (an operator removing
# this very node). Reads are served too: they start nothing that outlives the node.
_SERVED_WHILE_DRAINING = ("/v1/node/", "/v1/cluster/")
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def _node_id(text: str, field: str) -> str:
    try:
        return parse_node_id(text)
    except ValueError as exc:
        raise bad_request(f"'{field}': {exc}") from None


def _raft_address(text: str) -> str:
    try:
        address = parse_host_port(text)
    except ValueError as exc:
        raise bad_request(f"'raft_address': {exc}") from None
    if split_host_port(address)[0] in _UNDIALABLE_HOSTS:
        raise bad_request(f"'raft_address' {address} is a wildcard address the other nodes "
                          "cannot dial")
    return address


def _members_view(members: dict[str, str]) -> list[dict[str, str]]:
    return [{"node_id": node_id, "raft_address": address}
            for node_id, address in sorted(members.items())]


def _as_api_error(error: ProposalError) -> ApiError:
    return from_proposal_error(error.code, str(error), definite=error.definite,
                               leader_id=error.leader_id)


def _timeout_s(ctx: ApiContext) -> float:
    return ctx.limits.propose_timeout_s


async def add_member(request: web.Request) -> web.Response:
    ctx = context_of(request)
    fields = Fields(await read_document(request, ctx.limits.max_request_bytes), _MEMBER_FIELDS)
    node_id = _node_id(fields.str_("node_id", _MAX_FIELD_CHARS), "node_id")
    address = _raft_address(fields.str_("raft_address", _MAX_FIELD_CHARS))
    try:
        members = await ctx.node.add_member(node_id, address, _timeout_s(ctx))
    except ProposalError as error:
        raise _as_api_error(error) from None
    return respond(request, {"members": _members_view(members)})


async def remove_member(request: web.Request) -> web.Response:
    ctx = context_of(request)
    node_id = _node_id(request.match_info["node_id"], "node_id")
    try:
        members = await ctx.node.remove_member(node_id, _timeout_s(ctx))
    except ProposalError as error:
        raise _as_api_error(error) from None
    return respond(request, {"members": _members_view(members)})


async def transfer_leadership(request: web.Request) -> web.Response:
    ctx = context_of(request)
    fields = Fields(await read_document(request, ctx.limits.max_request_bytes), _TRANSFER_FIELDS)
    target = fields.optional_str("to", _MAX_FIELD_CHARS)
    to_node_id = None if target is None else _node_id(target, "to")
    if to_node_id is not None and to_node_id == ctx.node.node_id and ctx.node.is_leader:
        # Already done (e.g. a retry that reached the new leader): answer as for the transfer.
        return respond(request, {"leader_id": to_node_id, "leader_url": ctx.http_url_of(to_node_id)})
    try:
        leader_id = await ctx.node.hand_over_leadership(to_node_id, _timeout_s(ctx))
    except ProposalError as error:
        raise _as_api_error(error) from None
    return respond(request, {"leader_id": leader_id, "leader_url": ctx.http_url_of(leader_id)})


def state_digest(node: RaftNode) -> tuple[int, str]:
    """(applied index, blake2b of the state's snapshot encoding at exactly that index)."""
    index, blob = node.snapshot_with_index()
    return index, hashlib.blake2b(blob, digest_size=DIGEST_BYTES).hexdigest()


async def digest(request: web.Request) -> web.Response:
    ctx = context_of(request)
    if not ctx.node.ready:
        raise ApiError(codes.NOT_READY, "the local replica is still replaying its log")
    # Encoding a large state takes a while: off the loop (apply waits on the lock meanwhile).
    index, hex_digest = await asyncio.to_thread(state_digest, ctx.node)
    return respond(request, {"node_id": ctx.node.node_id, "applied_index": index,
                             "digest": hex_digest})


# -- draining ----------------------------------------------------------------------------------


def _drainer(request: web.Request) -> Drainer:
    drainer = request.app.get(DRAIN_KEY)
    if drainer is None:
        raise ApiError(codes.NOT_FOUND, "draining is not enabled in this server", status=404)
    return drainer


def _drain_state(ctx: ApiContext, drainer: Drainer) -> dict[str, object]:
    leader_id = ctx.node.leader_id
    return {"node_id": ctx.node.node_id, "draining": drainer.draining, "leader_id": leader_id,
            "leader_url": ctx.http_url_of(leader_id)}


async def drain_node(request: web.Request) -> web.Response:
    """Start draining and wait (up to `timeout_ms`) until the rest hold a quorum. 200 either
    way, `drained` telling whether it got there: the node stays draining regardless."""
    ctx = context_of(request)
    drainer = _drainer(request)
    fields = Fields(await read_document(request, ctx.limits.max_request_bytes), _DRAIN_FIELDS)
    timeout_ms = fields.int_("timeout_ms", DEFAULT_DRAIN_TIMEOUT_MS, 1, MAX_DRAIN_TIMEOUT_MS)
    if not drainer.draining:
        drainer.refuse_new_work()
        # Live WebSockets would keep bringing work here; their clients reconnect elsewhere
        # (and are refused here from now on).
        await request.app[WS_HUB_KEY].close_all(WSCloseCode.GOING_AWAY, "node draining")
    report = await drainer.drain(timeout_ms / 1000)
    return respond(request, {**_drain_state(ctx, drainer), "drained": report.drained,
                             "detail": report.detail, "leader_id": report.leader_id,
                             "leader_url": ctx.http_url_of(report.leader_id)})


async def drain_status(request: web.Request) -> web.Response:
    return respond(request, _drain_state(context_of(request), _drainer(request)))


async def resume_node(request: web.Request) -> web.Response:
    drainer = _drainer(request)
    await drainer.resume()
    return respond(request, _drain_state(context_of(request), drainer))


def _is_new_work(request: web.Request) -> bool:
    if request.path in ("/readyz", WS_PATH):
        return True
    return request.method not in _READS and not request.path.startswith(_SERVED_WHILE_DRAINING)


@web.middleware
async def _refuse_new_work(request: web.Request, handler: Handler) -> web.StreamResponse:
    drainer = request.app[DRAIN_KEY]
    if drainer.draining and _is_new_work(request):
        # The edge middleware adds the leader hint, so a client sends its write there.
        raise ApiError(DRAINING, "this node is draining before it stops; use another node",
                       status=503, definite=True)
    return await handler(request)


def install_drain(app: web.Application, drainer: Drainer) -> None:
    """Enable draining on a node's app (before it starts): the state, and the middleware that
    refuses new work while draining. Inside the edge middleware, which renders the refusal."""
    app[DRAIN_KEY] = drainer
    app.middlewares.append(_refuse_new_work)


ROUTES = (
    web.post("/v1/cluster/members", add_member),
    web.delete("/v1/cluster/members/{node_id}", remove_member),
    web.post("/v1/cluster/leadership/transfer", transfer_leadership),
    web.get("/v1/cluster/digest", digest),
    web.post("/v1/node/drain", drain_node),
    web.get("/v1/node/drain", drain_status),
    web.delete("/v1/node/drain", resume_node),
)
