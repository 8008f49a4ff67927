"""ClusterMap: seeds and their DNS expansion, learning nodes from /v1/cluster, leader hints,
failures, and which node an attempt goes to."""

from __future__ import annotations

import socket
from collections.abc import Sequence

import pytest

from raftmq.client.cluster import ClusterMap, normalize_url, resolve_host

A, B, C = "http://10.0.0.1:8080", "http://10.0.0.2:8080", "http://10.0.0.3:8080"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _document(leader: str | None, *urls: str) -> dict[str, object]:
    """The shape of GET /v1/cluster: this node, the `nodes` directory and the peers."""
    return {
        "node_id": "n1", "http_url": urls[0], "leader_url": leader,
        "nodes": {f"n{i + 1}": {"http_url": url} for i, url in enumerate(urls)},
        "peers": [{"node_id": f"n{i + 1}", "http_url": url} for i, url in enumerate(urls[1:], 1)],
    }


def _map(*seeds: str, clock: FakeClock | None = None) -> ClusterMap:
    return ClusterMap(list(seeds), clock=clock or FakeClock(), down_s=1.0)


# -- seeds and DNS ------------------------------------------------------------------------------


def test_seeds_are_normalized_and_deduplicated() -> None:
    cluster = _map("http://10.0.0.1:8080/", " http://10.0.0.1:8080", B)
    assert cluster.urls == [A, B] and cluster.seeds == [A, B]
    assert ClusterMap("http://10.0.0.9:1").urls == ["http://10.0.0.9:1"]  # one URL as a str


@pytest.mark.parametrize("bad", ["", "10.0.0.1:8080", "ftp://x:1", "http://", "http://x:99999",
                                 "http://x:1/v1", "http://x:1?a=b"])
def test_bad_seed_urls_are_refused_clearly(bad: str) -> None:
    with pytest.raises(ValueError):
        ClusterMap([bad])
    with pytest.raises(ValueError, match="at least one"):
        ClusterMap([])


def test_a_name_resolving_to_several_addresses_expands_to_one_url_each() -> None:
    def resolve(host: str, port: int) -> Sequence[str]:
        assert (host, port) == ("raftmq-headless", 8080)
        return ["10.1.0.1", "10.1.0.2", "fd00::3"]

    cluster = ClusterMap(["http://raftmq-headless:8080", "http://10.1.0.2:8080"], resolve=resolve)
    assert cluster.urls == ["http://10.1.0.1:8080", "http://10.1.0.2:8080", "http://[fd00::3]:8080"]


def test_default_ports_and_unresolvable_names() -> None:
    seen: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> Sequence[str]:
        seen.append((host, port))
        if host == "gone":
            raise socket.gaierror("Name or service not known")
        return ["10.2.0.1", "10.2.0.2"]

    cluster = ClusterMap(["https://pods", "http://gone:81"], resolve=resolve)
    # An unresolvable name stays as it is: it may resolve by the time it is tried.
    assert cluster.urls == ["https://10.2.0.1:443", "https://10.2.0.2:443", "http://gone:81"]
    assert seen == [("pods", 443), ("gone", 81)]


def test_localhost_through_the_real_resolver() -> None:
    addresses = resolve_host("localhost", 8080)
    assert addresses and all(socket.inet_pton(
        socket.AF_INET6 if ":" in address else socket.AF_INET, address) for address in addresses)
    urls = ClusterMap(["http://localhost:8080"]).urls
    if len(addresses) == 1:
        assert urls == ["http://localhost:8080"]  # one address: the name is kept
    else:
        assert len(urls) == len(addresses) and "http://localhost:8080" not in urls
    # IP literals are never looked up.
    assert ClusterMap(["http://127.0.0.1:8080", "http://[::1]:8080"]).urls == [
        "http://127.0.0.1:8080", "http://[::1]:8080"]


def test_normalize_url() -> None:
    assert normalize_url("https://Host:1/") == "https://Host:1"
    with pytest.raises(ValueError):
        normalize_url("http://host:1/path")


# -- learning -----------------------------------------------------------------------------------


