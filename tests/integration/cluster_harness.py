"""A real N-node raftmq cluster for integration tests: processes, ports, logs, faults.

Every node is a `raftmq server` subprocess on 127.0.0.1 with OS-picked free ports, its own
data dir and a log file (appended across restarts). The harness is synchronous (urllib),
so it works the same from sync and async tests; the servers are other processes, so a
blocking call in a test does not stall them. `stop()` always leaves no process behind, and
node processes also get SIGTERM from the kernel should the test process die (Linux).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from raftmq.broker.cli_dev import agreed_leader, leader_from_cluster_doc
from raftmq.broker.devcluster import die_with_parent_preexec

__all__ = [
    "LOCALHOST",
    "ClusterHarness",
    "HarnessNode",
    "WaitTimeout",
    "http_get_json",
    "pick_free_port_block",
    "pick_free_ports",
    "port_is_free",
    "wait_for",
]

T = TypeVar("T")
LOCALHOST = "127.0.0.1"
HTTP_TIMEOUT_S = 2.0
STOP_TIMEOUT_S = 15.0
KILL_WAIT_S = 10.0
PORT_PICK_ATTEMPTS = 200
# Ports handed out in this test process: never hand one out twice, even once it is free.
_handed_out: set[int] = set()
_live_processes: set[subprocess.Popen[bytes]] = set()


class WaitTimeout(AssertionError):
    """A `wait_for` condition did not hold before its deadline."""


def wait_for(predicate: Callable[[], T], timeout_s: float, *, interval_s: float = 0.05,
             message: str = "condition") -> T:
    """Call `predicate` until it returns something truthy and return that; raise on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"{message} not reached within {timeout_s:.1f} s "
                              f"(last value: {value!r})")
        time.sleep(interval_s)


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Bind the way the servers do (they set SO_REUSEADDR), so TIME_WAIT does not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def pick_free_ports(count: int, host: str = LOCALHOST) -> list[int]:
    """`count` distinct ports the OS reported free (bind to port 0), re-checked after close."""
    picked: list[int] = []
    for _ in range(PORT_PICK_ATTEMPTS):
        if len(picked) == count:
            return picked
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if port not in _handed_out and port_is_free(port, host):
            _handed_out.add(port)
            picked.append(port)
    raise RuntimeError(f"could not find {count} free ports on {host}")


def pick_free_port_block(count: int, host: str = LOCALHOST) -> int:
    """First port of `count` consecutive free ports (for `raftmq dev --base-port`)."""
    for _ in range(PORT_PICK_ATTEMPTS):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            base = int(probe.getsockname()[1])
        block = range(base, base + count)
        if block.stop <= 65536 and all(
            port not in _handed_out and port_is_free(port, host) for port in block
        ):
            _handed_out.update(block)
            return base
    raise RuntimeError(f"could not find {count} consecutive free ports on {host}")


