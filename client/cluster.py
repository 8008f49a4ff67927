"""Which node to talk to: seed URLs, DNS expansion, discovery, leader hints, failures.

Seeds are only a way in. Once a node's `GET /v1/cluster` document has been learned, the
client talks to the nodes it lists (their advertised `http_url`s) and keeps the seeds as a
last resort for when every known node looks down. Writes go to the leader when it is known
(followers would forward them anyway, one hop later); reads go to the first healthy node.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from urllib.parse import urlsplit

__all__ = ["DEFAULT_DOWN_S", "ClusterMap", "Resolver", "normalize_url", "resolve_host"]

# How long a node that failed is passed over while other nodes look healthy.
DEFAULT_DOWN_S = 1.0
# Bounds what a hostile or broken cluster document can make the client remember.
MAX_KNOWN_NODES = 1024

Resolver = Callable[[str, int], Sequence[str]]


def normalize_url(url: str) -> str:
    """`scheme://host:port` with no trailing slash; ValueError for anything else."""
    if not isinstance(url, str):
        raise ValueError(f"a node URL must be a string, not {type(url).__name__}")
    stripped = url.strip().rstrip("/")
    parts = urlsplit(stripped)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) node URL: {url!r}")
    if parts.path or parts.query or parts.fragment:
        raise ValueError(f"a node URL has no path, query or fragment: {url!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise ValueError(f"bad port in node URL {url!r}") from None
    return stripped


def resolve_host(host: str, port: int) -> list[str]:
    """Every distinct address a host name resolves to, in the resolver's order."""
    found: list[str] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = str(sockaddr[0])
        if address not in found:
            found.append(address)
    return found


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _expand(url: str, resolve: Resolver) -> list[str]:
    """One URL per address of a seed's host name (a headless Service names every pod)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if _is_ip_literal(host):
        return [url]
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = list(resolve(host, port))
    except OSError:
        return [url]  # not resolvable now: keep the name, a later attempt may resolve it
    if len(addresses) < 2:
        return [url]  # one address: the name itself is as good (and keeps TLS names valid)
    return [
        f"{parts.scheme}://{f'[{address}]' if ':' in address else address}:{port}"
        for address in addresses
    ]


class ClusterMap:
    def __init__(
        self,
        seeds: Sequence[str],
        *,
        resolve: Resolver = resolve_host,
        clock: Callable[[], float] = time.monotonic,
        down_s: float = DEFAULT_DOWN_S,
    ) -> None:
        if isinstance(seeds, str):
            seeds = [seeds]
        if not seeds:
            raise ValueError("at least one seed URL is needed")
        expanded: list[str] = []
        for seed in seeds:
            for url in _expand(normalize_url(seed), resolve):
                if url not in expanded:
                    expanded.append(url)
        self._seeds = expanded
        # The seeds until a cluster document names the nodes; leader hints add to it.
        self._nodes = list(expanded)
        self._discovered = False
        self._leader_url: str | None = None
        self._down_until: dict[str, float] = {}
        self._clock = clock
        self._down_s = down_s

    @property
    def urls(self) -> list[str]:
        """The cluster's nodes as learned from /v1/cluster (the seeds until then)."""
        return list(self._nodes)

    @property
    def seeds(self) -> list[str]:
        return list(self._seeds)

    @property
    def leader_url(self) -> str | None:
        return self._leader_url

    def note_leader(self, url: str | None) -> None:
        """A leader hint (X-Raftmq-Leader or an error's `leader`); empty means none known."""
        if not url:
            self._leader_url = None
            return
        try:
            leader = normalize_url(url)
        except ValueError:
            return  # a garbled hint is ignored, not trusted
        self._add_node(leader)
        self._leader_url = leader

    def note_failure(self, url: str) -> None:
        """The node did not answer: pass it over for a while, and try it last afterwards."""
        self._down_until[url] = self._clock() + self._down_s
        for known in (self._nodes, self._seeds):
            if url in known:
                known.remove(url)
                known.append(url)
        if url == self._leader_url:
            self._leader_url = None

    def note_success(self, url: str) -> None:
        self._down_until.pop(url, None)

    def is_down(self, url: str) -> bool:
        until = self._down_until.get(url)
        return until is not None and self._clock() < until

    def learn(self, cluster_document: Mapping[str, object]) -> None:
        """Add every node's `http_url` from a `GET /v1/cluster` document, and its leader."""
        urls = _document_urls(cluster_document)
        if urls and not self._discovered and _names_every_member(cluster_document):
            # The advertised URLs replace the seeds (which may be DNS names or load balancers),
            # but only once they are complete: a node that has not yet heard every member
            # announce its URL must not make the client forget the seeds that lead there.
            self._nodes = []
            self._discovered = True
        for url in urls:
            self._add_node(url)
        leader = cluster_document.get("leader_url")
        if isinstance(leader, str) and leader:
            self.note_leader(leader)

    def pick(self, *, write: bool, exclude: Collection[str] = ()) -> str:
        """The node for the next attempt: the leader for a write when known and healthy,
        otherwise the first healthy node not excluded; never fails while any URL is known."""
        leader = self._leader_url
        if write and leader is not None and leader not in exclude and not self.is_down(leader):
            return leader
        candidates = [*self._nodes, *(seed for seed in self._seeds if seed not in self._nodes)]
        for url in candidates:
            if url not in exclude and not self.is_down(url):
                return url
        for url in candidates:
            if url not in exclude:
                return url
        # Everything is excluded: the node that failed longest ago is the best bet.
        return min(candidates, key=lambda url: self._down_until.get(url, float("-inf")))

    def _add_node(self, url: str) -> None:
        if url not in self._nodes and len(self._nodes) < MAX_KNOWN_NODES:
            self._nodes.append(url)


def _names_every_member(document: Mapping[str, object]) -> bool:
    """Whether the document gives an `http_url` for itself and each of its Raft peers."""
    peers = document.get("peers")
    if not isinstance(document.get("http_url"), str) or not isinstance(peers, list):
        return False
    return all(isinstance(peer, Mapping) and isinstance(peer.get("http_url"), str)
               and peer.get("http_url") for peer in peers)


def _document_urls(document: Mapping[str, object]) -> list[str]:
    """The `http_url`s a cluster document names: this node, its `nodes` map and its peers."""
    raw: list[object] = [document.get("http_url")]
    nodes = document.get("nodes")
    if isinstance(nodes, Mapping):
        raw.extend(meta.get("http_url") for meta in nodes.values() if isinstance(meta, Mapping))
    peers = document.get("peers")
    if isinstance(peers, list):
        raw.extend(peer.get("http_url") for peer in peers if isinstance(peer, Mapping))
    urls: list[str] = []
    for value in raw:
        if not isinstance(value, str) or not value:
            continue
        try:
            url = normalize_url(value)
        except ValueError:
            continue
        if url not in urls:
            urls.append(url)
    return urls
