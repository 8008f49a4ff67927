"""Topology commands: declare and delete exchanges and queues, purge, bind and unbind.

Queues and streams share one namespace: a binding or the default exchange names either.
"""

from __future__ import annotations

from raftmq.broker.commands import (
    Bind,
    DeclareExchange,
    DeclareQueue,
    DeleteExchange,
    DeleteQueue,
    PurgeQueue,
    Unbind,
)
from raftmq.broker.queue_core import BrokerCore
from raftmq.broker.queue_state import QueueState
from raftmq.broker.results import (
    EXCHANGE_NOT_FOUND,
    IN_USE,
    PRECONDITION_FAILED,
    QUEUE_NOT_FOUND,
    ErrorResult,
    OkResult,
    PurgeResult,
    Result,
)
from raftmq.broker.routing import Exchange

__all__ = [
    "bind",
    "declare_exchange",
    "declare_queue",
    "delete_exchange",
    "delete_queue",
    "purge_queue",
    "unbind",
]


def declare_exchange(core: BrokerCore, cmd: DeclareExchange) -> Result:
    exchanges = core.router.exchanges
    found = exchanges.get(cmd.name)
    if found is None:
        exchanges[cmd.name] = Exchange(cmd.name, cmd.type, cmd.alternate_exchange)
        return OkResult(created=True)
    if found.type != cmd.type or found.alternate_exchange != cmd.alternate_exchange:
        return ErrorResult(
            PRECONDITION_FAILED,
            f"exchange {cmd.name!r} exists as type {found.type!r} with alternate exchange "
            f"{found.alternate_exchange!r}",
        )
    return OkResult(created=False)


def delete_exchange(core: BrokerCore, cmd: DeleteExchange) -> Result:
    router = core.router
    found = router.exchanges.get(cmd.name)
    if found is None:
        return _no_exchange(cmd.name)
    if cmd.if_unused and found.bindings:
        return ErrorResult(IN_USE, f"exchange {cmd.name!r} has {len(found.bindings)} bindings")
    router.remove_exchange(cmd.name)
    return OkResult()


def declare_queue(core: BrokerCore, cmd: DeclareQueue) -> Result:
    queues = core.queues
    found = queues.get(cmd.name)
    if cmd.name in core.streams:
        return ErrorResult(PRECONDITION_FAILED, f"a stream named {cmd.name!r} exists")
    if found is None:
        queues[cmd.name] = QueueState(cmd.name, cmd.args)
        return OkResult(created=True)
    if found.args != cmd.args:
        return ErrorResult(
            PRECONDITION_FAILED, f"queue {cmd.name!r} exists with other args {found.args}"
        )
    return OkResult(created=False)


def delete_queue(core: BrokerCore, cmd: DeleteQueue) -> Result:
    core = core
    queue = core.queues.get(cmd.name)
    if queue is None:
        return _no_queue(cmd.name)
    if cmd.if_empty and queue.messages:
        return ErrorResult(IN_USE, f"queue {cmd.name!r} holds {len(queue.messages)} messages")
    core.router.remove_queue(cmd.name)
    for msg in queue.messages.values():
        core.release(msg.stored)
    core.message_count -= len(queue.messages)
    del core.queues[cmd.name]
    core.ready_notifications.pop(cmd.name, None)
    return OkResult()


def purge_queue(core: BrokerCore, cmd: PurgeQueue) -> Result:
    core = core
    queue = core.queues.get(cmd.name)
    if queue is None:
        return _no_queue(cmd.name)
    removed = queue.remove_unleased()
    for msg in removed:
        core.release(msg.stored)
    core.message_count -= len(removed)
    return PurgeResult(len(removed))


def _binding_targets_exist(core: BrokerCore, exchange: str, queue: str) -> ErrorResult | None:
    if exchange not in core.router.exchanges:
        return _no_exchange(exchange)
    if queue not in core:  # a queue or a stream
        return ErrorResult(QUEUE_NOT_FOUND, f"no queue or stream is named {queue!r}")
    return None


def bind(core: BrokerCore, cmd: Bind) -> Result:
    missing = _binding_targets_exist(core, cmd.exchange, cmd.queue)
    if missing is not None:
        return missing
    return OkResult(created=core.router.bind(cmd.exchange, cmd.queue, cmd.binding_key))


def unbind(core: BrokerCore, cmd: Unbind) -> Result:
    missing = _binding_targets_exist(core, cmd.exchange, cmd.queue)
    if missing is not None:
        return missing
    core.router.unbind(cmd.exchange, cmd.queue, cmd.binding_key)
    return OkResult()


def _no_queue(name: str) -> ErrorResult:
    return ErrorResult(QUEUE_NOT_FOUND, f"queue {name!r} does not exist")


def _no_exchange(name: str) -> ErrorResult:
    return ErrorResult(EXCHANGE_NOT_FOUND, f"exchange {name!r} does not exist")
