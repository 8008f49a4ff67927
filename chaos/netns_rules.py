"""The pure half of the chaos network: names, addresses and the nftables rules for faults.

Nothing here runs a command, so the naming and the rule text can be reasoned about (and tested)
without root. `raftmq.chaos.netns` applies what this module computes.

Faults are drops in the *receiving* node's input hook, matched on the sender's address only. The
driver (the test process in the root namespace, on the bridge's address) is never matched, so it
keeps reaching every node while the nodes cannot reach each other.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "LINK_PREFIX",
    "MAX_NODES",
    "NAMESPACE_PREFIX",
    "NODE_INTERFACE",
    "TABLE_NAME",
    "FaultSet",
    "NetworkPlan",
    "PlanError",
    "candidate_subnets",
    "is_our_link",
    "render_hosts",
    "validate_name",
]

NAMESPACE_PREFIX = "rmq-"
LINK_PREFIX = "rmq"
# Inside each namespace the node's end of its veth pair; the name is free there.
NODE_INTERFACE = "eth0"
TABLE_NAME = "raftmq_chaos"
MAX_NODES = 200
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_MAX_RUN_ID_CHARS = 24
_MAX_NODE_NAME_CHARS = 40
# IFNAMSIZ is 16 including the NUL: "rmq" + 6 hex + "br" or "v" + up to 3 digits stays at 13.
_LINK_RE = re.compile(r"^[0-9a-f]{6}(br|v\d{1,3})$")


class PlanError(ValueError):
    """A run id, node name, group or subnet that cannot be turned into a network."""


def validate_name(kind: str, name: str, max_chars: int) -> str:
    """Names end up in file paths (/run/netns, /etc/netns) and command lines: keep them plain."""
    if not _NAME_RE.match(name) or len(name) > max_chars:
        raise PlanError(
            f"{kind} {name!r} must be 1..{max_chars} letters, digits, '-' or '_',"
            " starting with a letter or digit"
        )
    return name


def _run_hash(run_id: str) -> bytes:
    return hashlib.sha256(run_id.encode()).digest()


def candidate_subnets(run_id: str) -> Iterator[ipaddress.IPv4Network]:
    """Default /24s for a run: stable per run id, spread over 10.64-191.x so runs rarely collide."""
    digest = _run_hash(run_id)
    for index in range(0, len(digest) - 1, 2):
        second_octet = 64 + digest[index] % 128
        yield ipaddress.IPv4Network(f"10.{second_octet}.{digest[index + 1]}.0/24")


def is_our_link(link_name: str, link_prefix: str = LINK_PREFIX) -> bool:
    """Whether an interface name has the shape this module gives bridges and veth ends."""
    return link_name.startswith(link_prefix) and bool(_LINK_RE.match(link_name[len(link_prefix) :]))


@dataclass(frozen=True)
class NetworkPlan:
    """Every name and address of one run's network, decided before anything is created."""

    run_id: str
    node_names: tuple[str, ...]
    subnet: ipaddress.IPv4Network
    bridge: str
    namespaces: Mapping[str, str]
    host_links: Mapping[str, str]
    addresses: Mapping[str, str]
    driver_address: str

    @classmethod
    def build(cls, run_id: str, node_names: Sequence[str], subnet: ipaddress.IPv4Network) -> NetworkPlan:
        validate_name("run id", run_id, _MAX_RUN_ID_CHARS)
        names = tuple(validate_name("node name", name, _MAX_NODE_NAME_CHARS) for name in node_names)
        if not names:
            raise PlanError("a network needs at least one node")
        if len(set(names)) != len(names):
            raise PlanError(f"node names must be distinct: {list(names)}")
        if len(names) > MAX_NODES:
            raise PlanError(f"at most {MAX_NODES} nodes, got {len(names)}")
        hosts = list(subnet.hosts())
        # One address for the driver on the bridge, one per node.
        if len(hosts) < len(names) + 1:
            raise PlanError(f"subnet {subnet} has {len(hosts)} addresses, {len(names) + 1} needed")
        tag = LINK_PREFIX + _run_hash(run_id).hex()[:6]
        return cls(
            run_id=run_id,
            node_names=names,
            subnet=subnet,
            bridge=f"{tag}br",
            namespaces={name: f"{NAMESPACE_PREFIX}{run_id}-{name}" for name in names},
            host_links={name: f"{tag}v{index}" for index, name in enumerate(names)},
            addresses={name: str(hosts[index + 1]) for index, name in enumerate(names)},
            driver_address=str(hosts[0]),
        )

    def require_node(self, name: str) -> str:
        if name not in self.addresses:
            raise PlanError(f"unknown node {name!r}; nodes are {list(self.node_names)}")
        return name


