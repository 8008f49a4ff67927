"""The chaos workloads by name, for runners and the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from raftmq.chaos.history import HistoryWriter
from raftmq.chaos.workload_common import Workload, WorkloadSettings
from raftmq.chaos.workload_fanout import FanoutWorkload
from raftmq.chaos.workload_queue import QueueWorkload
from raftmq.chaos.workload_stream import StreamWorkload

__all__ = ["WORKLOADS", "Workload", "WorkloadSettings", "make_workload", "make_workloads"]

WORKLOADS: dict[str, Callable[[WorkloadSettings, HistoryWriter], Workload]] = {
    QueueWorkload.name: QueueWorkload,
    FanoutWorkload.name: FanoutWorkload,
    StreamWorkload.name: StreamWorkload,
}


def make_workload(name: str, settings: WorkloadSettings, writer: HistoryWriter) -> Workload:
    """A workload by name ("queue", "fanout", "stream"); ValueError for any other."""
    try:
        factory = WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(sorted(WORKLOADS))}") from None
    return factory(settings, writer)


def make_workloads(names: Iterable[str], settings: WorkloadSettings,
                   writer: HistoryWriter) -> list[Workload]:
    """Several workloads sharing one history (their names, process names and publish ids never
    collide); ValueError for an unknown or repeated name."""
    chosen = list(names)
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"a workload is named twice in {chosen}")
    return [make_workload(name, settings, writer) for name in chosen]
