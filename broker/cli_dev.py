"""`raftmq dev`: a local N-node cluster on loopback in one command.

Prints where each node listens, waits for a leader, optionally drives demo traffic, and on
Ctrl-C or SIGTERM stops every node (see `devcluster` for the process supervision).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp

from raftmq.broker.devcluster import (
    DevCluster,
    DevClusterError,
    DevClusterOptions,
    DevNodeSpec,
    busy_ports,
    ensure_secret_file,
    plan_nodes,
    prepare_data_dir,
)

__all__ = [
    "DASHBOARD_PATH",
    "add_dev_parser",
    "agreed_leader",
    "leader_from_cluster_doc",
    "run_dev",
]

DASHBOARD_PATH = "/"
CLUSTER_PATH = "/v1/cluster"
PROBE_TIMEOUT_S = 1.0
PROBE_INTERVAL_S = 0.2
WATCH_INTERVAL_S = 0.5
SLOW_ELECTION_HINT_S = 15.0


def add_dev_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dev",
        help="run a local N-node cluster on 127.0.0.1",
        description="Start N real `raftmq server` processes on 127.0.0.1, each with its own "
        "data dir and log file, and stop them all on Ctrl-C.",
    )
    parser.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    parser.add_argument("--base-port", type=int, default=7001,
                        help="Raft port of the first node; node i uses base+i-1 (default 7001)")
    parser.add_argument("--http-base-port", type=int, default=8001,
                        help="HTTP port of the first node (default 8001)")
    parser.add_argument("--data-dir", type=Path, default=Path("data/dev"),
                        help="where node data, logs and the cluster secret go "
                        "(default ./data/dev)")
    parser.add_argument("--fsync", choices=("always", "never"), default="always",
                        help="journal fsync policy of every node (default always)")
    parser.add_argument("--demo", action=argparse.BooleanOptionalAction, default=True,
                        help="declare a demo exchange and queues and run a small producer and "
                        "consumer, so the dashboard shows traffic (default on)")
    parser.add_argument("--fresh", action="store_true",
                        help="delete the dev data dir first (only one made by `raftmq dev`)")
    parser.add_argument("--stop-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="how long nodes get to stop after SIGTERM before SIGKILL "
                        "(default 10)")
    parser.set_defaults(handler=run_dev, subparser=parser)


def _options(args: argparse.Namespace) -> DevClusterOptions:
    if args.stop_timeout <= 0:
        raise DevClusterError("--stop-timeout must be positive")
    return DevClusterOptions(
        nodes=args.nodes, base_port=args.base_port, http_base_port=args.http_base_port,
        data_dir=args.data_dir, fsync=args.fsync, fresh=args.fresh,
        stop_timeout_s=args.stop_timeout,
    )


def _check_ports(options: DevClusterOptions, specs: Sequence[DevNodeSpec]) -> None:
    owners = {}
    for spec in specs:
        owners[int(spec.raft_address.rsplit(":", 1)[1])] = f"raft port of {spec.node_id}"
        owners[int(spec.http_bind.rsplit(":", 1)[1])] = f"HTTP port of {spec.node_id}"
    busy = busy_ports(options.host, owners)
    if busy:
        listing = ", ".join(f"{port} ({owners[port]})" for port in busy)
        raise DevClusterError(
            f"port(s) already in use on {options.host}: {listing}. Stop what listens there "
            "(another `raftmq dev`?) or pick others with --base-port / --http-base-port"
        )


def run_dev(args: argparse.Namespace) -> int:
    try:
        options = _options(args)
        specs = plan_nodes(options)
        _check_ports(options, specs)
        prepare_data_dir(options.data_dir, fresh=options.fresh)
        secret_file = ensure_secret_file(options.data_dir)
    except (DevClusterError, OSError) as exc:
        print(f"raftmq dev: error: {exc}", file=sys.stderr)
        return 1
    cluster = DevCluster(options, specs, secret_file)
    return asyncio.run(_supervise(cluster, demo=bool(args.demo)))


def _print_table(cluster: DevCluster) -> None:
    rows = [("NODE", "PID", "RAFT", "HTTP", "DASHBOARD", "LOG")]
    for spec in cluster.specs:
        process = cluster.processes[spec.node_id]
        rows.append((spec.node_id, str(process.pid), spec.raft_address, spec.http_url,
                     spec.http_url + DASHBOARD_PATH, str(spec.log_path)))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip(), flush=True)


def leader_from_cluster_doc(doc: object) -> str | None:
    """The leader id a node reports in its GET /v1/cluster document (None if unknown)."""
    if not isinstance(doc, Mapping):
        return None
    leader = doc.get("leader_id", doc.get("leader"))
    if isinstance(leader, Mapping):
        leader = leader.get("node_id")
    return leader if isinstance(leader, str) and leader else None


def agreed_leader(reports: Sequence[str | None], cluster_size: int) -> str | None:
    """A leader id reported by a majority of the cluster's nodes, else None."""
    counts = Counter(report for report in reports if report is not None)
    for leader, votes in counts.most_common(1):
        if votes > cluster_size // 2:
            return leader
    return None


