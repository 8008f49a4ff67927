"""Real Raft nodes over real loopback TCP, several in one process, for cluster-layer tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import msgpack

from raftmq.cluster import RaftConfig, RaftNode

__all__ = ["ListMachine", "free_ports", "make_cluster", "wait_until"]


class ListMachine:
    """A toy state machine: appends every command; `b"boom"` raises to test the apply guard."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    def apply(self, command: bytes) -> object:
        if command == b"boom":
            raise RuntimeError("deliberate failure inside apply")
        self.values.append(command)
        return len(self.values)

    def snapshot(self) -> bytes:
        packed: bytes = msgpack.packb(self.values, use_bin_type=True)
        return packed

    def restore(self, data: bytes) -> None:
        self.values = list(msgpack.unpackb(data, raw=False))


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def make_configs(base: Path, count: int, **overrides: object) -> list[RaftConfig]:
    addresses = {f"n{i}": f"127.0.0.1:{port}" for i, port in enumerate(free_ports(count))}
    return [
        RaftConfig(node_id=node_id, bind_address=address, advertise_address=address,
                   peers={k: v for k, v in addresses.items() if k != node_id},
                   data_dir=base / node_id, secret="test-secret", **overrides)  # type: ignore[arg-type]
        for node_id, address in addresses.items()
    ]


async def make_cluster(configs: list[RaftConfig]) -> list[tuple[RaftNode, ListMachine]]:
    members = [(RaftNode(config, machine), machine)
               for config, machine in ((c, ListMachine()) for c in configs)]
    await asyncio.gather(*(node.start() for node, _ in members))
    return members


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.01)
