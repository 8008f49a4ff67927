"""What every chaos workload shares: its settings, the `Workload` protocol, message bodies that
name their publish id, per-component random sources, outcome classification, leader reads and
a small set of background tasks.

A workload drives the real `raftmq.client` and records every operation in a `HistoryWriter`
(chaos/history.py) in the format of contracts/chaos.md; the checker judges the broker from
that history alone, so a record must never claim more than the client observed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from raftmq.client import Client, RaftMQError
from raftmq.client.wire import Headers

__all__ = [
    "BODY_SEPARATOR",
    "DEATH_QUEUE_HEADER",
    "DEATH_REASON_HEADER",
    "Counters",
    "TaskSet",
    "Workload",
    "WorkloadError",
    "WorkloadSettings",
    "body_for",
    "component_rng",
    "death_fields",
    "error_code",
    "id_from_body",
    "is_definite",
    "leader_read",
    "queue_depth",
    "wait_event",
]

BODY_SEPARATOR = b" "
DEATH_REASON_HEADER = "x-death-reason"
DEATH_QUEUE_HEADER = "x-death-queue"
_PADDING = b"x"


class WorkloadError(RuntimeError):
    """The cluster is not in a state a workload can start from (e.g. leftovers in its queues)."""


@dataclass(frozen=True)
class WorkloadSettings:
    seed: int
    producers: int = 2
    consumers: int = 2
    rate_per_s: float = 200.0  # total publishes per second, split over the producers
    message_bytes: int = 64
    prefix: str = "chaos"  # names: f"{prefix}.q", f"{prefix}.s", ...

    def __post_init__(self) -> None:
        if self.producers < 1 or self.consumers < 1:
            raise ValueError("a workload needs at least one producer and one consumer")
        if not self.rate_per_s > 0:
            raise ValueError("rate_per_s must be > 0")
        if self.message_bytes < 1:
            raise ValueError("message_bytes must be >= 1")
        if not self.prefix:
            raise ValueError("prefix must not be empty")

    def named(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    @property
    def rate_per_producer_s(self) -> float:
        return self.rate_per_s / self.producers


class Workload(Protocol):
    name: str

    async def setup(self, client: Client) -> None:
        """Declare the topology and write the `workload` event."""

    async def run(self, client: Client, stop: asyncio.Event) -> None:
        """Produce and consume until `stop` is set; consumers go on (into `drain`)."""

    async def drain(self, client: Client, deadline_s: float) -> bool:
        """Settle every publish, consume until everything is read, write `final` drain
        events; True when complete. Stops every task of the workload."""

    async def close(self) -> None:
        """Stop every task at once (an aborted run); `drain` already does this."""

    def stats(self) -> dict[str, int]:
        """Live counters for progress lines."""


Counters = Counter[str]


def component_rng(seed: int, workload: str, component: str) -> random.Random:
    """An independent random source per producer or consumer: each one's choices depend on the
    seed and on what it saw, not on how the event loop interleaved the others."""
    return random.Random(f"{seed}/{workload}/{component}")


def body_for(message_id: str, size_bytes: int) -> bytes:
    """The publish id, then padding up to `size_bytes` (never shorter than the id)."""
    head = message_id.encode("utf-8")
    if len(head) + len(BODY_SEPARATOR) >= size_bytes:
        return head
    return head + BODY_SEPARATOR + _PADDING * (size_bytes - len(head) - len(BODY_SEPARATOR))


def id_from_body(body: bytes) -> str:
    """The publish id a body names; a body not written by a workload still yields a string,
    so the checker reports it (as unexpected) instead of the recorder crashing."""
    return body.split(BODY_SEPARATOR, 1)[0].decode("utf-8", errors="replace") or "<empty>"


def death_fields(headers: Headers) -> tuple[str | None, str | None]:
    """(x-death-reason, x-death-queue) of a dead-lettered copy; None where absent."""
    reason = headers.get(DEATH_REASON_HEADER)
    queue = headers.get(DEATH_QUEUE_HEADER)
    return (reason if isinstance(reason, str) else None,
            queue if isinstance(queue, str) else None)


def is_definite(error: BaseException) -> bool:
    """Only a RaftMQError that says so proves that nothing happened (contract: fail iff
    definite); anything else leaves the outcome unknown."""
    return isinstance(error, RaftMQError) and error.definite


def error_code(error: BaseException) -> str:
    return error.code if isinstance(error, RaftMQError) else type(error).__name__


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Whether `event` was set within `timeout_s`."""
    if event.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), max(0.0, timeout_s))
    return event.is_set()


async def leader_read(client: Client, path: str) -> dict[str, Any]:
    """A GET routed as a write goes to the leader when the client knows it: a lagging
    follower could show an old, emptier state (a drain must not end on that)."""
    return await client.request("GET", path, write=True, idempotent=True)


async def queue_depth(client: Client, queue: str) -> int:
    """Messages still in a queue (ready, delayed or leased), as the leader sees it."""
    info = await leader_read(client, f"/v1/queues/{quote(queue, safe='')}")
    return sum(int(info.get(state) or 0) for state in ("ready", "delayed", "leased"))


class TaskSet:
    """Background tasks of a workload: spawned, awaited with a deadline, cancelled. A task
    that dies of an exception (a recorder bug: client failures are handled inside the tasks)
    is kept in `failures`, so it cannot vanish silently."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self.failures: list[BaseException] = []

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for every task to end; True if they all did."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=max(0.0, timeout_s))
        return not pending

    async def cancel(self) -> None:
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def raise_failures(self) -> None:
        if self.failures:
            first = self.failures[0]
            raise WorkloadError(f"{len(self.failures)} workload task(s) failed: {first!r}") from first

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self.failures.append(error)
