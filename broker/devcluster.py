"""Supervision of a local N-node cluster of real `raftmq server` processes (`raftmq dev`).

Each node is its own OS process (own data dir, own log file), started in its own session so
a Ctrl-C in the terminal reaches only the supervisor, which then stops the nodes in order:
SIGTERM, a deadline, SIGKILL. On Linux each node also asks the kernel for SIGTERM should
the supervisor die without cleaning up, so no node outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    "DEV_MARKER_FILE",
    "SECRET_FILE_NAME",
    "DevCluster",
    "DevClusterError",
    "DevClusterOptions",
    "DevNodeSpec",
    "busy_ports",
    "die_with_parent_preexec",
    "ensure_secret_file",
    "plan_nodes",
    "prepare_data_dir",
    "server_command",
]

DEV_MARKER_FILE = ".raftmq-dev"
SECRET_FILE_NAME = "cluster.secret"
SECRET_BYTES = 32
MAX_DEV_NODES = 9
KILL_WAIT_S = 5.0
_PR_SET_PDEATHSIG = 1
# Variables that would make every node claim the same identity: the supervisor sets them.
_PER_NODE_ENV = (
    "NODE_ID", "RAFT_BIND", "RAFT_ADVERTISE", "PEERS", "HTTP_BIND", "HTTP_ADVERTISE_URL",
    "DATA_DIR", "SECRET", "SECRET_FILE", "FSYNC",
)


class DevClusterError(RuntimeError):
    """Something the user can fix: busy port, foreign data dir, bad node count."""


@dataclass(frozen=True)
class DevClusterOptions:
    nodes: int = 3
    host: str = "127.0.0.1"
    base_port: int = 7001
    http_base_port: int = 8001
    data_dir: Path = Path("data/dev")
    fsync: str = "always"
    fresh: bool = False
    stop_timeout_s: float = 10.0


@dataclass(frozen=True)
class DevNodeSpec:
    node_id: str
    raft_address: str
    http_bind: str
    http_url: str
    data_dir: Path
    log_path: Path


def plan_nodes(options: DevClusterOptions) -> list[DevNodeSpec]:
    """Node n<i> gets raft port base_port+i-1 and HTTP port http_base_port+i-1."""
    if not 1 <= options.nodes <= MAX_DEV_NODES:
        raise DevClusterError(f"--nodes must be 1..{MAX_DEV_NODES}, got {options.nodes}")
    raft_ports = range(options.base_port, options.base_port + options.nodes)
    http_ports = range(options.http_base_port, options.http_base_port + options.nodes)
    for label, ports in (("raft", raft_ports), ("http", http_ports)):
        if ports.start < 1 or ports.stop - 1 > 65535:
            raise DevClusterError(f"{label} ports {ports.start}..{ports.stop - 1} out of range")
    if set(raft_ports) & set(http_ports):
        raise DevClusterError("raft and HTTP port ranges overlap; pick other base ports")
    specs = []
    for index, (raft_port, http_port) in enumerate(zip(raft_ports, http_ports, strict=True)):
        node_id = f"n{index + 1}"
        specs.append(DevNodeSpec(
            node_id=node_id,
            raft_address=f"{options.host}:{raft_port}",
            http_bind=f"{options.host}:{http_port}",
            http_url=f"http://{options.host}:{http_port}",
            data_dir=options.data_dir / node_id,
            log_path=options.data_dir / f"{node_id}.log",
        ))
    return specs


def busy_ports(host: str, ports: Iterable[int]) -> list[int]:
    """Ports on `host` that a server could not bind right now."""
    busy = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # Servers (aiohttp, pysyncobj) set SO_REUSEADDR: probe the way they bind.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                busy.append(port)
    return busy


def prepare_data_dir(data_dir: Path, *, fresh: bool) -> None:
    """Create (or with `fresh`, wipe and recreate) a data dir that `raftmq dev` owns.

    A non-empty directory without our marker file is refused, so a mistyped `--data-dir`
    never gets nodes written into it, let alone deleted with `--fresh`.
    """
    marker = data_dir / DEV_MARKER_FILE
    if data_dir.exists():
        if not data_dir.is_dir():
            raise DevClusterError(f"{data_dir} exists and is not a directory")
        if not marker.exists() and any(data_dir.iterdir()):
            raise DevClusterError(
                f"{data_dir} is not empty and was not created by `raftmq dev`; "
                "choose another --data-dir"
            )
        if fresh:
            shutil.rmtree(data_dir)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    marker.touch()


def ensure_secret_file(data_dir: Path) -> Path:
    """The cluster secret lives in <data_dir>/cluster.secret (0600); made once, then reused."""
    path = data_dir / SECRET_FILE_NAME
    if path.exists() and path.read_text(encoding="utf-8").strip():
        os.chmod(path, 0o600)
        return path
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    descriptor = os.open(path, flags, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(SECRET_BYTES) + "\n")
    os.chmod(path, 0o600)
    return path


def server_command(spec: DevNodeSpec, all_specs: Sequence[DevNodeSpec], fsync: str) -> list[str]:
    peers = ",".join(f"{other.node_id}={other.raft_address}"
                     for other in all_specs if other.node_id != spec.node_id)
    return [
        sys.executable, "-m", "raftmq.broker.cli", "server",
        "--node-id", spec.node_id,
        "--raft-bind", spec.raft_address,
        "--peers", peers,
        "--http-bind", spec.http_bind,
        "--http-advertise-url", spec.http_url,
        "--data-dir", str(spec.data_dir),
        "--fsync", fsync,
    ]


def node_environment(base: Mapping[str, str], secret_file: Path) -> dict[str, str]:
    """The parent's environment minus per-node RAFTMQ_* identity, plus the secret file."""
    dropped = {"RAFTMQ_" + name for name in _PER_NODE_ENV}
    environment = {key: value for key, value in base.items() if key not in dropped}
    environment["RAFTMQ_SECRET_FILE"] = str(secret_file)
    return environment


