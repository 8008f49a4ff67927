"""Health, cluster, metrics, dashboard, and the topology endpoints (exchanges, queues, bindings)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from raftmq.broker.api.codec import (
    Fields,
    check_exchange_name,
    check_name,
    parse_binding,
    parse_exchange_declare,
    parse_queue_args,
    query_bool,
)
from raftmq.broker.api.content import read_document, respond
from raftmq.broker.api.context import context_of
from raftmq.broker.api.errors import ApiError
from raftmq.broker.api.views import binding_view, cluster_view, exchange_view, queue_view
from raftmq.broker.commands import (
    Bind,
    DeclareExchange,
    DeclareQueue,
    DeleteExchange,
    DeleteQueue,
    PurgeQueue,
    Unbind,
)
from raftmq.broker.results import OkResult, PurgeResult
from raftmq.client import errors as codes

__all__ = ["ROUTES"]

_DASHBOARD = Path(__file__).resolve().parent.parent / "static" / "index.html"


async def dashboard(_request: web.Request) -> web.StreamResponse:
    return web.FileResponse(_DASHBOARD, headers={"Cache-Control": "no-cache"})


async def healthz(request: web.Request) -> web.Response:
    return respond(request, {"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        ready = context_of(request).node.status().ready
    except RuntimeError:  # the Raft node has not been started
        ready = False
    if not ready:
        raise ApiError(codes.NOT_READY, "the local replica is still replaying its log")
    return respond(request, {"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = context_of(request).metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def cluster(request: web.Request) -> web.Response:
    node = context_of(request).node
    try:
        status = node.status()
    except RuntimeError:  # the Raft node has not been started
        raise ApiError(codes.NOT_READY, "the Raft node has not started yet") from None
    return respond(request, cluster_view(status, node.node_metadata()))


# -- exchanges ----------------------------------------------------------------------------------


async def list_exchanges(request: web.Request) -> web.Response:
    exchanges = context_of(request).read(lambda state: state.list_exchanges())
    return respond(request, {"exchanges": [exchange_view(info) for info in exchanges]})


async def get_exchange(request: web.Request) -> web.Response:
    name = check_name("exchange", request.match_info["name"])
    info = context_of(request).read(lambda state: state.exchange_info(name))
    if info is None:
        raise ApiError(codes.EXCHANGE_NOT_FOUND, f"no exchange {name!r}")
    return respond(request, exchange_view(info))


async def declare_exchange(request: web.Request) -> web.Response:
    ctx = context_of(request)
    name = check_name("exchange", request.match_info["name"], declaring=True)
    document = await read_document(request, ctx.limits.max_request_bytes)
    exchange_type, alternate = parse_exchange_declare(document)
    command = DeclareExchange(ctx.clock_ms(), name, exchange_type, alternate)
    result, index = await ctx.propose(command, OkResult)
    return respond(request, {"created": result.created, "index": index},
                   status=201 if result.created else 200)


async def delete_exchange(request: web.Request) -> web.Response:
    ctx = context_of(request)
    name = check_name("exchange", request.match_info["name"], declaring=True)
    if_unused = query_bool(request.query, "if_unused")
    _, index = await ctx.propose(DeleteExchange(ctx.clock_ms(), name, if_unused), OkResult)
    return respond(request, {"deleted": True, "index": index})


# -- queues -------------------------------------------------------------------------------------


async def list_queues(request: web.Request) -> web.Response:
    ctx = context_of(request)
    queues = ctx.read(lambda state: state.list_queues())
    return respond(request, {"queues": [queue_view(q, ctx.rates.rates(q.name)) for q in queues]})


async def get_queue(request: web.Request) -> web.Response:
    ctx = context_of(request)
    name = check_name("queue", request.match_info["name"])
    info = ctx.read(lambda state: state.queue_info(name))
    if info is None:
        raise ApiError(codes.QUEUE_NOT_FOUND, f"no queue {name!r}")
    return respond(request, queue_view(info, ctx.rates.rates(name)))


async def declare_queue(request: web.Request) -> web.Response:
    ctx = context_of(request)
    name = check_name("queue", request.match_info["name"], declaring=True)
    args = parse_queue_args(await read_document(request, ctx.limits.max_request_bytes))
    result, index = await ctx.propose(DeclareQueue(ctx.clock_ms(), name, args), OkResult)
    return respond(request, {"created": result.created, "index": index},
                   status=201 if result.created else 200)


async def delete_queue(request: web.Request) -> web.Response:
    ctx = context_of(request)
    name = check_name("queue", request.match_info["name"])
    if_empty = query_bool(request.query, "if_empty")
    _, index = await ctx.propose(DeleteQueue(ctx.clock_ms(), name, if_empty), OkResult)
    return respond(request, {"deleted": True, "index": index})


async def purge_queue(request: web.Request) -> web.Response:
    ctx = context_of(request)
    name = check_name("queue", request.match_info["name"])
    # A body is not expected, but a malformed one is still an error, not silently ignored.
    Fields(await read_document(request, ctx.limits.max_request_bytes), frozenset())
    result, index = await ctx.propose(PurgeQueue(ctx.clock_ms(), name), PurgeResult)
    return respond(request, {"purged": result.purged, "index": index})


# -- bindings -----------------------------------------------------------------------------------

_BINDING_FIELDS = frozenset({"exchange", "queue", "binding_key"})


async def list_bindings(request: web.Request) -> web.Response:
    fields = Fields(dict(request.query), frozenset({"exchange", "queue"}), "query")
    exchange = fields.optional_str("exchange", 1024)
    queue = fields.optional_str("queue", 1024)
    if exchange is not None:
        check_exchange_name(exchange)
    if queue is not None and queue != "":
        check_name("queue", queue)
    bindings = context_of(request).read(
        lambda state: state.list_bindings(exchange=exchange, queue=queue or None)
    )
    return respond(request, {"bindings": [binding_view(info) for info in bindings]})


async def bind(request: web.Request) -> web.Response:
    ctx = context_of(request)
    document = await read_document(request, ctx.limits.max_request_bytes)
    exchange, queue, key = parse_binding(Fields(document, _BINDING_FIELDS))
    result, index = await ctx.propose(Bind(ctx.clock_ms(), exchange, queue, key), OkResult)
    return respond(request, {"created": result.created, "index": index},
                   status=201 if result.created else 200)


async def unbind(request: web.Request) -> web.Response:
    ctx = context_of(request)
    document = await read_document(request, ctx.limits.max_request_bytes)
    if document == {} and request.query:
        document = dict(request.query)
    exchange, queue, key = parse_binding(Fields(document, _BINDING_FIELDS))
    _, index = await ctx.propose(Unbind(ctx.clock_ms(), exchange, queue, key), OkResult)
    return respond(request, {"deleted": True, "index": index})


ROUTES = (
    web.get("/", dashboard),
    web.get("/healthz", healthz),
    web.get("/readyz", readyz),
    web.get("/metrics", metrics),
    web.get("/v1/cluster", cluster),
    web.get("/v1/exchanges", list_exchanges),
    web.get("/v1/exchanges/{name}", get_exchange),
    web.put("/v1/exchanges/{name}", declare_exchange),
    web.delete("/v1/exchanges/{name}", delete_exchange),
    web.get("/v1/queues", list_queues),
    web.get("/v1/queues/{name}", get_queue),
    web.put("/v1/queues/{name}", declare_queue),
    web.delete("/v1/queues/{name}", delete_queue),
    web.post("/v1/queues/{name}/purge", purge_queue),
    web.get("/v1/bindings", list_bindings),
    web.post("/v1/bindings", bind),
    web.delete("/v1/bindings", unbind),
)