class FaultSet:
    """Directed links (src, dst) whose traffic is dropped, accumulated until `clear()`.

    A packet drop loses every packet src sends to dst. A connection drop (`allow_replies`) loses
    only packets that do not belong to a connection dst already knows (conntrack established or
    related): src cannot open connections to dst, but dst's own connections to src get their
    replies, and connections src opened before the fault keep flowing.
    """

    def __init__(self) -> None:
        self._packet_drops: set[tuple[str, str]] = set()
        self._connection_drops: set[tuple[str, str]] = set()

    def add_partition(self, groups: Sequence[Sequence[str]], plan: NetworkPlan) -> None:
        group_of: dict[str, int] = {}
        for index, group in enumerate(groups):
            if not group:
                raise PlanError(f"partition group {index} is empty")
            for name in group:
                plan.require_node(name)
                if name in group_of:
                    raise PlanError(f"node {name!r} is in more than one partition group")
                group_of[name] = index
        if len(groups) < 2:
            raise PlanError("a partition needs at least two groups")
        for src, src_group in group_of.items():
            for dst, dst_group in group_of.items():
                if src_group != dst_group:
                    self._packet_drops.add((src, dst))

    def add_one_way(self, src: str, dst: str, plan: NetworkPlan, *, allow_replies: bool) -> None:
        plan.require_node(src)
        plan.require_node(dst)
        if src == dst:
            raise PlanError(f"one-way fault from {src!r} to itself")
        (self._connection_drops if allow_replies else self._packet_drops).add((src, dst))

    def clear(self) -> None:
        self._packet_drops.clear()
        self._connection_drops.clear()

    def blocked_links(self) -> list[tuple[str, str, str]]:
        """(src, dst, "packets" | "new-connections"), sorted; a packet drop hides a connection drop."""
        links = [(src, dst, "packets") for src, dst in self._packet_drops]
        links += [
            (src, dst, "new-connections")
            for src, dst in self._connection_drops
            if (src, dst) not in self._packet_drops
        ]
        return sorted(links)

    def describe(self) -> str:
        """One line per fault: `a <-/-> b` both ways, `a -/-> b` one way (packets or new connections)."""
        shown: list[str] = []
        links = self.blocked_links()
        both_ways = {(src, dst) for src, dst, kind in links if kind == "packets"}
        for src, dst, kind in links:
            if kind == "packets" and (dst, src) in both_ways:
                if src < dst:
                    shown.append(f"{src} <-/-> {dst}")
            elif kind == "packets":
                shown.append(f"{src} -/-> {dst}")
            else:
                shown.append(f"{src} -/-> {dst} (new connections only)")
        return "; ".join(shown) if shown else "none"

    def render_ruleset(self, node: str, plan: NetworkPlan) -> str | None:
        """nft script for `node`'s namespace, or None when nothing is dropped there.

        DROP rather than REJECT: a partitioned peer must look like a silent network, so TCP
        connects and writes hang until their own timeouts fire, as across a cut cable; a REJECT
        (ICMP unreachable / TCP RST) would fail them at once and test a far kinder failure.
        """
        rules: list[str] = []
        for src, dst, kind in self.blocked_links():
            if dst != node:
                continue
            address = plan.addresses[src]
            if kind == "new-connections":
                rules.append(f"ip saddr {address} ct state established,related accept")
            rules.append(f"ip saddr {address} drop")
        if not rules:
            return None
        body = "\n".join(f"        {rule}" for rule in rules)
        # Creating then deleting the table first makes the whole script one atomic replacement.
        return (
            f"table inet {TABLE_NAME}\n"
            f"delete table inet {TABLE_NAME}\n"
            f"table inet {TABLE_NAME} {{\n"
            "    chain input {\n"
            "        type filter hook input priority filter; policy accept;\n"
            f"{body}\n"
            "    }\n"
            "}\n"
        )


def render_hosts(mapping: Mapping[str, str]) -> str:
    """An /etc/hosts text: localhost plus one `address name` line per entry (addresses checked)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for hostname, address in sorted(mapping.items()):
        try:
            ipaddress.ip_address(address)
        except ValueError as exc:
            raise PlanError(f"hosts entry {hostname!r}: {address!r} is not an IP address") from exc
        if not hostname or any(char.isspace() or char == "#" for char in hostname):
            raise PlanError(f"hosts entry {hostname!r} is not a valid host name")
        lines.append(f"{address}\t{hostname}")
    return "\n".join(lines) + "\n"