def test_learning_replaces_the_seeds_by_the_advertised_nodes() -> None:
    cluster = _map("http://seed-name:8080")
    cluster.learn(_document(B, A, B, C))
    assert cluster.urls == [A, B, C]
    assert cluster.leader_url == B
    assert cluster.seeds == ["http://seed-name:8080"]  # kept as the last resort


def test_a_document_missing_some_members_urls_keeps_the_seeds() -> None:
    """A node that has not yet heard every member announce itself lists only part of the
    cluster: the client adds what it names but keeps the seeds, until a complete answer."""
    cluster = _map("http://seed-name:8080")
    partial = _document(None, A, B)
    partial["peers"] = [{"node_id": "n2", "http_url": B}, {"node_id": "n3", "http_url": None}]
    cluster.learn(partial)
    assert cluster.urls == ["http://seed-name:8080", A, B]
    cluster.learn(_document(None, A, B, C))
    assert cluster.urls == [A, B, C]


def test_learning_merges_and_ignores_garbage() -> None:
    cluster = _map(A)
    cluster.learn(_document(None, A, B))
    cluster.learn({"http_url": 42, "nodes": {"n9": "not a map", "n3": {"http_url": C}},
                   "peers": [{"http_url": "ftp://nope"}, "junk", {"http_url": None}],
                   "leader_url": ""})
    assert cluster.urls == [A, B, C]
    assert cluster.leader_url is None
    cluster.learn({"nodes": "junk", "peers": "junk"})
    assert cluster.urls == [A, B, C]


# -- leader hints -------------------------------------------------------------------------------


def test_leader_hints_steer_writes_but_not_reads() -> None:
    cluster = _map(A, B, C)
    assert cluster.pick(write=True) == A  # no leader known: first node
    cluster.note_leader(C)
    assert cluster.pick(write=True) == C
    assert cluster.pick(write=False) == A
    cluster.note_leader("")  # "no leader known" from a node that lost it
    assert cluster.leader_url is None and cluster.pick(write=True) == A


def test_a_hint_naming_an_unknown_node_adds_it() -> None:
    cluster = _map(A)
    cluster.note_leader("http://10.0.0.7:8080/")
    assert cluster.leader_url == "http://10.0.0.7:8080"
    assert "http://10.0.0.7:8080" in cluster.urls
    cluster.note_leader("garbage")  # ignored, the previous hint stands
    assert cluster.leader_url == "http://10.0.0.7:8080"


# -- failures and choice ------------------------------------------------------------------------


def test_a_failed_node_is_passed_over_then_tried_last() -> None:
    clock = FakeClock()
    cluster = _map(A, B, C, clock=clock)
    cluster.note_failure(A)
    assert cluster.is_down(A) and cluster.pick(write=False) == B
    assert cluster.urls == [B, C, A]
    clock.now += 1.5
    assert not cluster.is_down(A) and cluster.pick(write=False) == B


def test_a_failed_leader_is_forgotten() -> None:
    cluster = _map(A, B, C)
    cluster.note_leader(B)
    cluster.note_failure(B)
    assert cluster.leader_url is None
    assert cluster.pick(write=True) == A


def test_success_clears_the_down_mark() -> None:
    cluster = _map(A, B)
    cluster.note_failure(A)
    cluster.note_success(A)
    assert not cluster.is_down(A)


def test_exclusions_and_the_all_down_fallback() -> None:
    clock = FakeClock()
    cluster = _map(A, B, C, clock=clock)
    assert cluster.pick(write=False, exclude={A}) == B
    cluster.note_leader(A)
    assert cluster.pick(write=True, exclude={A}) == B
    for url, offset in ((B, 0.0), (A, 0.1), (C, 0.2)):
        clock.now += offset
        cluster.note_failure(url)
    # All down, none excluded: the first in order (failures moved to the back).
    assert cluster.pick(write=False) == B
    # All excluded: the node that failed longest ago.
    assert cluster.pick(write=False, exclude={A, B, C}) == B


def test_seeds_are_the_last_resort_after_learned_nodes() -> None:
    cluster = _map("http://seed:1")
    cluster.learn(_document(None, A, B))
    cluster.note_failure(A)
    cluster.note_failure(B)
    assert cluster.pick(write=False) == "http://seed:1"
