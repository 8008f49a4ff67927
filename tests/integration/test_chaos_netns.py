"""Real partitions between processes in network namespaces (raftmq.chaos.netns).

One probe agent (tests/integration/netns_agent.py) runs inside each node's namespace; the test
process is the driver in the root namespace and asks agents to connect or send datagrams to each
other. Needs root, `ip netns` and nftables: skipped with `available()`'s reason otherwise.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from raftmq.chaos import netns
from raftmq.chaos.netns import Network, NetworkError, available, cleanup_stale
from raftmq.chaos.netns_rules import NODE_INTERFACE, FaultSet, NetworkPlan, PlanError, render_hosts

pytestmark = pytest.mark.integration

AGENT_SCRIPT = Path(__file__).with_name("netns_agent.py")
PROBE_TIMEOUT_S = 0.5
START_TIMEOUT_S = 10.0


@dataclass
class Agent:
    name: str
    address: str
    process: subprocess.Popen[str]
    tcp_port: int
    udp_port: int


def _run_id(tag: str) -> str:
    return f"t{os.getpid() % 100000}{tag}{secrets.token_hex(2)}"


def _read_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            raise AssertionError(f"no output from {process.args!r} within {timeout_s} s")
    return process.stdout.readline().strip()


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()


def _start_agent(network: Network, name: str) -> Agent:
    command = [*network.exec_prefix(name), sys.executable, str(AGENT_SCRIPT), name]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        word, tcp_port, udp_port = _read_line(process, START_TIMEOUT_S).split()
        assert word == "READY"
    except BaseException:
        _stop(process)
        raise
    return Agent(name, network.node_address(name), process, int(tcp_port), int(udp_port))


def _ask(agent: Agent, command: str) -> str:
    """Driver -> agent: one command, one reply line."""
    with socket.create_connection((agent.address, agent.tcp_port), timeout=5.0) as connection:
        reader = connection.makefile("rb")
        assert reader.readline().decode().strip() == f"HELLO {agent.name}"
        connection.sendall(f"{command}\n".encode())
        return reader.readline().decode().strip()


def _driver_hello(agent: Agent) -> str:
    try:
        with socket.create_connection((agent.address, agent.tcp_port), timeout=PROBE_TIMEOUT_S) as connection:
            return connection.makefile("rb").readline().decode().strip()
    except TimeoutError:
        return "timeout"


def _tcp(src: Agent, dst: Agent) -> str:
    return _ask(src, f"TCP {dst.address} {dst.tcp_port} {PROBE_TIMEOUT_S}")


def _send_datagram(src: Agent, dst: Agent, payload: str) -> None:
    assert _ask(src, f"UDP {dst.address} {dst.udp_port} {payload}") == "SENT"


def _seen_within(agent: Agent, payload: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if _ask(agent, f"SEEN {payload}") == "YES":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def _links() -> str:
    return subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def netns_usable() -> None:
    usable, reason = available()
    if not usable:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster_net(netns_usable: None) -> Iterator[tuple[Network, dict[str, Agent]]]:
    network = Network.create(_run_id("m"), ["a", "b", "c"])
    agents: dict[str, Agent] = {}
    try:
        for name in network.node_names:
            agents[name] = _start_agent(network, name)
        yield network, agents
    finally:
        for agent in agents.values():
            _stop(agent.process)
        network.teardown()


@pytest.fixture
def net(cluster_net: tuple[Network, dict[str, Agent]]) -> Iterator[tuple[Network, dict[str, Agent]]]:
    yield cluster_net
    cluster_net[0].heal()


def test_driver_reaches_every_node(net: tuple[Network, dict[str, Agent]]) -> None:
    network, agents = net
    assert network.driver_address not in {agent.address for agent in agents.values()}
    for name, agent in agents.items():
        assert _driver_hello(agent) == f"HELLO {name}"
        # IPv4 only: the fault rules match IPv4 sources, so no IPv6 path may exist around them.
        ipv6_command = ["ip", "-n", network.namespace(name), "-6", "addr", "show", "dev", NODE_INTERFACE]
        ipv6 = subprocess.run(ipv6_command, capture_output=True, text=True)
        assert ipv6.returncode == 0 and ipv6.stdout.strip() == ""


def test_nodes_reach_each_other(net: tuple[Network, dict[str, Agent]]) -> None:
    _, agents = net
    for src in agents.values():
        for dst in agents.values():
            if src is not dst:
                assert _tcp(src, dst) == f"OK HELLO {dst.name}", (src.name, dst.name)


def test_partition_cuts_only_links_between_groups(net: tuple[Network, dict[str, Agent]]) -> None:
    network, agents = net
    a, b, c = agents["a"], agents["b"], agents["c"]
    network.partition([["a"], ["b", "c"]])
    assert network.partitions_in_force() == "a <-/-> b; a <-/-> c"
    # Dropped, not rejected: the connect hangs until the prober's own timeout.
    assert _tcp(a, b) == "FAIL timeout"
    assert _tcp(b, a) == "FAIL timeout"
    assert _tcp(c, a) == "FAIL timeout"
    assert _tcp(b, c) == "OK HELLO c"
    assert _tcp(c, b) == "OK HELLO b"
    assert _driver_hello(a) == "HELLO a"
    # The rules live in the nodes' namespaces only; the host's own ruleset is untouched.
    host_ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True)
    assert "raftmq_chaos" not in host_ruleset.stdout


def test_isolate_cuts_one_node_from_all_others(net: tuple[Network, dict[str, Agent]]) -> None:
    network, agents = net
    network.isolate("c")
    assert network.partitions_in_force() == "a <-/-> c; b <-/-> c"
    assert _tcp(agents["a"], agents["c"]) == "FAIL timeout"
    assert _tcp(agents["a"], agents["b"]) == "OK HELLO b"
    assert _driver_hello(agents["c"]) == "HELLO c"


def test_one_way_drops_datagrams_in_one_direction_only(net: tuple[Network, dict[str, Agent]]) -> None:
    network, agents = net
    a, b = agents["a"], agents["b"]
    network.one_way("a", "b")
    assert network.partitions_in_force() == "a -/-> b"
    dropped, delivered = f"ab-{secrets.token_hex(4)}", f"ba-{secrets.token_hex(4)}"
    _send_datagram(a, b, dropped)
    _send_datagram(b, a, delivered)
    assert _seen_within(a, delivered, 3.0)
    # The datagram sent first in the blocked direction had every chance to arrive by now.
    assert not _seen_within(b, dropped, PROBE_TIMEOUT_S)
    # With packets dropped one way, TCP fails both ways: b's SYN reaches a, a's SYN-ACK is lost.
    assert _tcp(a, b) == "FAIL timeout"
    assert _tcp(b, a) == "FAIL timeout"


def test_one_way_allowing_replies_blocks_only_new_connections_from_src(
    net: tuple[Network, dict[str, Agent]],
) -> None:
    network, agents = net
    network.one_way("a", "b", allow_replies=True)
    assert network.blocked_links() == [("a", "b", "new-connections")]
    assert _tcp(agents["a"], agents["b"]) == "FAIL timeout"
    assert _tcp(agents["b"], agents["a"]) == "OK HELLO a"


def test_heal_restores_every_link(net: tuple[Network, dict[str, Agent]]) -> None:
    network, agents = net
    network.partition([["a"], ["b", "c"]])
    network.one_way("b", "c")
    assert _tcp(agents["b"], agents["c"]) == "FAIL timeout"
    network.heal()
    assert network.partitions_in_force() == "none"
    for src in agents.values():
        for dst in agents.values():
            if src is not dst:
                assert _tcp(src, dst) == f"OK HELLO {dst.name}", (src.name, dst.name)
    payload = f"healed-{secrets.token_hex(4)}"
    _send_datagram(agents["a"], agents["b"], payload)
    assert _seen_within(agents["b"], payload, 3.0)
    for name in network.node_names:
        ruleset = subprocess.run(
            [*network.exec_prefix(name), "nft", "list", "ruleset"], capture_output=True, text=True, check=True
        ).stdout
        assert "raftmq_chaos" not in ruleset


def test_teardown_removes_namespaces_links_hosts_and_processes(netns_usable: None) -> None:
    network = Network.create(_run_id("td"), ["n1", "n2"])
    agent: Agent | None = None
    try:
        network.write_hosts({"raftmq-1.raftmq": network.node_address("n1"), "driver": network.driver_address})
        resolve = "import socket; print(socket.gethostbyname('raftmq-1.raftmq'))"
        command = [*network.exec_prefix("n2"), sys.executable, "-c", resolve]
        resolved = subprocess.run(command, capture_output=True, text=True, check=True)
        assert resolved.stdout.strip() == network.node_address("n1")
        agent = _start_agent(network, "n1")
        network.teardown()
        # The agent left running inside was killed by the teardown.
        assert agent.process.wait(timeout=5) == -signal.SIGKILL
        network.teardown()
    finally:
        if agent is not None:
            _stop(agent.process)
        network.teardown()
    namespaces, links = _namespaces(), _links()
    for namespace in network.plan.namespaces.values():
        assert namespace not in namespaces
        assert not (netns.HOSTS_ROOT / namespace).exists()
    for link in [network.plan.bridge, *network.plan.host_links.values()]:
        assert link not in links
    assert not (netns.STATE_DIR / f"{network.plan.run_id}.json").exists()


def test_failed_create_removes_what_it_made(netns_usable: None, monkeypatch: pytest.MonkeyPatch) -> None:
    real_run = netns._run

    def failing_on_second_veth(command: list[str], stdin: str | None = None) -> str:
        if "veth" in command and command[3].endswith("v1"):
            raise NetworkError(command, "injected failure")
        return real_run(command, stdin)

    monkeypatch.setattr(netns, "_run", failing_on_second_veth)
    run_id = _run_id("pf")
    with pytest.raises(NetworkError, match="injected failure"):
        Network.create(run_id, ["x", "y", "z"])
    assert f"rmq-{run_id}-" not in _namespaces()
    # Link names depend only on the run id.
    plan = NetworkPlan.build(run_id, ["x", "y", "z"], ipaddress.IPv4Network("10.9.9.0/24"))
    links = _links()
    for link in [plan.bridge, *plan.host_links.values()]:
        assert link not in links
    assert not (netns.STATE_DIR / f"{run_id}.json").exists()


def test_cleanup_stale_removes_a_crashed_run_and_spares_live_ones(
    cluster_net: tuple[Network, dict[str, Agent]],
) -> None:
    live_network, agents = cluster_net
    run_id = _run_id("cr")
    crashing = (
        "import sys, time\n"
        "from raftmq.chaos.netns import Network\n"
        "Network.create(sys.argv[1], ['x', 'y'])\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", crashing, run_id], stdout=subprocess.PIPE, text=True)
    try:
        assert _read_line(process, START_TIMEOUT_S) == "ready"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert f"rmq-{run_id}-x" in _namespaces()
        removed = cleanup_stale()
    finally:
        _stop(process)
    assert {f"rmq-{run_id}-x", f"rmq-{run_id}-y"} <= set(removed)
    assert f"rmq-{run_id}-" not in _namespaces()
    assert not any(link.startswith(f"rmq-{run_id}") for link in _links().split())
    for namespace in live_network.plan.namespaces.values():
        assert namespace in _namespaces()
    assert _driver_hello(agents["a"]) == "HELLO a"


def test_command_failure_names_command_and_stderr(netns_usable: None) -> None:
    with pytest.raises(NetworkError) as caught:
        netns._run(["ip", "link", "del", "dev", "rmqnosuchlink"])
    assert "ip link del dev rmqnosuchlink" in str(caught.value)
    assert caught.value.stderr


def test_bad_plans_and_faults_are_refused() -> None:
    plan = NetworkPlan.build("r1", ["a", "b", "c"], ipaddress.IPv4Network("10.9.9.0/29"))
    faults = FaultSet()
    with pytest.raises(PlanError, match="unknown node"):
        faults.add_partition([["a"], ["zz"]], plan)
    with pytest.raises(PlanError, match="more than one"):
        faults.add_partition([["a", "b"], ["b", "c"]], plan)
    with pytest.raises(PlanError, match="empty"):
        faults.add_partition([["a"], []], plan)
    with pytest.raises(PlanError, match="itself"):
        faults.add_one_way("a", "a", plan, allow_replies=False)
    with pytest.raises(PlanError, match="node name"):
        NetworkPlan.build("r1", ["a/../b"], plan.subnet)
    with pytest.raises(PlanError, match="addresses"):
        NetworkPlan.build("r1", [f"n{index}" for index in range(6)], plan.subnet)
    with pytest.raises(PlanError, match="not an IP address"):
        render_hosts({"node": "not-an-ip"})


def test_rules_drop_in_the_receivers_input_by_sender_address() -> None:
    plan = NetworkPlan.build("r2", ["a", "b", "c"], ipaddress.IPv4Network("10.9.8.0/24"))
    faults = FaultSet()
    faults.add_one_way("a", "b", plan, allow_replies=False)
    ruleset_b = faults.render_ruleset("b", plan)
    assert ruleset_b is not None and f"ip saddr {plan.addresses['a']} drop" in ruleset_b
    assert "reject" not in ruleset_b
    assert faults.render_ruleset("a", plan) is None
    assert plan.driver_address not in ruleset_b
    assert len(plan.bridge) <= 15 and all(len(link) <= 15 for link in plan.host_links.values())
