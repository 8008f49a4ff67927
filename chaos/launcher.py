"""A real N-node raftmq cluster for chaos runs: one `raftmq server` process per node.

Two network modes, chosen explicitly by the caller, never by fallback:
- `netns`: each node in its own network namespace with its own IP on a private bridge
  (`raftmq.chaos.netns`), so partitions are real packet drops between nodes while the driver
  (this process, in the root namespace) still reaches every node;
- `loopback`: every node on 127.0.0.1 with ports checked free; no partitions possible.

The launcher is synchronous (process control is quick); the HTTP views it needs are asked with
urllib from a worker thread by the async runner. Every process started gets SIGTERM from the
kernel should this process die, and `stop()` leaves none behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftmq.chaos.netns import Network

__all__ = ["LOOPBACK", "NETNS", "ChaosCluster", "ChaosNode", "LauncherError"]

LOOPBACK = "loopback"
NETNS = "netns"
_NETNS_RAFT_PORT = 7000
_NETNS_HTTP_PORT = 8000
_HTTP_TIMEOUT_S = 2.0
_STOP_TIMEOUT_S = 10.0
_KILL_WAIT_S = 10.0
_PR_SET_PDEATHSIG = 1


class LauncherError(RuntimeError):
    """The cluster could not be started or controlled as asked."""


@dataclass
class ChaosNode:
    name: str
    host: str
    raft_port: int
    http_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0

    @property
    def raft_address(self) -> str:
        return f"{self.host}:{self.raft_port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class ChaosCluster:
    """`start()` the nodes; `stop()` is safe at any time (also after a failed start)."""

    run_dir: Path
    size: int = 3
    mode: str = LOOPBACK
    fsync: str = "always"
    server_args: Sequence[str] = ()
    extra_env: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, ChaosNode] = field(init=False, default_factory=dict)
    network: Network | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.mode not in (LOOPBACK, NETNS):
            raise LauncherError(f"mode must be {LOOPBACK!r} or {NETNS!r}, not {self.mode!r}")
        if self.size < 1:
            raise LauncherError("a cluster needs at least one node")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.secret_file = self.run_dir / "cluster.secret"
        self.secret_file.write_text(secrets.token_hex(32) + "\n")
        self.secret_file.chmod(0o600)
        names = [f"n{index + 1}" for index in range(self.size)]
        if self.mode == NETNS:
            self.network = Network.create(secrets.token_hex(3), names)
            hosts = [(self.network.node_address(name), _NETNS_RAFT_PORT, _NETNS_HTTP_PORT)
                     for name in names]
        else:
            ports = _free_ports(2 * self.size)
            hosts = [("127.0.0.1", ports[2 * i], ports[2 * i + 1]) for i in range(self.size)]
        for name, (host, raft_port, http_port) in zip(names, hosts, strict=True):
            self.nodes[name] = ChaosNode(name, host, raft_port, http_port,
                                         self.run_dir / name, self.run_dir / f"{name}.log")

    # -- processes -----------------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes.values()]

    def command(self, name: str, members: Sequence[str] | None = None) -> list[str]:
        """The node's command line; `members` (default: every node) are its Raft peers."""
        node = self.nodes[name]
        peer_names = list(self.nodes) if members is None else list(members)
        peers = ",".join(f"{other}={self.nodes[other].raft_address}"
                         for other in peer_names if other != name)
        command = [
            sys.executable, "-m", "raftmq.broker.cli", "server", "--node-id", name,
            "--raft-bind", node.raft_address, "--peers", peers,
            "--http-bind", f"{node.host}:{node.http_port}", "--http-advertise-url", node.url,
            "--data-dir", str(node.data_dir), "--fsync", self.fsync, *self.server_args,
        ]
        if self.network is not None:
            return [*self.network.exec_prefix(name), *command]
        return command

    def start(self) -> None:
        for name in self.nodes:
            self.start_node(name)

    def start_node(self, name: str, members: Sequence[str] | None = None) -> None:
        node = self.nodes[name]
        if node.running:
            raise LauncherError(f"{name} is already running")
        if self.mode == LOOPBACK:
            _wait(lambda: _port_free(node.raft_port) and _port_free(node.http_port), 10.0,
                  f"ports of {name} to be free")
        node.starts += 1
        environment = {k: v for k, v in os.environ.items() if not k.startswith("RAFTMQ_")}
        environment["RAFTMQ_SECRET_FILE"] = str(self.secret_file)
        environment.update(self.extra_env)
        with open(node.log_path, "ab") as log_file:
            log_file.write(f"===== chaos: start #{node.starts} of {name} =====\n".encode())
            log_file.flush()
            node.process = subprocess.Popen(
                self.command(name, members), stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, env=environment, start_new_session=True,
                preexec_fn=_die_with_parent)
        node.paused = False

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the node and wait until it has exited (a paused node is resumed for SIGTERM)."""
        node = self.nodes[name]
        process = node.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        if node.paused and sig != signal.SIGKILL:
            process.send_signal(signal.SIGCONT)
        try:
            process.wait(timeout=_KILL_WAIT_S if sig == signal.SIGKILL else _STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=_KILL_WAIT_S)
        node.paused = False

    def pause(self, name: str) -> None:
        node = self.nodes[name]
        if node.process is not None and node.running:
            node.process.send_signal(signal.SIGSTOP)
            node.paused = True

    def resume(self, name: str) -> None:
        node = self.nodes[name]
        if node.process is not None and node.running and node.paused:
            node.process.send_signal(signal.SIGCONT)
        node.paused = False

    def wipe(self, name: str) -> None:
        if self.nodes[name].running:
            raise LauncherError(f"stop {name} before wiping its data")
        shutil.rmtree(self.nodes[name].data_dir, ignore_errors=True)

    def stop(self) -> None:
        """Every node stopped (SIGTERM, then SIGKILL past the deadline); the network removed."""
        try:
            for node in self.nodes.values():
                if node.process is not None and node.running:
                    if node.paused:
                        node.process.send_signal(signal.SIGCONT)
                    node.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + _STOP_TIMEOUT_S
            for node in self.nodes.values():
                if node.process is None:
                    continue
                try:
                    node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait(timeout=_KILL_WAIT_S)
        finally:
            if self.network is not None:
                self.network.teardown()
                self.network = None

    def __enter__(self) -> ChaosCluster:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- views (blocking: call from a worker thread in async code) ------------------------------

    def get_json(self, name: str, path: str) -> tuple[int, Any] | None:
        """(status, document) of a GET on one node; None when it does not answer."""
        url = self.nodes[name].url + path
        try:
            with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as reply:
                return reply.status, json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as error:
            with contextlib.suppress(ValueError):
                return error.code, json.loads(error.read() or b"null")
            return error.code, None
        except (OSError, ValueError):
            return None

    def leader(self) -> str | None:
        """The leader a majority of the running, unpaused nodes agree on, if any."""
        votes: dict[str, int] = {}
        for name, node in self.nodes.items():
            if not node.running or node.paused:
                continue
            answer = self.get_json(name, "/v1/cluster")
            if answer is None or not isinstance(answer[1], dict):
                continue
            leader = answer[1].get("leader_id")
            if isinstance(leader, str) and leader in self.nodes:
                votes[leader] = votes.get(leader, 0) + 1
        for leader, count in votes.items():
            if count > self.size // 2:
                return leader
        return None

    def wait_for_leader(self, timeout_s: float) -> str:
        return str(_wait(self.leader, timeout_s, "an agreed leader"))

    def ready(self, name: str) -> bool:
        answer = self.get_json(name, "/readyz")
        return answer is not None and answer[0] == 200

    def wait_ready(self, timeout_s: float) -> None:
        _wait(lambda: all(self.ready(name) for name, node in self.nodes.items() if node.running),
              timeout_s, "every running node ready")


def _wait(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise LauncherError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """Ports the OS hands out, checked free for both TCP binds the node makes."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in ports and _port_free(port):
            ports.append(port)
    return ports


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends SIGTERM when the launcher dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