async def _reported_leader(session: aiohttp.ClientSession, url: str) -> str | None:
    try:
        async with session.get(url + CLUSTER_PATH, headers={"Accept": "application/json"}) as reply:
            if reply.status != 200:
                return None
            return leader_from_cluster_doc(await reply.json(content_type=None))
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def _wait_for_leader(cluster: DevCluster, stop: asyncio.Event) -> str | None:
    """Poll every node until a majority names the same leader; None if asked to stop first."""
    urls = [spec.http_url for spec in cluster.specs]
    loop = asyncio.get_running_loop()
    hint_at = loop.time() + SLOW_ELECTION_HINT_S
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            reports = await asyncio.gather(*(_reported_leader(session, url) for url in urls))
            leader = agreed_leader(reports, len(urls))
            if leader is not None:
                return leader
            _report_exits(cluster)
            if not cluster.running():
                return None
            if loop.time() > hint_at:
                hint_at = float("inf")
                print(f"still no leader after {SLOW_ELECTION_HINT_S:.0f} s; see the node logs "
                      f"in {cluster.options.data_dir}", flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PROBE_INTERVAL_S)
    return None


def _report_exits(cluster: DevCluster) -> None:
    for node_id, code in cluster.new_exits():
        spec = next(spec for spec in cluster.specs if spec.node_id == node_id)
        print(f"node {node_id} exited with code {code}; last lines of {spec.log_path}:",
              flush=True)
        print(_tail(spec.log_path), flush=True)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"  (cannot read: {exc})"
    return "\n".join("  " + line for line in text.splitlines()[-lines:])


async def _watch(cluster: DevCluster, stop: asyncio.Event) -> int:
    while not stop.is_set():
        _report_exits(cluster)
        if not cluster.running():
            print("every node has exited", flush=True)
            return 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), WATCH_INTERVAL_S)
    return 0


async def _start_demo(cluster: DevCluster) -> asyncio.Task[None]:
    from raftmq.broker.cli_demo import run_demo

    urls = [spec.http_url for spec in cluster.specs]
    return asyncio.get_running_loop().create_task(run_demo(urls), name="raftmq-dev-demo")


async def _supervise(cluster: DevCluster, *, demo: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    demo_task: asyncio.Task[None] | None = None
    try:
        cluster.start()
        print(f"raftmq dev: {len(cluster.specs)} node(s), data in {cluster.options.data_dir}, "
              f"secret in {cluster.secret_file}", flush=True)
        _print_table(cluster)
        print("waiting for a leader...", flush=True)
        leader = await _wait_for_leader(cluster, stop)
        if leader is not None:
            url = next(spec.http_url for spec in cluster.specs if spec.node_id == leader)
            print(f"leader: {leader} ({url})", flush=True)
            if demo:
                demo_task = await _start_demo(cluster)
            print("press Ctrl-C to stop the cluster", flush=True)
        return await _watch(cluster, stop)
    finally:
        if demo_task is not None:
            demo_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await demo_task
        _stop_cluster(cluster)


def _stop_cluster(cluster: DevCluster) -> None:
    print("stopping nodes...", flush=True)
    codes = cluster.stop()
    summary = ", ".join(f"{node_id}: {_describe_exit(code)}" for node_id, code in codes.items())
    print(f"stopped ({summary})", flush=True)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running (could not be killed)"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit {code}"
