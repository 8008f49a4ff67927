"""`raftmq dev` end to end, and the cluster harness's own fault operations."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import queue
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftmq.broker.cli_dev import leader_from_cluster_doc
from raftmq.client import OutgoingMessage, RaftMQ
from tests.integration.cluster_harness import (
    LOCALHOST,
    ClusterHarness,
    http_get_json,
    pick_free_port_block,
    wait_for,
)

pytestmark = pytest.mark.integration

LEADER_LINE = re.compile(r"^leader: (\S+) \((http://\S+)\)$")
NODE_ROW = re.compile(r"^(n\d+)\s+(\d+)\s+(\S+)\s+(http://\S+)\s")


class LineReader:
    """Collects a subprocess's stdout lines on a thread, so the test can wait with deadlines."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(process,), daemon=True)
        self._thread.start()

    def _pump(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._queue.put(line.rstrip("\n"))

    def drain(self) -> list[str]:
        while True:
            try:
                self.lines.append(self._queue.get_nowait())
            except queue.Empty:
                return self.lines

    def find(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        return next((m for line in self.drain() if (m := pattern.match(line))), None)

    def text(self) -> str:
        return "\n".join(self.drain())


def _clean_environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("RAFTMQ_")}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def dev_ports() -> tuple[int, int]:
    return pick_free_port_block(3), pick_free_port_block(3)


@pytest.fixture
def dev_process(
    tmp_path: Path, dev_ports: tuple[int, int]
) -> Iterator[tuple[subprocess.Popen[str], LineReader]]:
    raft_base, http_base = dev_ports
    command = [
        sys.executable, "-m", "raftmq.broker.cli", "dev", "--nodes", "3", "--no-demo",
        "--base-port", str(raft_base), "--http-base-port", str(http_base),
        "--data-dir", str(tmp_path / "dev"), "--fsync", "never", "--stop-timeout", "10",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=_clean_environment(), start_new_session=True)
    reader = LineReader(process)
    node_pids: list[int] = []
    try:
        yield process, reader
    finally:
        node_pids = [int(m.group(2)) for line in reader.drain() if (m := NODE_ROW.match(line))]
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        for pid in node_pids:  # only if the supervisor failed to stop them
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        print("----- raftmq dev output -----\n" + reader.text())


def test_dev_cluster_elects_a_leader_and_stops_every_node_on_sigint(
    dev_process: tuple[subprocess.Popen[str], LineReader], tmp_path: Path
) -> None:
    process, reader = dev_process
    match = wait_for(lambda: reader.find(LEADER_LINE) or process.poll() is not None, 60.0,
                     message="`raftmq dev` printing its leader")
    assert isinstance(match, re.Match), f"raftmq dev exited early:\n{reader.text()}"
    leader = match.group(1)
    rows = [m for line in reader.drain() if (m := NODE_ROW.match(line))]
    assert [row.group(1) for row in rows] == ["n1", "n2", "n3"]
    node_pids = [int(row.group(2)) for row in rows]
    urls = [row.group(4) for row in rows]
    assert match.group(2) == urls[int(leader[1:]) - 1]

    for url in urls:
        wait_for(functools.partial(_is_ready, url), 30.0, message=f"{url}/readyz")
        wait_for(functools.partial(_names_leader, url, leader), 30.0,
                 message=f"{url}/v1/cluster naming leader {leader}")

    secret_file = tmp_path / "dev" / "cluster.secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert all(_pid_alive(pid) for pid in node_pids)

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    wait_for(lambda: not any(_pid_alive(pid) for pid in node_pids), 5.0,
             message="every node process gone")
    output = reader.text()
    assert "stopped (n1: exit 0, n2: exit 0, n3: exit 0)" in output, output


def _is_ready(url: str) -> bool:
    reply = http_get_json(url + "/readyz")
    return reply is not None and reply[0] == 200


def _names_leader(url: str, leader: str) -> bool:
    reply = http_get_json(url + "/v1/cluster")
    return reply is not None and reply[0] == 200 and leader_from_cluster_doc(reply[1]) == leader


def test_dev_refuses_busy_ports(tmp_path: Path, dev_ports: tuple[int, int]) -> None:
    raft_base, http_base = dev_ports
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind((LOCALHOST, http_base + 1))
        squatter.listen()
        completed = subprocess.run(
            [sys.executable, "-m", "raftmq.broker.cli", "dev", "--no-demo",
             "--base-port", str(raft_base), "--http-base-port", str(http_base),
             "--data-dir", str(tmp_path / "dev")],
            capture_output=True, text=True, env=_clean_environment(), timeout=60,
        )
    assert completed.returncode == 1
    assert f"{http_base + 1} (HTTP port of n2)" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "dev").exists()


