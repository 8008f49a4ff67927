"""Real network partitions between broker processes: one Linux network namespace per node.

Layout of a run: a bridge in the root namespace carrying the driver's address (the first host of
the subnet), and per node a namespace `rmq-<run_id>-<node>` joined to the bridge by a veth pair.
Nodes share one layer-2 segment with the driver, so no routing and no ip_forward is needed, and
the namespaces have no default route: their traffic cannot leave the bridge.

Faults are nftables drops inside the receiving node's namespace (see `netns_rules`), so the
driver's own traffic to the nodes is never cut and the host's ruleset is never touched. Global
sysctls are left alone. One host setting matters and is only read: with `br_netfilter` loaded and
`net.bridge.bridge-nf-call-iptables=1`, frames crossing our bridge also pass the root namespace's
forward hooks, so a host firewall with a forward DROP policy would cut node-to-node traffic.

Every run records what it creates in /run/raftmq-netns/<run_id>.json with the creating process's
pid, so `cleanup_stale` can remove leftovers of crashed runs without touching live ones.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from raftmq.chaos.netns_rules import (
    LINK_PREFIX,
    NODE_INTERFACE,
    TABLE_NAME,
    FaultSet,
    NetworkPlan,
    PlanError,
    candidate_subnets,
    is_our_link,
    render_hosts,
    validate_name,
)

__all__ = [
    "HOSTS_ROOT",
    "STATE_DIR",
    "Network",
    "NetworkError",
    "available",
    "cleanup_stale",
]

STATE_DIR = Path("/run/raftmq-netns")
# `ip netns exec` bind-mounts /etc/netns/<namespace>/<file> over /etc/<file>.
HOSTS_ROOT = Path("/etc/netns")
_COMMAND_TIMEOUT_S = 30.0


class NetworkError(RuntimeError):
    """An `ip`/`nft` command failed; carries the command line and what it printed on stderr."""

    def __init__(self, command: Sequence[str], stderr: str, message: str | None = None) -> None:
        self.command = list(command)
        self.stderr = stderr.strip()
        super().__init__(message or f"`{' '.join(self.command)}` failed: {self.stderr or 'no stderr'}")


def _run(command: Sequence[str], stdin: str | None = None) -> str:
    try:
        completed = subprocess.run(
            list(command), input=stdin, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S
        )
    except FileNotFoundError as exc:
        raise NetworkError(command, str(exc), f"`{command[0]}` is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        message = f"`{' '.join(command)}` took over {_COMMAND_TIMEOUT_S:.0f} s"
        raise NetworkError(command, "", message) from exc
    if completed.returncode != 0:
        raise NetworkError(command, completed.stderr)
    return completed.stdout


def _namespaces() -> set[str]:
    # Lines look like "name" or "name (id: 3)".
    return {line.split()[0] for line in _run(["ip", "netns", "list"]).splitlines() if line.strip()}


def _links() -> set[str]:
    entries: list[dict[str, Any]] = json.loads(_run(["ip", "-j", "link", "show"]) or "[]")
    return {str(entry["ifname"]) for entry in entries}


def _kill_processes_in(namespace: str) -> None:
    """A process left inside keeps the namespace (and its veth end) alive after `ip netns del`."""
    for pid_text in _run(["ip", "netns", "pids", namespace]).split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_text), signal.SIGKILL)


def _remove_namespace(namespace: str) -> None:
    if namespace in _namespaces():
        _kill_processes_in(namespace)
        _run(["ip", "netns", "del", namespace])
    shutil.rmtree(HOSTS_ROOT / namespace, ignore_errors=True)


def _remove_link(link: str) -> None:
    if link in _links():
        try:
            _run(["ip", "link", "del", "dev", link])
        except NetworkError:
            # Deleting a namespace takes its veth peer down with it, a moment later: the link
            # may go between the listing and the delete. Gone is what we wanted.
            if link in _links():
                raise


def _process_start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name in parentheses may itself contain spaces.
    return int(stat.rsplit(")", 1)[1].split()[19])


def _used_networks() -> list[ipaddress.IPv4Network]:
    routes_json = _run(["ip", "-j", "-4", "route", "show", "table", "all"])
    routes: list[dict[str, Any]] = json.loads(routes_json or "[]")
    used = []
    for route in routes:
        destination = str(route.get("dst", "default"))
        if destination != "default":
            used.append(ipaddress.IPv4Network(destination, strict=False))
    return used


def _choose_subnet(run_id: str, subnet: str | None) -> ipaddress.IPv4Network:
    used = _used_networks()
    if subnet is not None:
        try:
            wanted = ipaddress.IPv4Network(subnet)
        except ValueError as exc:
            raise PlanError(f"subnet {subnet!r} is not an IPv4 network like 10.1.2.0/24") from exc
        clash = next((network for network in used if network.overlaps(wanted)), None)
        if clash is not None:
            raise PlanError(f"subnet {wanted} overlaps the host route {clash}; pick another")
        return wanted
    for candidate in candidate_subnets(run_id):
        if not any(network.overlaps(candidate) for network in used):
            return candidate
    raise PlanError(f"no free default subnet for run {run_id!r}; pass subnet=")


def available() -> tuple[bool, str]:
    """Whether namespaces and nftables can be used here, and if not, why (the caller decides)."""
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return False, f"`{tool}` is not installed (nft: apt-get install nftables)"
    probe = f"rmq-probe-{os.getpid()}"
    try:
        _run(["ip", "netns", "add", probe])
        try:
            _run(["ip", "netns", "exec", probe, "nft", "list", "ruleset"])
        finally:
            _run(["ip", "netns", "del", probe])
    except NetworkError as exc:
        return False, f"cannot use a network namespace with nftables: {exc}"
    return True, "root, ip netns and nft work"


class Network:
    """One run's namespaces, veths and bridge, and the faults in force between the nodes."""

    def __init__(self, plan: NetworkPlan) -> None:
        self.plan = plan
        self._faults = FaultSet()
        self._applied: dict[str, str | None] = {name: None for name in plan.node_names}
        self._marker = STATE_DIR / f"{plan.run_id}.json"
        self._created_hosts_root = False

    @classmethod
    def create(cls, run_id: str, node_names: Sequence[str], subnet: str | None = None) -> Network:
        """Build the whole network; on any failure removes what was made and raises."""
        network = cls(NetworkPlan.build(run_id, node_names, _choose_subnet(run_id, subnet)))
        network._check_no_collision()
        network._write_marker()
        try:
            network._build()
        except BaseException:
            with contextlib.suppress(NetworkError):
                network.teardown()
            raise
        return network

    def _check_no_collision(self) -> None:
        taken = self._marker.exists() or self.plan.bridge in _links()
        taken = taken or bool(set(self.plan.namespaces.values()) & _namespaces())
        if taken:
            raise NetworkError([], "", f"run {self.plan.run_id!r} already has a network (or a name clash)")

    def _write_marker(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        record = {
            "run_id": self.plan.run_id,
            "pid": os.getpid(),
            "start_ticks": _process_start_ticks(os.getpid()),
            "namespaces": sorted(self.plan.namespaces.values()),
            "links": [self.plan.bridge, *sorted(self.plan.host_links.values())],
        }
        self._marker.write_text(json.dumps(record))

    def _build(self) -> None:
        plan, prefix_len = self.plan, self.plan.subnet.prefixlen
        _run(["ip", "link", "add", "name", plan.bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{plan.driver_address}/{prefix_len}", "dev", plan.bridge])
        # No IPv6 link-local addresses anywhere: the fault rules match IPv4 sources only, and
        # nodes must not find a way around them over fe80::.
        _run(["ip", "link", "set", plan.bridge, "addrgenmode", "none", "up"])
        for name in plan.node_names:
            namespace, host_link = plan.namespaces[name], plan.host_links[name]
            _run(["ip", "netns", "add", namespace])
            # Creating the peer directly in the namespace avoids a clash with the host's own eth0.
            peer = ["peer", "name", NODE_INTERFACE, "netns", namespace]
            _run(["ip", "link", "add", host_link, "type", "veth", *peer])
            _run(["ip", "link", "set", host_link, "master", plan.bridge])
            _run(["ip", "link", "set", host_link, "addrgenmode", "none", "up"])
            node_cidr = f"{plan.addresses[name]}/{prefix_len}"
            _run(["ip", "-n", namespace, "addr", "add", node_cidr, "dev", NODE_INTERFACE])
            _run(["ip", "-n", namespace, "link", "set", NODE_INTERFACE, "addrgenmode", "none", "up"])
            _run(["ip", "-n", namespace, "link", "set", "lo", "up"])

    # -- addressing -------------------------------------------------------------------------

    @property
    def node_names(self) -> tuple[str, ...]:
        return self.plan.node_names

    @property
    def driver_address(self) -> str:
        """The root namespace's address on the bridge; nodes see the driver's traffic from it."""
        return self.plan.driver_address

    def node_address(self, name: str) -> str:
        return self.plan.addresses[self.plan.require_node(name)]

    def namespace(self, name: str) -> str:
        return self.plan.namespaces[self.plan.require_node(name)]

    def exec_prefix(self, name: str) -> list[str]:
        """Prepend to a command line to run it inside the node's namespace (with its hosts file)."""
        return ["ip", "netns", "exec", self.namespace(name)]

    def write_hosts(self, mapping: Mapping[str, str]) -> None:
        """Write the same hosts file (name -> address) for every node's namespace."""
        text = render_hosts(mapping)
        if not HOSTS_ROOT.is_dir():
            HOSTS_ROOT.mkdir(parents=True)
            self._created_hosts_root = True
        for namespace in self.plan.namespaces.values():
            directory = HOSTS_ROOT / namespace
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "hosts").write_text(text)

    # -- faults -----------------------------------------------------------------------------

    def partition(self, groups: Sequence[Sequence[str]]) -> None:
        """Nodes in different groups lose all packets to each other, both ways; nodes in no
        group are untouched. Adds to the faults already in force."""
        self._faults.add_partition(groups, self.plan)
        self._apply()

    def isolate(self, name: str) -> None:
        self.partition([[name], [other for other in self.plan.node_names if other != name]])

    def one_way(self, src: str, dst: str, *, allow_replies: bool = False) -> None:
        """Drop what src sends to dst while dst -> src still flows.

        For TCP a pure packet drop cuts both directions of every connection between the two
        (handshakes need both ways: dst's SYNs reach src but src's SYN-ACKs are lost); only
        datagrams are truly one-way. With `allow_replies`, only src's new connections to dst are
        dropped: dst can still connect to src and get answers, and connections src opened
        before the fault keep working.
        """
        self._faults.add_one_way(src, dst, self.plan, allow_replies=allow_replies)
        self._apply()

    def heal(self) -> None:
        """Remove every fault rule; TCP retransmissions then resume the stalled connections."""
        self._faults.clear()
        self._apply()

    def partitions_in_force(self) -> str:
        return self._faults.describe()

    def blocked_links(self) -> list[tuple[str, str, str]]:
        """(src, dst, "packets" | "new-connections") for a history's nemesis detail."""
        return self._faults.blocked_links()

    def _apply(self) -> None:
        for name in self.plan.node_names:
            ruleset = self._faults.render_ruleset(name, self.plan)
            if ruleset == self._applied[name]:
                continue
            nft = [*self.exec_prefix(name), "nft"]
            if ruleset is None:
                _run([*nft, "delete", "table", "inet", TABLE_NAME])
            else:
                _run([*nft, "-f", "-"], stdin=ruleset)
            self._applied[name] = ruleset

    # -- teardown ---------------------------------------------------------------------------

    def teardown(self) -> None:
        """Remove everything this run created; safe to call twice or after a partial create.

        Processes still running inside the namespaces are killed, since they would otherwise
        keep the namespaces alive, unseen by `ip netns list`."""
        links = [*self.plan.host_links.values(), self.plan.bridge]
        _remove_recorded(list(self.plan.namespaces.values()), links)
        self._marker.unlink(missing_ok=True)
        # Only if this run made it, and only when empty: another run may be using it.
        if self._created_hosts_root:
            with contextlib.suppress(OSError):
                HOSTS_ROOT.rmdir()
        self._applied = {name: None for name in self.plan.node_names}

    def __enter__(self) -> Network:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.teardown()


def _remove_recorded(namespaces: Sequence[str], links: Sequence[str]) -> None:
    """Try every removal, then raise the first failure, so one stuck item leaves no others behind."""
    errors: list[NetworkError] = []
    for namespace in namespaces:
        try:
            _remove_namespace(namespace)
        except NetworkError as exc:
            errors.append(exc)
    # Deleting a namespace normally takes its veth pair with it; host ends are removed in case not.
    for link in links:
        try:
            _remove_link(link)
        except NetworkError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


def _owner_alive(record: Mapping[str, Any]) -> bool:
    pid = record.get("pid")
    if not isinstance(pid, int):
        return False
    ticks = _process_start_ticks(pid)
    # A recycled pid has another start time.
    return ticks is not None and ticks == record.get("start_ticks")


def cleanup_stale(prefix: str = "rmq-") -> list[str]:
    """Remove namespaces, links and hosts dirs of runs whose creating process is gone.

    Anything named like ours (namespaces and /etc/netns dirs starting with `prefix`, links shaped
    like ours) that no live run has recorded is removed too, so do not run it while another
    process is inside `Network.create`. Returns what was removed."""
    validate_name("prefix", prefix.rstrip("-"), 20)
    if len(prefix) < 3:
        raise PlanError(f"prefix {prefix!r} is too short to be safe")
    claimed: set[str] = set()
    removed: list[str] = []
    for marker in sorted(STATE_DIR.glob("*.json")) if STATE_DIR.is_dir() else []:
        try:
            record: dict[str, Any] = json.loads(marker.read_text())
        except (OSError, ValueError):
            record = {}
        names = [str(item) for item in record.get("namespaces", []) + record.get("links", [])]
        if _owner_alive(record):
            claimed.update(names)
        else:
            marker.unlink(missing_ok=True)
            removed.append(str(marker))
    for namespace in sorted(_namespaces()):
        if namespace.startswith(prefix) and namespace not in claimed:
            _remove_namespace(namespace)
            removed.append(namespace)
    for link in sorted(_links()):
        if is_our_link(link, LINK_PREFIX) and link not in claimed:
            _remove_link(link)
            removed.append(link)
    if HOSTS_ROOT.is_dir():
        for directory in sorted(HOSTS_ROOT.glob(f"{prefix}*")):
            if directory.name not in claimed:
                shutil.rmtree(directory, ignore_errors=True)
                removed.append(str(directory))
    return removed
