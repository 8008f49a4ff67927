"""Who a StatefulSet pod is, from its name alone: node id, addresses, and its first peers.

A StatefulSet names its pods `<statefulset>-<ordinal>` and, through its headless Service, gives
each a stable DNS name `<pod>.<headless>.<namespace>.svc.<cluster domain>` that survives
restarts and rescheduling (its IP does not). So the pod's name is its Raft node id, and the DNS
name is the address peers dial. The pods `0 .. initial-1` bootstrap the cluster with each other
as peers, which is why one manifest works for 3 or 5 replicas. A pod with a higher ordinal was
added later (scaled up): it has no fixed peers and must learn the membership from a running
member, after an operator added it (`raftmq cluster add-member`); forming a cluster of its own
would split the brokers in two.

Pure: no I/O, no environment. `raftmq.broker.config` feeds it, `raftmq.broker.k8s_join` asks
the members.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "DEFAULT_CLUSTER_DOMAIN",
    "MAX_ORDINAL",
    "PodIdentity",
    "StatefulSetNames",
    "cluster_members",
    "derive_identity",
    "join_peers",
    "parse_dns_label",
    "parse_domain",
    "pod_ordinal",
]

DEFAULT_CLUSTER_DOMAIN = "cluster.local"
# Far beyond any sane Raft membership; bounds the list of pods a joining pod asks.
MAX_ORDINAL = 999
WILDCARD_IPV4 = "0.0.0.0"
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_MAX_DOMAIN_CHARS = 253


def parse_dns_label(text: str) -> str:
    """An RFC 1123 label, as Kubernetes requires of names that become host names."""
    value = text.strip()
    if not _DNS_LABEL_RE.match(value):
        raise ValueError(f"expected a DNS label (1..63 lowercase letters, digits and '-', "
                         f"starting and ending with a letter or digit), got {text!r}")
    return value


def parse_domain(text: str) -> str:
    """A DNS domain such as `cluster.local` (a trailing dot is dropped)."""
    value = text.strip().rstrip(".")
    if not value or len(value) > _MAX_DOMAIN_CHARS:
        raise ValueError(f"expected a DNS domain like cluster.local, got {text!r}")
    for label in value.split("."):
        try:
            parse_dns_label(label)
        except ValueError:
            raise ValueError(f"expected a DNS domain like cluster.local, got {text!r}") from None
    return value


@dataclass(frozen=True)
class StatefulSetNames:
    """The names and ports every pod of the StatefulSet shares."""

    statefulset: str
    headless_service: str
    namespace: str
    cluster_domain: str
    initial_cluster_size: int
    raft_port: int
    http_port: int

    def __post_init__(self) -> None:
        if not 1 <= self.initial_cluster_size <= MAX_ORDINAL + 1:
            raise ValueError(f"initial cluster size must be 1..{MAX_ORDINAL + 1}, "
                             f"got {self.initial_cluster_size}")
        if self.raft_port == self.http_port:
            raise ValueError(f"the Raft and HTTP ports must differ, both are {self.raft_port}")
        for port in (self.raft_port, self.http_port):
            if not 1 <= port <= 65535:
                raise ValueError(f"port must be 1..65535, got {port}")

    @property
    def cluster_name(self) -> str:
        """What a data dir records as its cluster: two StatefulSets never share it."""
        return f"{self.statefulset}.{self.namespace}.svc.{self.cluster_domain}"

    def pod_name(self, ordinal: int) -> str:
        return f"{self.statefulset}-{ordinal}"

    def pod_host(self, ordinal: int) -> str:
        return (f"{self.pod_name(ordinal)}.{self.headless_service}.{self.namespace}"
                f".svc.{self.cluster_domain}")

    def raft_address(self, ordinal: int) -> str:
        return f"{self.pod_host(ordinal)}:{self.raft_port}"

    def http_url(self, ordinal: int) -> str:
        return f"http://{self.pod_host(ordinal)}:{self.http_port}"


@dataclass(frozen=True)
class PodIdentity:
    """What one pod derives: `seed_peers` for a bootstrap member, `join_via_urls` (the pods
    to ask for the current membership) for a pod added later."""

    node_id: str
    ordinal: int
    raft_bind: str
    raft_advertise: str
    http_bind: str
    http_advertise_url: str
    seed_peers: dict[str, str]
    join_via_urls: tuple[str, ...]

    @property
    def bootstrap_member(self) -> bool:
        return not self.join_via_urls


def pod_ordinal(pod_name: str, statefulset: str) -> int:
    """The ordinal of `<statefulset>-<ordinal>`; ValueError for any other name."""
    prefix = statefulset + "-"
    digits = pod_name[len(prefix):] if pod_name.startswith(prefix) else ""
    # Kubernetes writes ordinals in plain decimal: "raftmq-01" is some other pod.
    if not digits.isascii() or not digits.isdigit() or (digits != "0" and digits[0] == "0"):
        raise ValueError(f"pod name {pod_name!r} is not {prefix}<ordinal>: is this pod part of "
                         f"the StatefulSet {statefulset!r}?")
    ordinal = int(digits)
    if ordinal > MAX_ORDINAL:
        raise ValueError(f"pod ordinal {ordinal} is above {MAX_ORDINAL}")
    return ordinal


def derive_identity(pod_name: str, names: StatefulSetNames) -> PodIdentity:
    ordinal = pod_ordinal(pod_name, names.statefulset)
    initial = names.initial_cluster_size
    if ordinal < initial:
        seed_peers = {names.pod_name(other): names.raft_address(other)
                      for other in range(initial) if other != ordinal}
        join_via: tuple[str, ...] = ()
    else:
        # Any member can tell the membership; the lower ordinals are the ones most likely to
        # exist (a scale-up adds pods in order, a scale-down removes the highest first).
        seed_peers = {}
        join_via = tuple(names.http_url(other) for other in range(ordinal))
    return PodIdentity(
        node_id=pod_name,
        ordinal=ordinal,
        # Bound to every interface: the pod's IP changes when it is rescheduled, its name not.
        raft_bind=f"{WILDCARD_IPV4}:{names.raft_port}",
        raft_advertise=names.raft_address(ordinal),
        http_bind=f"{WILDCARD_IPV4}:{names.http_port}",
        http_advertise_url=names.http_url(ordinal),
        seed_peers=seed_peers,
        join_via_urls=join_via,
    )


def cluster_members(document: Mapping[str, object]) -> dict[str, str]:
    """Every current member (node id -> Raft address) that a node's `GET /v1/cluster` names
    in its `nodes` map; {} when the document has no usable map."""
    nodes = document.get("nodes")
    if not isinstance(nodes, Mapping):
        return {}
    members: dict[str, str] = {}
    for node_id, meta in nodes.items():
        address = meta.get("address") if isinstance(meta, Mapping) else None
        if isinstance(node_id, str) and isinstance(address, str) and address:
            members[node_id] = address
    return members


def join_peers(node_id: str, raft_advertise: str, members: Mapping[str, str]) -> dict[str, str] | None:
    """The peers of a joining pod, or None while it is not a member at its own address."""
    if members.get(node_id) != raft_advertise:
        return None
    return {other: address for other, address in members.items() if other != node_id}
