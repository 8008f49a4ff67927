"""A StatefulSet pod's identity from its name (raftmq.broker.k8s_identity), the server options
that turn it on (broker/config.py), a joining pod's wait for membership (k8s_join), and the
data dir's owner record (data_dir_identity)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from raftmq.broker.config import NodeSettings, parse_node_settings
from raftmq.broker.data_dir_identity import (
    IDENTITY_FILE,
    DataDirClaimError,
    DataDirOwner,
    claim_data_dir,
    read_owner,
)
from raftmq.broker.k8s_identity import (
    StatefulSetNames,
    cluster_members,
    derive_identity,
    join_peers,
    parse_domain,
    pod_ordinal,
)
from raftmq.broker.k8s_join import await_membership

NAMES = StatefulSetNames(statefulset="raftmq", headless_service="raftmq-headless",
                         namespace="prod", cluster_domain="cluster.local",
                         initial_cluster_size=3, raft_port=7000, http_port=8080)
# What the manifest's pod template gives every pod (deploy/k8s/statefulset.yaml).
POD_ENV = {
    "POD_NAMESPACE": "prod",
    "RAFTMQ_STATEFULSET": "raftmq",
    "RAFTMQ_HEADLESS_SERVICE": "raftmq-headless",
    "RAFTMQ_CLUSTER_DOMAIN": "cluster.local",
    "RAFTMQ_INITIAL_CLUSTER_SIZE": "3",
    "RAFTMQ_RAFT_PORT": "7000",
    "RAFTMQ_HTTP_PORT": "8080",
    "RAFTMQ_DATA_DIR": "/var/lib/raftmq",
    "RAFTMQ_SECRET": "s3cret",
}


def host(pod: str) -> str:
    return f"{pod}.raftmq-headless.prod.svc.cluster.local"


def settings(pod: str, argv: list[str] | None = None, **env: str) -> NodeSettings:
    return parse_node_settings(argv or [], {**POD_ENV, "POD_NAME": pod, **env})


def config_error(capsys: pytest.CaptureFixture[str], pod: str | None, env: dict[str, str]) -> str:
    environ = {**POD_ENV, **env} if pod is None else {**POD_ENV, "POD_NAME": pod, **env}
    with pytest.raises(SystemExit) as exited:
        parse_node_settings([], {k: v for k, v in environ.items() if v != ""})
    assert exited.value.code == 2
    return capsys.readouterr().err


# -- pure derivation ---------------------------------------------------------------------------


@pytest.mark.parametrize(("pod", "ordinal"), [("raftmq-0", 0), ("raftmq-2", 2), ("raftmq-10", 10)])
def test_pod_ordinal(pod: str, ordinal: int) -> None:
    assert pod_ordinal(pod, "raftmq") == ordinal


@pytest.mark.parametrize("pod", ["raftmq", "raftmq-", "raftmq-01", "raftmq-x", "other-0",
                                 "raftmq-1-2", "raftmq--1", "raftmq-\u0661", "raftmq-1000"])
def test_pod_ordinal_refuses_other_names(pod: str) -> None:
    with pytest.raises(ValueError, match=r"raftmq-<ordinal>|above 999"):
        pod_ordinal(pod, "raftmq")


def test_bootstrap_member_identity() -> None:
    identity = derive_identity("raftmq-1", NAMES)
    assert identity.node_id == "raftmq-1" and identity.ordinal == 1
    assert identity.raft_bind == "0.0.0.0:7000"
    assert identity.raft_advertise == f"{host('raftmq-1')}:7000"
    assert identity.http_bind == "0.0.0.0:8080"
    assert identity.http_advertise_url == f"http://{host('raftmq-1')}:8080"
    assert identity.seed_peers == {"raftmq-0": f"{host('raftmq-0')}:7000",
                                   "raftmq-2": f"{host('raftmq-2')}:7000"}
    assert identity.bootstrap_member and identity.join_via_urls == ()


def test_same_names_give_every_pod_the_same_membership() -> None:
    for size in (1, 3, 5):
        names = StatefulSetNames("raftmq", "raftmq-headless", "prod", "cluster.local", size,
                                 7000, 8080)
        identities = [derive_identity(f"raftmq-{i}", names) for i in range(size)]
        for identity in identities:
            membership = {**identity.seed_peers, identity.node_id: identity.raft_advertise}
            assert membership == {i.node_id: i.raft_advertise for i in identities}


def test_scaled_up_pod_joins_instead_of_bootstrapping() -> None:
    identity = derive_identity("raftmq-4", NAMES)
    assert identity.seed_peers == {}
    assert not identity.bootstrap_member
    assert identity.join_via_urls == tuple(f"http://{host(f'raftmq-{i}')}:8080" for i in range(4))


@pytest.mark.parametrize(("changes", "match"), [
    ({"initial_cluster_size": 0}, "initial cluster size"),
    ({"raft_port": 8080}, "must differ"),
    ({"http_port": 70000}, "1..65535"),
])
def test_statefulset_names_refuse_nonsense(changes: dict[str, int], match: str) -> None:
    fields = {"statefulset": "raftmq", "headless_service": "h", "namespace": "n",
              "cluster_domain": "cluster.local", "initial_cluster_size": 3, "raft_port": 7000,
              "http_port": 8080, **changes}
    with pytest.raises(ValueError, match=match):
        StatefulSetNames(**fields)  # type: ignore[arg-type]


def test_parse_domain() -> None:
    assert parse_domain("cluster.local.") == "cluster.local"
    for bad in ("", "Cluster.local", "a..b", "-a.b", "a_b.local"):
        with pytest.raises(ValueError, match="domain"):
            parse_domain(bad)


def test_cluster_members_and_join_peers() -> None:
    document = {"nodes": {"raftmq-0": {"address": "a0:7000", "http_url": "http://a0"},
                          "raftmq-3": {"address": "a3:7000"}, "junk": "x", "no-address": {}}}
    members = cluster_members(document)
    assert members == {"raftmq-0": "a0:7000", "raftmq-3": "a3:7000"}
    assert join_peers("raftmq-3", "a3:7000", members) == {"raftmq-0": "a0:7000"}
    assert join_peers("raftmq-4", "a4:7000", members) is None  # not added yet
    assert join_peers("raftmq-3", "elsewhere:7000", members) is None  # added at another address
    assert cluster_members({"nodes": ["not", "a", "map"]}) == {}
    assert cluster_members({}) == {}


# -- the server options ------------------------------------------------------------------------


def test_server_derives_everything_from_the_pod_environment() -> None:
    derived = settings("raftmq-2")
    assert derived.node_id == "raftmq-2"
    assert (derived.raft_bind, derived.http_bind) == ("0.0.0.0:7000", "0.0.0.0:8080")
    assert derived.raft_advertise == f"{host('raftmq-2')}:7000"
    assert derived.http_advertise_url == f"http://{host('raftmq-2')}:8080"
    assert derived.peers == {"raftmq-0": f"{host('raftmq-0')}:7000",
                             "raftmq-1": f"{host('raftmq-1')}:7000"}
    assert derived.data_dir == Path("/var/lib/raftmq")
    assert derived.cluster_name == "raftmq.prod.svc.cluster.local"
    assert derived.join_via_urls == ()


def test_explicit_options_win_over_the_derivation() -> None:
    derived = settings("raftmq-1", ["--node-id", "custom", "--peers", "raftmq-0=x:1",
                                    "--http-advertise-url", "http://lb:80"],
                       RAFTMQ_RAFT_ADVERTISE="raftmq-1.example:7000")
    assert derived.node_id == "custom"
    assert derived.peers == {"raftmq-0": "x:1"}
    assert derived.http_advertise_url == "http://lb:80"
    assert derived.raft_advertise == "raftmq-1.example:7000"
    assert derived.raft_bind == "0.0.0.0:7000"  # not given: still derived


def test_scaled_up_pod_settings_ask_the_members() -> None:
    derived = settings("raftmq-3")
    assert derived.peers == {}
    assert derived.join_via_urls == tuple(f"http://{host(f'raftmq-{i}')}:8080" for i in range(3))
    # Explicit peers: the operator decided, nothing to ask.
    assert settings("raftmq-3", ["--peers", "raftmq-0=x:1"]).join_via_urls == ()


def test_ports_and_domain_are_configurable() -> None:
    derived = settings("raftmq-0", RAFTMQ_RAFT_PORT="7100", RAFTMQ_HTTP_PORT="8100",
                       RAFTMQ_CLUSTER_DOMAIN="k8s.example")
    assert derived.raft_advertise == "raftmq-0.raftmq-headless.prod.svc.k8s.example:7100"
    assert derived.http_bind == "0.0.0.0:8100"


@pytest.mark.parametrize(("pod", "env", "match"), [
    (None, {}, "POD_NAME and POD_NAMESPACE"),
    ("raftmq-0", {"POD_NAMESPACE": ""}, "POD_NAME and POD_NAMESPACE"),
    ("web-0", {}, "not raftmq-<ordinal>"),
    ("raftmq-01", {}, "not raftmq-<ordinal>"),
    ("Raftmq-0", {}, "POD_NAME: expected a DNS label"),
    ("raftmq-0", {"RAFTMQ_HEADLESS_SERVICE": ""}, "needs --headless-service"),
    ("raftmq-0", {"RAFTMQ_INITIAL_CLUSTER_SIZE": ""}, "needs --initial-cluster-size"),
    ("raftmq-0", {"RAFTMQ_INITIAL_CLUSTER_SIZE": "three"}, "RAFTMQ_INITIAL_CLUSTER_SIZE"),
    ("raftmq-0", {"RAFTMQ_HTTP_PORT": "7000"}, "must differ"),
    ("raftmq-0", {"RAFTMQ_RAFT_PORT": "0"}, "RAFTMQ_RAFT_PORT: port must be 1..65535"),
    ("raftmq-0", {"RAFTMQ_STATEFULSET": "Bad_Name"}, "RAFTMQ_STATEFULSET"),
])
def test_statefulset_config_errors_are_clear(
    capsys: pytest.CaptureFixture[str], pod: str | None, env: dict[str, str], match: str
) -> None:
    assert match in config_error(capsys, pod, env)


def test_statefulset_options_without_a_statefulset_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["--node-id", "n1", "--raft-bind", "127.0.0.1:7001", "--secret", "s"]
    with pytest.raises(SystemExit):
        parse_node_settings([*base, "--headless-service", "h"], {})
    assert "--headless-service (or RAFTMQ_HEADLESS_SERVICE) only applies with --statefulset" \
        in capsys.readouterr().err
    # Without any of them nothing changes: no cluster recorded, nothing to ask.
    plain = parse_node_settings(base, {})
    assert (plain.cluster_name, plain.join_via_urls) == (None, ())


# -- a joining pod waits for its membership ----------------------------------------------------


async def test_joining_pod_waits_until_it_is_a_member(caplog: pytest.LogCaptureFixture) -> None:
    answers: list[Mapping[str, object] | None] = [
        None,  # nobody answers at first
        {"nodes": {"raftmq-0": {"address": "a0:7000"}}},  # answers, but not added yet
        {"nodes": {"raftmq-0": {"address": "a0:7000"}, "raftmq-3": {"address": "a3:7000"}}},
    ]
    asked: list[str] = []

    async def fetch(url: str, _timeout_s: float) -> Mapping[str, object] | None:
        asked.append(url)
        return answers.pop(0) if len(answers) > 1 else answers[0]

    caplog.set_level("INFO")
    peers = await await_membership("raftmq-3", "a3:7000", ["http://p0"], asyncio.Event(),
                                   fetch=fetch, retry_period_s=0.01)
    assert peers == {"raftmq-0": "a0:7000"}
    assert asked == ["http://p0"] * 3
    assert "none of the 1 lower-ordinal pods answered" in caplog.text


async def test_joining_pod_never_starts_alone_and_stops_when_told() -> None:
    stop = asyncio.Event()
    rounds = 0

    async def fetch(_url: str, _timeout_s: float) -> Mapping[str, object] | None:
        nonlocal rounds
        rounds += 1
        if rounds == 5:
            stop.set()
        return {"nodes": {"raftmq-0": {"address": "a0:7000"}}}

    assert await await_membership("raftmq-3", "a3:7000", ["http://p0"], stop, fetch=fetch,
                                  retry_period_s=0.01) is None
    assert rounds == 5


# -- the data dir's owner ------------------------------------------------------------------------


def test_data_dir_is_claimed_then_refused_to_others(tmp_path: Path) -> None:
    claim_data_dir(tmp_path, "raftmq-0", "raftmq.prod.svc.cluster.local")
    assert read_owner(tmp_path) == DataDirOwner("raftmq-0", "raftmq.prod.svc.cluster.local")
    claim_data_dir(tmp_path, "raftmq-0", "raftmq.prod.svc.cluster.local")  # itself: fine
    with pytest.raises(DataDirClaimError, match="belongs to node 'raftmq-0', not 'raftmq-1'"):
        claim_data_dir(tmp_path, "raftmq-1", "raftmq.prod.svc.cluster.local")
    with pytest.raises(DataDirClaimError, match="belongs to cluster"):
        claim_data_dir(tmp_path, "raftmq-0", "raftmq.staging.svc.cluster.local")
    assert read_owner(tmp_path) == DataDirOwner("raftmq-0", "raftmq.prod.svc.cluster.local")


def test_data_dir_without_cluster_adopts_the_first_one(tmp_path: Path) -> None:
    claim_data_dir(tmp_path, "n1", None)
    assert read_owner(tmp_path) == DataDirOwner("n1", None)
    claim_data_dir(tmp_path, "n1", "c1")
    assert read_owner(tmp_path) == DataDirOwner("n1", "c1")
    claim_data_dir(tmp_path, "n1", None)  # a start without a cluster keeps the record
    assert read_owner(tmp_path) == DataDirOwner("n1", "c1")


@pytest.mark.parametrize("content", [b"not json", b"[]", b'{"cluster": "c"}',
                                     b'{"node_id": 5}', b"{" + b" " * 5000 + b"}"])
def test_garbled_owner_record_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / IDENTITY_FILE).write_bytes(content)
    with pytest.raises(DataDirClaimError, match="not a raftmq identity record"):
        claim_data_dir(tmp_path, "n1", None)


def test_owner_record_is_plain_json(tmp_path: Path) -> None:
    claim_data_dir(tmp_path, "n1", "c1")
    assert json.loads((tmp_path / IDENTITY_FILE).read_text()) == {"node_id": "n1", "cluster": "c1"}
    assert not list(tmp_path.glob("*.tmp"))