def test_harness_survives_leader_kill_and_restart(cluster: ClusterHarness) -> None:
    leader = cluster.wait_for_leader()
    assert cluster.kill(leader) == -signal.SIGKILL
    new_leader = cluster.wait_for_leader(timeout_s=30.0, exclude=[leader])
    assert new_leader != leader

    cluster.restart(leader)
    cluster.wait_ready([leader])
    wait_for(lambda: leader_from_cluster_doc(cluster.cluster_view(leader)) is not None, 30.0,
             message=f"restarted {leader} knowing a leader")

    follower = next(node for node in cluster.running() if node != cluster.leader_id())
    assert cluster.terminate(follower) == 0
    assert "stopped" in cluster.log_text(follower)


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raftmq.broker.cli", *args], input=stdin,
                          capture_output=True, text=True, env=_clean_environment(), timeout=60)


def test_admin_commands_round_trip(cluster: ClusterHarness) -> None:
    leader = cluster.wait_for_leader()
    follower_url = next(node.url for node in cluster.nodes.values() if node.node_id != leader)

    async def declare() -> None:
        async with RaftMQ(follower_url) as client:
            await client.declare_queue("cli.jobs")

    asyncio.run(declare())
    published = _cli("publish", "--url", follower_url, "--queue", "cli.jobs", "--header", "k=v",
                     stdin="first\nsecond\nthird\n")
    assert published.returncode == 0, published.stderr
    assert "messages 3, accepted 3, unroutable 0, rejected 0" in published.stdout

    listed = _cli("queues", "--url", follower_url, "--json")
    assert listed.returncode == 0, listed.stderr
    (queue,) = [q for q in json.loads(listed.stdout) if q["name"] == "cli.jobs"]
    assert queue["ready"] == 3

    consumed = _cli("consume", "cli.jobs", "--url", follower_url, "--count", "3")
    assert consumed.returncode == 0, consumed.stderr
    assert [line.rsplit(": ", 1)[1] for line in consumed.stdout.splitlines()] == [
        "first", "second", "third"]
    assert "headers={'k': 'v'}" in consumed.stdout

    status = _cli("cluster", "status", "--url", follower_url)
    assert status.returncode == 0, status.stderr
    assert f"leader {leader} " in status.stdout

    missing = _cli("consume", "no.such.queue", "--url", follower_url, "--count", "1")
    assert missing.returncode == 1
    assert "error: queue_not_found" in missing.stderr


def test_leader_ticker_expires_leases_on_an_idle_cluster(cluster: ClusterHarness) -> None:
    # Nothing but the leader's Tick moves state time here, so this proves the ticker runs.
    url = cluster.nodes[cluster.wait_for_leader()].url

    async def claim_and_abandon() -> None:
        async with RaftMQ(url) as client:
            await client.declare_queue("tick.jobs")
            await client.publish_to_queue("tick.jobs", [OutgoingMessage(b"x")])
            (message,) = await client.claim("tick.jobs", lease_ms=300)
            assert message.body == b"x"

    asyncio.run(claim_and_abandon())

    def lease_returned() -> bool:
        reply = http_get_json(url + "/v1/queues/tick.jobs")
        doc = reply[1] if reply is not None else None
        return isinstance(doc, dict) and doc.get("ready") == 1 and doc.get("leased") == 0

    wait_for(lease_returned, 10.0, message="expired lease back in ready")


def test_the_demo_moves_traffic_and_rides_out_a_leader_kill(cluster: ClusterHarness) -> None:
    """`raftmq dev`'s demo (on the failover client): orders acked, some dead-lettered, the
    stream fed; after the leader is killed the traffic carries on through the others."""
    from raftmq.broker.cli_demo import ACTIVITY_STREAM, DEAD_QUEUE, ORDERS_QUEUE, run_demo

    leader = cluster.wait_for_leader()
    urls = [node.url for node in cluster.nodes.values()]
    survivor = next(node.url for node in cluster.nodes.values() if node.node_id != leader)

    def counter(queue: str, name: str) -> int:
        reply = http_get_json(f"{survivor}/v1/queues/{queue}")
        doc = reply[1] if reply is not None else None
        counters = doc.get("counters") if isinstance(doc, dict) else None
        return int(counters[name]) if isinstance(counters, dict) else 0  # 404 before declare

    def stream_total() -> int:
        reply = http_get_json(f"{survivor}/v1/streams/{ACTIVITY_STREAM}")
        doc = reply[1] if reply is not None else None
        partitions = doc.get("partitions") if isinstance(doc, dict) else None
        return sum(int(p["next_offset"]) for p in partitions) if partitions else 0

    async def scenario() -> None:
        demo = asyncio.create_task(run_demo(urls))
        try:
            await asyncio.to_thread(wait_for, lambda: counter(ORDERS_QUEUE, "acked") >= 5, 30.0)
            await asyncio.to_thread(cluster.kill, leader)
            acked_at_kill = counter(ORDERS_QUEUE, "acked")
            await asyncio.to_thread(
                wait_for, lambda: counter(ORDERS_QUEUE, "acked") >= acked_at_kill + 20, 60.0)
            await asyncio.to_thread(wait_for, lambda: counter(DEAD_QUEUE, "published") >= 1,
                                    60.0)
            assert stream_total() > 0
        finally:
            demo.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await demo

    asyncio.run(scenario())