def die_with_parent_preexec() -> Callable[[], None] | None:
    """A `preexec_fn` making the child get SIGTERM when its parent dies (Linux), else None.

    libc is resolved here, in the parent: the forked child must do as little as possible
    (no dynamic loading) because another thread may have held a loader lock at fork time.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent_pid = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class DevCluster:
    """Starts, watches and stops the node processes of one dev cluster."""

    def __init__(self, options: DevClusterOptions, specs: Sequence[DevNodeSpec],
                 secret_file: Path) -> None:
        self.options = options
        self.specs = list(specs)
        self.secret_file = secret_file
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._reported_exits: set[str] = set()

    def start(self) -> None:
        environment = node_environment(os.environ, self.secret_file)
        preexec = die_with_parent_preexec()
        for spec in self.specs:
            spec.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(spec.log_path, "ab") as log_file:
                _write_banner(log_file, spec)
                self.processes[spec.node_id] = subprocess.Popen(
                    server_command(spec, self.specs, self.options.fsync),
                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                    env=environment, start_new_session=True, preexec_fn=preexec,
                )

    def new_exits(self) -> list[tuple[str, int]]:
        """(node id, exit code) of nodes that exited since the last call."""
        exits = []
        for node_id, process in self.processes.items():
            code = process.poll()
            if code is not None and node_id not in self._reported_exits:
                self._reported_exits.add(node_id)
                exits.append((node_id, code))
        return exits

    def running(self) -> list[str]:
        return [node_id for node_id, process in self.processes.items() if process.poll() is None]

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every node, wait `stop_timeout_s`, SIGKILL the rest; returns exit codes."""
        for process in self.processes.values():
            _send(process, signal.SIGTERM)
        _wait_all(self.processes.values(), self.options.stop_timeout_s)
        for process in self.processes.values():
            if process.poll() is None:
                _send(process, signal.SIGKILL)
        _wait_all(self.processes.values(), KILL_WAIT_S)
        return {node_id: process.poll() for node_id, process in self.processes.items()}


def _write_banner(log_file: IO[bytes], spec: DevNodeSpec) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    log_file.write(f"===== raftmq dev: starting {spec.node_id} at {stamp} =====\n".encode())
    log_file.flush()


def _send(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)


def _wait_all(processes: Iterable[subprocess.Popen[bytes]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for process in processes:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            continue
