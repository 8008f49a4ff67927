"""Prometheus metrics of one node, in a registry owned by the app (so tests and several apps in
one process never share or clash over the global registry)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from raftmq.broker.results import QueueInfo
from raftmq.broker.state import BrokerState
from raftmq.broker.stream_results import StreamInfo
from raftmq.cluster import ClusterStatus, RaftNode

__all__ = ["ROLES", "ApiMetrics"]

ROLES = ("leader", "follower", "candidate", "starting")
_PROPOSE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_MAX_CACHED_CHILDREN = 4096
_QUEUE_GAUGES = ("ready", "leased", "delayed", "bytes", "consumers")
_QUEUE_COUNTERS = (
    "published", "delivered", "redelivered", "acked", "nacked", "expired", "dead_lettered",
    "dropped",
)


class _StateCollector:
    """Reads Raft status and queue stats at scrape time (no copies kept between scrapes)."""

    def __init__(self, node: RaftNode, state: BrokerState) -> None:
        self._node = node
        self._state = state

    def describe(self) -> list[Metric]:
        # Without this the registry would call collect() at registration, before Raft started.
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            status = self._node.status()
        except RuntimeError:  # the node is not started yet: nothing to report
            return
        yield from _raft_metrics(status)
        with self._node.state_lock():
            queues = self._state.list_queues()
            streams = self._state.streams().list_all()
            total_body_bytes = self._state.total_body_bytes
            message_count = self._state.message_count
        yield _gauge("raftmq_broker_body_bytes", "Message body bytes stored (each body once)",
                     total_body_bytes)
        yield _gauge("raftmq_broker_messages", "Message bodies stored", message_count)
        yield from _queue_metrics(queues)
        yield from _stream_metrics(streams)


def _gauge(name: str, documentation: str, value: float) -> Metric:
    return GaugeMetricFamily(name, documentation, value=value)


def _raft_metrics(status: ClusterStatus) -> Iterator[Metric]:
    yield _gauge("raftmq_raft_term", "Current Raft term", status.term)
    yield _gauge("raftmq_raft_commit_index", "Raft commit index", status.commit_index)
    yield _gauge("raftmq_raft_applied_index", "Raft index applied to the local state",
                 status.applied_index)
    yield _gauge("raftmq_raft_log_entries", "Entries in the local Raft log", status.log_entries)
    yield _gauge("raftmq_raft_has_quorum", "1 if this node sees a quorum", int(status.has_quorum))
    yield _gauge("raftmq_raft_is_leader", "1 if this node is the leader",
                 int(status.role == "leader"))
    role = GaugeMetricFamily("raftmq_raft_role", "1 for this node's current Raft role",
                             labels=["role"])
    for name in ROLES:
        role.add_metric([name], int(status.role == name))
    yield role
    leader = GaugeMetricFamily("raftmq_raft_leader", "1 for the leader this node follows",
                               labels=["leader_id"])
    if status.leader_id is not None:
        leader.add_metric([status.leader_id], 1)
    yield leader


def _queue_metrics(queues: list[QueueInfo]) -> Iterator[Metric]:
    for field_name in _QUEUE_GAUGES:
        family = GaugeMetricFamily(f"raftmq_queue_{field_name}", f"Queue {field_name}",
                                   labels=["queue"])
        for info in queues:
            family.add_metric([info.name], getattr(info, field_name))
        yield family
    for field_name in _QUEUE_COUNTERS:
        counter = CounterMetricFamily(f"raftmq_queue_{field_name}",
                                      f"Messages {field_name} in the queue", labels=["queue"])
        for info in queues:
            counter.add_metric([info.name], getattr(info, field_name))
        yield counter


def _stream_metrics(streams: list[StreamInfo]) -> Iterator[Metric]:
    messages = GaugeMetricFamily("raftmq_stream_messages",
                                 "Readable records in the stream (all partitions)",
                                 labels=["stream"])
    body_bytes = GaugeMetricFamily("raftmq_stream_bytes",
                                   "Body bytes of the readable records (all partitions)",
                                   labels=["stream"])
    published = CounterMetricFamily("raftmq_stream_published", "Records appended to the stream",
                                    labels=["stream"])
    trimmed = CounterMetricFamily("raftmq_stream_trimmed", "Records removed by retention",
                                  labels=["stream"])
    for info in streams:
        messages.add_metric([info.name], sum(p.messages for p in info.partitions))
        body_bytes.add_metric([info.name], sum(p.bytes for p in info.partitions))
        published.add_metric([info.name], info.published)
        trimmed.add_metric([info.name], info.trimmed)
    yield from (messages, body_bytes, published, trimmed)


class ApiMetrics:
    """The app's registry: HTTP and proposal metrics kept here, Raft/queue ones read live."""

    def __init__(self, node: RaftNode, state: BrokerState) -> None:
        self.registry = CollectorRegistry()
        self._http_requests = Counter(
            "raftmq_http_requests", "HTTP requests by route and status",
            ["route", "method", "status"], registry=self.registry,
        )
        self._propose_seconds = Histogram(
            "raftmq_propose_seconds", "Time from proposing a command to its local apply",
            ["command"], buckets=_PROPOSE_BUCKETS_S, registry=self.registry,
        )
        self.registry.register(_StateCollector(node, state))
        # labels() builds a key and takes a lock on every call: children are looked up once.
        self._request_counters: dict[tuple[str, str, int], Counter] = {}
        self._propose_histograms: dict[str, Histogram] = {}

    def count_request(self, route: str, method: str, status: int) -> None:
        key = (route, method, status)
        child = self._request_counters.get(key)
        if child is None:
            child = self._http_requests.labels(route=route, method=method, status=str(status))
            # Every label is already bounded (route templates, known methods, statuses); the
            # cap only keeps this shortcut from ever being the thing that grows.
            if len(self._request_counters) < _MAX_CACHED_CHILDREN:
                self._request_counters[key] = child
        child.inc()

    def observe_propose(self, command: str, seconds: float) -> None:
        child = self._propose_histograms.get(command)
        if child is None:
            child = self._propose_seconds.labels(command=command)
            if len(self._propose_histograms) < _MAX_CACHED_CHILDREN:
                self._propose_histograms[command] = child
        child.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
