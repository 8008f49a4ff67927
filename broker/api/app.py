"""The aiohttp application: routes, the edge middleware (errors, headers, metrics), lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from raftmq.broker.api import (
    handlers_admin,
    handlers_cluster,
    handlers_messages,
    handlers_streams,
    ws,
)
from raftmq.broker.api.content import respond
from raftmq.broker.api.context import CONTEXT_KEY, ApiContext, context_of
from raftmq.broker.api.errors import ApiError
from raftmq.broker.api.limits import ApiLimits
from raftmq.broker.api.longpoll import DEFAULT_MAX_WAITERS, LongPollHub
from raftmq.broker.api.metrics import ApiMetrics
from raftmq.broker.api.rates import RateTracker
from raftmq.broker.api.stream_waits import StreamWaits
from raftmq.broker.state import BrokerState
from raftmq.client import errors as codes
from raftmq.client.wire import error_document
from raftmq.cluster import RaftNode

__all__ = ["LEADER_HEADER", "NODE_HEADER", "RATE_SAMPLE_PERIOD_S", "build_app"]

NODE_HEADER = "X-Raftmq-Node"
LEADER_HEADER = "X-Raftmq-Leader"
RATE_SAMPLE_PERIOD_S = 1.0

log = logging.getLogger(__name__)

# Any token is a valid HTTP method: unknown ones share one label value (bounded cardinality).
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_CODE_BY_HTTP_STATUS = {
    400: codes.MALFORMED_REQUEST,
    404: codes.NOT_FOUND,
    405: codes.METHOD_NOT_ALLOWED,
    413: codes.REQUEST_TOO_LARGE,
    415: codes.UNSUPPORTED_MEDIA_TYPE,
}


def _from_http_exception(exc: web.HTTPException) -> ApiError:
    """aiohttp's own refusals (no route, wrong method, body too large) in our error format."""
    code = _CODE_BY_HTTP_STATUS.get(exc.status, codes.MALFORMED_REQUEST)
    if exc.status >= 500:
        code = codes.INTERNAL_ERROR
    return ApiError(code, exc.reason, status=exc.status)


def _route_label(request: web.Request) -> str:
    # The route template, never the raw path: queue names must not explode label cardinality.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _error_response(request: web.Request, ctx: ApiContext, error: ApiError) -> web.Response:
    leader = ctx.http_url_of(error.leader_id) or ctx.leader_url()
    document = error_document(error.code, error.message, definite=error.definite, leader=leader)
    details = document["error"]
    if error.extra and isinstance(details, dict):
        # The standard fields win over an extra field of the same name.
        document["error"] = {**error.extra, **details}
    response = respond(request, document, status=error.status)
    if error.status in (429, 503):
        response.headers["Retry-After"] = "1"
    return response


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = context_of(request)
    response: web.StreamResponse
    try:
        response = await handler(request)
    except ApiError as exc:
        response = _error_response(request, ctx, exc)
    except web.HTTPException as exc:
        error = _from_http_exception(exc)
        response = _error_response(request, ctx, error)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        error = ApiError(codes.INTERNAL_ERROR, "internal error; see the node's log",
                         definite=False)
        response = _error_response(request, ctx, error)
    response.headers[NODE_HEADER] = ctx.node.node_id
    response.headers[LEADER_HEADER] = ctx.leader_url() or ""
    if request.method in ("GET", "HEAD") and request.path.startswith("/v1/"):
        # The dashboard reads other nodes' /v1/cluster from whatever node served the page.
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Expose-Headers"] = f"{NODE_HEADER}, {LEADER_HEADER}"
    method = request.method if request.method in _KNOWN_METHODS else "other"
    ctx.metrics.count_request(_route_label(request), method, response.status)
    return response


def _drain_ready(node: RaftNode, state: BrokerState) -> Callable[[], dict[str, int]]:
    def drain() -> dict[str, int]:
        with node.state_lock():
            names = state.drain_ready_notifications()
            return {name: state.ready_count(name) for name in names}

    return drain


def _drain_appends(node: RaftNode, state: BrokerState) -> Callable[[], list[tuple[str, int]]]:
    def drain() -> list[tuple[str, int]]:
        with node.state_lock():
            return state.drain_stream_appends()

    return drain


def _ready_count(node: RaftNode, state: BrokerState) -> Callable[[str], int]:
    def count(queue: str) -> int:
        with node.state_lock():
            return state.ready_count(queue)

    return count


async def _sample_rates(ctx: ApiContext) -> None:
    while True:
        ctx.rates.record(ctx.read(lambda state: state.list_queues()))
        await asyncio.sleep(RATE_SAMPLE_PERIOD_S)


async def _background(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CONTEXT_KEY]
    # Registered at startup, not in the factory: a listener of an app never started would
    # drain notifications that the serving app's waiters need.
    ctx.node.add_apply_listener(ctx.hub.on_applied)
    ctx.node.add_apply_listener(ctx.stream_waits.on_applied)
    sampler = asyncio.create_task(_sample_rates(ctx), name="raftmq-rate-sampler")
    yield
    ctx.hub.close()
    ctx.stream_waits.close()
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler


async def _close_waiters(app: web.Application) -> None:
    # on_shutdown runs before connections are closed: long-polls answer (empty) right away.
    app[CONTEXT_KEY].hub.close()
    app[CONTEXT_KEY].stream_waits.close()


def build_app(
    node: RaftNode,
    state: BrokerState,
    limits: ApiLimits,
    *,
    clock_ms: Callable[[], int],
    max_waiters: int = DEFAULT_MAX_WAITERS,
) -> web.Application:
    hub = LongPollHub(
        max_waiters,
        drain_ready=_drain_ready(node, state),
        ready_count=_ready_count(node, state),
    )
    ctx = ApiContext(
        node=node, state=state, limits=limits, clock_ms=clock_ms,
        metrics=ApiMetrics(node, state), hub=hub, rates=RateTracker(),
        stream_waits=StreamWaits(max_waiters, drain_appends=_drain_appends(node, state)),
    )
    app = web.Application(client_max_size=limits.max_request_bytes, middlewares=[edge_middleware])
    app[CONTEXT_KEY] = ctx
    app.add_routes(handlers_admin.ROUTES)
    app.add_routes(handlers_cluster.ROUTES)
    app.add_routes(handlers_messages.ROUTES)
    app.add_routes(handlers_streams.ROUTES)
    ws.install(app)
    app.cleanup_ctx.append(_background)
    app.on_shutdown.append(_close_waiters)
    return app
