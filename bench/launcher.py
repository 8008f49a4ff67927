"""Start a local N-node raftmq cluster as real `raftmq server` processes, for benchmarks."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

__all__ = ["BenchCluster", "NodeProcess"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class NodeProcess:
    node_id: str
    raft_address: str
    http_url: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None


@dataclass
class BenchCluster:
    size: int = 3
    fsync: str = "always"
    extra_env: dict[str, str] = field(default_factory=dict)
    nodes: list[NodeProcess] = field(default_factory=list)
    base_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="raftmq-bench-")))
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def __post_init__(self) -> None:
        for i in range(self.size):
            node_id = f"n{i + 1}"
            self.nodes.append(NodeProcess(
                node_id, f"127.0.0.1:{_free_port()}", f"http://127.0.0.1:{_free_port()}",
                self.base_dir / node_id, self.base_dir / f"{node_id}.log"))

    def _env(self, node: NodeProcess) -> dict[str, str]:
        peers = ",".join(f"{n.node_id}={n.raft_address}" for n in self.nodes)
        env = dict(os.environ)
        env.update({
            "RAFTMQ_NODE_ID": node.node_id, "RAFTMQ_RAFT_BIND": node.raft_address,
            "RAFTMQ_PEERS": peers, "RAFTMQ_HTTP_BIND": node.http_url.removeprefix("http://"),
            "RAFTMQ_DATA_DIR": str(node.data_dir), "RAFTMQ_FSYNC": self.fsync,
            "RAFTMQ_SECRET": self.secret, "RAFTMQ_LOG_LEVEL": "info",  # role changes, stalls
        })
        env.update(self.extra_env)
        return env

    def start_node(self, node: NodeProcess) -> None:
        log = open(node.log_path, "ab")  # noqa: SIM115 - owned by the child process
        node.process = subprocess.Popen(
            [sys.executable, "-m", "raftmq.broker.cli", "server"], env=self._env(node),
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start(self) -> None:
        for node in self.nodes:
            self.start_node(node)

    def kill(self, node: NodeProcess, sig: int = signal.SIGKILL) -> None:
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(sig)
            node.process.wait(timeout=30)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        deadline = time.monotonic() + 15
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()

    async def cluster_view(self, session: aiohttp.ClientSession, node: NodeProcess) -> dict[str, object]:
        async with session.get(node.http_url + "/v1/cluster",
                               headers={"Accept": "application/json"}) as response:
            view: dict[str, object] = await response.json()
            return view

    async def wait_leader(self, session: aiohttp.ClientSession, timeout_s: float = 30.0) -> NodeProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process is None or node.process.poll() is not None:
                    continue
                try:
                    view = await self.cluster_view(session, node)
                except (aiohttp.ClientError, OSError, ValueError):
                    continue
                if view.get("role") == "leader":
                    return node
            await asyncio.sleep(0.05)
        raise TimeoutError("no leader elected")
