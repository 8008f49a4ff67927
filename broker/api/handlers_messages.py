"""Publish, claim (with long-poll) and settle (ack/nack/extend)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from raftmq.broker.api.codec import ClaimRequest, check_name, parse_claim, parse_settle
from raftmq.broker.api.content import read_document, request_format, respond
from raftmq.broker.api.context import ApiContext, context_of
from raftmq.broker.api.errors import ApiError
from raftmq.broker.api.publish_codec import PublishRequest, parse_publish
from raftmq.broker.api.views import delivery_view
from raftmq.broker.commands import Ack, Claim, ExtendLease, Nack
from raftmq.broker.results import ClaimResult, Delivery, PublishResult, SettleResult
from raftmq.client import errors as codes
from raftmq.client.wire import PublishReceipt, SettleReceipt

__all__ = ["ROUTES", "propose_publish", "publish_receipt"]


async def publish(request: web.Request) -> web.Response:
    ctx = context_of(request)
    parsed = parse_publish(await read_document(request, ctx.limits.max_request_bytes), ctx.limits)
    result, index = await propose_publish(ctx, parsed)
    return respond(request, publish_receipt(result, index).to_wire())


async def publish_to_queue(request: web.Request) -> web.Response:
    """The default exchange with routing key = queue name; a missing queue is a 404."""
    ctx = context_of(request)
    queue = check_name("queue", request.match_info["name"])
    document = await read_document(request, ctx.limits.max_request_bytes)
    parsed = parse_publish(document, ctx.limits, queue=queue)
    result, index = await propose_publish(ctx, parsed)
    if len(result.unroutable) == len(parsed.messages) and not ctx.read(
        lambda state: state.has_queue(queue)
    ):
        # Nothing was stored (the command applied as a no-op), so this is definite.
        raise ApiError(codes.QUEUE_NOT_FOUND, f"no queue {queue!r}")
    return respond(request, publish_receipt(result, index).to_wire())


async def propose_publish(ctx: ApiContext, parsed: PublishRequest) -> tuple[PublishResult, int]:
    fields = (parsed.exchange, parsed.messages, parsed.producer_id, parsed.sequence,
              ctx.limits.max_total_body_bytes)
    return await ctx.propose_publish(ctx.clock_ms(), fields)


def publish_receipt(result: PublishResult, index: int) -> PublishReceipt:
    return PublishReceipt(
        accepted=result.accepted,
        unroutable=result.unroutable,
        rejected=result.rejected,
        duplicate=result.duplicate,
        index=index,
    )


async def claim(request: web.Request) -> web.Response:
    ctx = context_of(request)
    queue = check_name("queue", request.match_info["name"])
    parsed = parse_claim(await read_document(request, ctx.limits.max_request_bytes), ctx.limits)
    if parsed.wait_ms == 0:
        deliveries = await _claim_now(ctx, queue, parsed)
    else:
        deliveries = await _claim_with_wait(request, ctx, queue, parsed)
    wire_format = request_format(request)
    return respond(request, {"messages": [delivery_view(d, wire_format) for d in deliveries]})


def _local_readiness(ctx: ApiContext, queue: str) -> tuple[bool, int]:
    return ctx.read(lambda state: (state.has_queue(queue), state.ready_count(queue)))


async def _claim_now(ctx: ApiContext, queue: str, parsed: ClaimRequest) -> tuple[Delivery, ...]:
    exists, ready = _local_readiness(ctx, queue)
    # A queue missing locally is still proposed: its queue_not_found is then authoritative.
    if exists and ready == 0:
        return ()
    return await _propose_claim(ctx, queue, parsed)


async def _claim_with_wait(
    request: web.Request, ctx: ApiContext, queue: str, parsed: ClaimRequest
) -> tuple[Delivery, ...]:
    """Propose a claim only when the local replica has ready messages; otherwise wait for the
    dispatcher's wake-up, so an empty queue is never claimed against in a loop."""
    loop = asyncio.get_running_loop()
    deadline_s = loop.time() + parsed.wait_ms / 1000.0
    with ctx.hub.waiter(queue, parsed.max_messages) as waiter:
        while True:
            # Re-armed before looking, so a wake-up between the look and the wait is kept.
            waiter.rearm()
            exists, ready = _local_readiness(ctx, queue)
            if not exists or ready > 0:
                deliveries = await _propose_claim(ctx, queue, parsed)
                if deliveries:
                    return deliveries
            remaining_s = deadline_s - loop.time()
            if remaining_s <= 0 or ctx.hub.closed or not await waiter.wait(remaining_s):
                return ()
            if ctx.hub.closed or _client_gone(request):
                # Claiming now would lease messages to nobody until the lease runs out.
                return ()


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _propose_claim(ctx: ApiContext, queue: str, parsed: ClaimRequest) -> tuple[Delivery, ...]:
    command = Claim(
        now_ms=ctx.clock_ms(),
        queue=queue,
        consumer=parsed.consumer,
        max_messages=parsed.max_messages,
        lease_ms=parsed.lease_ms,
    )
    result, _ = await ctx.propose(command, ClaimResult)
    return result.deliveries


async def settle(request: web.Request) -> web.Response:
    ctx = context_of(request)
    queue = check_name("queue", request.match_info["name"])
    action = request.match_info["action"]
    document = await read_document(request, ctx.limits.max_request_bytes)
    parsed = parse_settle(document, action, ctx.limits)
    now_ms = ctx.clock_ms()
    command: Ack | Nack | ExtendLease
    if action == "ack":
        command = Ack(now_ms, queue, parsed.leases)
    elif action == "nack":
        command = Nack(now_ms, queue, parsed.leases, parsed.requeue, parsed.delay_ms)
    else:
        command = ExtendLease(now_ms, queue, parsed.leases, parsed.lease_ms)
    result, _ = await ctx.propose(command, SettleResult)
    receipt = SettleReceipt(settled=result.settled, failures=result.failures)
    return respond(request, receipt.to_wire())


ROUTES = (
    web.post("/v1/publish", publish),
    web.post("/v1/queues/{name}/publish", publish_to_queue),
    web.post("/v1/queues/{name}/claim", claim),
    web.post("/v1/queues/{name}/{action:ack|nack|extend}", settle),
)