def http_get_json(url: str, timeout_s: float = HTTP_TIMEOUT_S) -> tuple[int, object] | None:
    """(status, decoded JSON body) of a GET, or None when the node does not answer."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read() or b"null")
        except ValueError:
            return error.code, None
    except (OSError, ValueError):
        return None


@dataclass
class HarnessNode:
    node_id: str
    raft_port: int
    http_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def raft_address(self) -> str:
        return f"{LOCALHOST}:{self.raft_port}"

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.http_port}"

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class ClusterHarness:
    """Start with `start()` (or the `cluster` fixture); `stop()` is safe to call any time."""

    base_dir: Path
    size: int = 3
    fsync: str = "never"
    server_args: Sequence[str] = ()
    extra_env: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, HarnessNode] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.secret_file = self.base_dir / "cluster.secret"
        self.secret_file.write_text(f"harness-secret-{os.getpid()}-{id(self)}\n")
        self.secret_file.chmod(0o600)
        ports = pick_free_ports(2 * self.size)
        for index in range(self.size):
            node_id = f"n{index + 1}"
            self.nodes[node_id] = HarnessNode(
                node_id=node_id, raft_port=ports[2 * index], http_port=ports[2 * index + 1],
                data_dir=self.base_dir / node_id, log_path=self.base_dir / f"{node_id}.log",
            )

    def add_node(self, node_id: str) -> HarnessNode:
        """Plan one more node (fresh ports, not started), e.g. to add it to the membership;
        its --peers are every other node of the harness. `size` (the majority `leader_id`
        asks for) is left alone: set it to the new member count once the change is made."""
        if node_id in self.nodes:
            raise ValueError(f"{node_id} already exists")
        raft_port, http_port = pick_free_ports(2)
        node = HarnessNode(node_id=node_id, raft_port=raft_port, http_port=http_port,
                           data_dir=self.base_dir / node_id,
                           log_path=self.base_dir / f"{node_id}.log")
        self.nodes[node_id] = node
        return node

    # -- processes ---------------------------------------------------------------------------

    def command(self, node_id: str) -> list[str]:
        node = self.nodes[node_id]
        peers = ",".join(f"{other.node_id}={other.raft_address}"
                         for other in self.nodes.values() if other.node_id != node_id)
        return [
            sys.executable, "-m", "raftmq.broker.cli", "server",
            "--node-id", node_id, "--raft-bind", node.raft_address, "--peers", peers,
            "--http-bind", f"{LOCALHOST}:{node.http_port}", "--http-advertise-url", node.url,
            "--data-dir", str(node.data_dir), "--fsync", self.fsync, *self.server_args,
        ]

    def _environment(self) -> dict[str, str]:
        environment = {key: value for key, value in os.environ.items()
                       if not key.startswith("RAFTMQ_")}
        environment["RAFTMQ_SECRET_FILE"] = str(self.secret_file)
        environment.update(self.extra_env)
        return environment

    def start(self) -> None:
        for node_id in self.nodes:
            self.start_node(node_id)

    def start_node(self, node_id: str) -> HarnessNode:
        node = self.nodes[node_id]
        if node.is_running:
            raise RuntimeError(f"{node_id} is already running")
        # A just-killed node's ports are free at once (SO_REUSEADDR); wait in case they are not.
        wait_for(lambda: port_is_free(node.raft_port) and port_is_free(node.http_port),
                 timeout_s=10.0, message=f"ports of {node_id} free")
        node.starts += 1
        with open(node.log_path, "ab") as log_file:
            log_file.write(f"===== harness: start #{node.starts} of {node_id} =====\n".encode())
            log_file.flush()
            node.process = subprocess.Popen(
                self.command(node_id), stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, env=self._environment(), start_new_session=True,
                preexec_fn=die_with_parent_preexec(),
            )
        _live_processes.add(node.process)
        return node

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> int:
        """Send `sig` (SIGKILL by default) and wait for the process to exit; its exit code."""
        node = self.nodes[node_id]
        if node.process is None:
            raise RuntimeError(f"{node_id} was never started")
        process = node.process
        if process.poll() is None:
            process.send_signal(sig)
        timeout_s = KILL_WAIT_S if sig == signal.SIGKILL else STOP_TIMEOUT_S
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=KILL_WAIT_S)
            raise WaitTimeout(f"{node_id} did not exit within {timeout_s} s of "
                              f"{signal.Signals(sig).name}; killed") from None
        finally:
            _live_processes.discard(process)
        return code

    def terminate(self, node_id: str) -> int:
        """Graceful stop (SIGTERM); fails the test if the node needs more than STOP_TIMEOUT_S."""
        return self.kill(node_id, signal.SIGTERM)

    def restart(self, node_id: str, sig: int = signal.SIGKILL) -> HarnessNode:
        if self.nodes[node_id].is_running:
            self.kill(node_id, sig)
        return self.start_node(node_id)

    def wipe_data(self, node_id: str) -> None:
        """Delete a stopped node's data dir, so its next start joins as a brand-new replica."""
        if self.nodes[node_id].is_running:
            raise RuntimeError(f"stop {node_id} before wiping its data")
        shutil.rmtree(self.nodes[node_id].data_dir, ignore_errors=True)

    def pause(self, node_id: str) -> None:
        self._process(node_id).send_signal(signal.SIGSTOP)

    def resume(self, node_id: str) -> None:
        self._process(node_id).send_signal(signal.SIGCONT)

    def _process(self, node_id: str) -> subprocess.Popen[bytes]:
        process = self.nodes[node_id].process
        if process is None or process.poll() is not None:
            raise RuntimeError(f"{node_id} is not running")
        return process

    def running(self) -> list[str]:
        return [node_id for node_id, node in self.nodes.items() if node.is_running]

    def stop(self) -> None:
        """SIGTERM every running node, then SIGKILL whatever is left after the deadline."""
        processes = [node.process for node in self.nodes.values() if node.process is not None]
        _stop_processes(processes, STOP_TIMEOUT_S)

    # -- HTTP views ---------------------------------------------------------------------------

    def get_json(self, node_id: str, path: str) -> tuple[int, object] | None:
        return http_get_json(self.nodes[node_id].url + path)

    def cluster_view(self, node_id: str) -> dict[str, object] | None:
        reply = self.get_json(node_id, "/v1/cluster")
        if reply is None or reply[0] != 200 or not isinstance(reply[1], dict):
            return None
        return reply[1]

    def reported_leaders(self) -> dict[str, str | None]:
        """Running node id -> the leader it reports (None if it names none or is down)."""
        return {node_id: leader_from_cluster_doc(self.cluster_view(node_id))
                for node_id in self.running()}

    def leader_id(self) -> str | None:
        """The leader a majority of the whole cluster reports, if there is one."""
        leader = agreed_leader(list(self.reported_leaders().values()), self.size)
        return leader if leader is not None and self.nodes[leader].is_running else None

    def wait_for_leader(self, timeout_s: float = 30.0, exclude: Iterable[str] = ()) -> str:
        """Wait until a majority agrees on a running leader not in `exclude`."""
        excluded = set(exclude)

        def leader() -> str | None:
            self._fail_if_all_exited()
            found = self.leader_id()
            return found if found not in excluded else None

        found = wait_for(leader, timeout_s, interval_s=0.1, message="leader elected")
        assert found is not None
        return found

    def is_ready(self, node_id: str) -> bool:
        reply = self.get_json(node_id, "/readyz")
        return reply is not None and reply[0] == 200

    def wait_ready(self, node_ids: Iterable[str] | None = None, timeout_s: float = 30.0) -> None:
        for node_id in list(self.nodes if node_ids is None else node_ids):
            wait_for(functools.partial(self.is_ready, node_id), timeout_s, interval_s=0.1,
                     message=f"{node_id} ready")

    def _fail_if_all_exited(self) -> None:
        if self.nodes and not self.running():
            raise AssertionError("every node exited:\n" + self.dump_logs())

    # -- logs ---------------------------------------------------------------------------------

    def log_text(self, node_id: str) -> str:
        try:
            return self.nodes[node_id].log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def dump_logs(self, last_lines: int = 200) -> str:
        parts = []
        for node_id, node in self.nodes.items():
            lines = self.log_text(node_id).splitlines()[-last_lines:]
            parts.append(f"----- {node_id} ({node.log_path}, last {len(lines)} lines) -----")
            parts.extend(lines)
        return "\n".join(parts)


def _stop_processes(processes: Sequence[subprocess.Popen[bytes]], timeout_s: float) -> None:
    for process in processes:
        if process.poll() is None:
            _signal_quietly(process, signal.SIGCONT)  # a paused node cannot handle SIGTERM
            _signal_quietly(process, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_quietly(process, signal.SIGKILL)
            process.wait(timeout=KILL_WAIT_S)
        _live_processes.discard(process)


def _signal_quietly(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)


@atexit.register
def _kill_leftovers() -> None:
    # Last resort if a test process exits without running fixture teardown.
    for process in list(_live_processes):
        if process.poll() is None:
            _signal_quietly(process, signal.SIGKILL)
            process.wait(timeout=KILL_WAIT_S)
