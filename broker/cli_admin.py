"""The client-side `raftmq` commands: `queues`, `cluster status`, and the registration of
`publish`, `consume` (cli_messages, cli_streams), `streams` (cli_streams) and `bench` (cli_bench).

Every command connects through `Client` with the seeds given to `--url` (or RAFTMQ_URL): it
discovers the other nodes, follows the leader and fails over between nodes within `--timeout`.
Failures print the stable error code and exit with status 1 (see cli_common).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import TYPE_CHECKING, Any

from raftmq.broker import cli_bench, cli_messages, cli_streams
from raftmq.broker.cli_common import (
    DEFAULT_URL,
    CliUsageError,
    common_options,
    format_body,
    print_table,
    runner,
)

if TYPE_CHECKING:
    from raftmq.client import Client

__all__ = ["DEFAULT_URL", "add_admin_parsers", "format_body"]

# Each node's own view is asked for with this timeout: a dead node must not stall the table.
NODE_PROBE_TIMEOUT_S = 2.0


def add_admin_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = common_options()
    queues = subparsers.add_parser(
        "queues", parents=[common], help="list queues with their message counts",
        description="List every queue with its message counts (or one queue with --describe).")
    queues.add_argument("--describe", metavar="QUEUE", help="show one queue's full document")
    queues.add_argument("--json", action="store_true", help="print the JSON documents")
    queues.set_defaults(handler=runner(_queues, writes=False))

    cluster = subparsers.add_parser("cluster", help="cluster commands",
                                    description="Inspect the cluster and change its membership.")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", metavar="COMMAND",
                                              required=True)
    status = cluster_commands.add_parser(
        "status", parents=[common], help="leader, term, indexes and every node's own view",
        description="Show the leader and term, then ask every known node for its own view "
        "(role, term, commit and applied index); unreachable nodes are listed as such.")
    status.add_argument("--json", action="store_true",
                        help="print the JSON documents: the cluster view and every node's view")
    status.set_defaults(handler=runner(_cluster_status, writes=False))
    _add_membership_parsers(cluster_commands, common)

    cli_messages.add_publish_parser(subparsers, common)
    cli_messages.add_consume_parser(subparsers, common)
    cli_streams.add_streams_parser(subparsers, common)
    cli_bench.add_bench_parser(subparsers, common)


def _add_membership_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    add = commands.add_parser(
        "add-member", parents=[common], help="add a voting member (one change at a time)",
        description="Add a node to the Raft membership, then start it with --peers listing the "
        "members this prints. The leader makes the change (the client finds it); one change at "
        "a time: a second one while the first is not applied answers "
        "membership_change_in_progress. Repeating an add that was made is harmless.")
    add.add_argument("node_id", metavar="ID", help="the new node's id (its --node-id)")
    add.add_argument("raft_address", metavar="HOST:PORT",
                     help="the new node's Raft address as the others dial it (its advertised "
                     "raft address)")
    add.set_defaults(handler=runner(_add_member, writes=True, check=_check_member_args))
    remove = commands.add_parser(
        "remove-member", parents=[common], help="remove a voting member",
        description="Remove a node from the Raft membership. The leader is never removed by "
        "itself: run transfer-leadership first (cannot_remove_leader otherwise). Stop the "
        "removed node afterwards; until then it is cut off and harmless.")
    remove.add_argument("node_id", metavar="ID", help="the id of the member to remove")
    remove.set_defaults(handler=runner(_remove_member, writes=True, check=_check_member_args))
    transfer = commands.add_parser(
        "transfer-leadership", parents=[common], help="hand the leadership to another node",
        description="Ask the leader to hand its leadership to a caught-up follower and wait "
        "until a new leader is known; transfer_refused if no follower was caught up in time.")
    transfer.add_argument("--to", metavar="ID", default=None,
                          help="the member to become leader (default: the most caught-up one)")
    transfer.set_defaults(handler=runner(_transfer_leadership, writes=True,
                                         check=_check_member_args))


def _check_member_args(args: argparse.Namespace) -> None:
    from raftmq.broker.config import parse_host_port, parse_node_id

    try:
        for name in ("node_id", "to"):
            value = getattr(args, name, None)
            if value is not None:
                parse_node_id(value)
        if getattr(args, "raft_address", None) is not None:
            args.raft_address = parse_host_port(args.raft_address)
    except ValueError as error:
        raise CliUsageError(str(error)) from None


def _print_members(members: list[dict[str, Any]]) -> None:
    rows: list[tuple[str, ...]] = [("NODE", "RAFT ADDRESS")]
    rows += [(str(m.get("node_id")), str(m.get("raft_address"))) for m in members]
    print_table(rows)
    peers = ",".join(f"{m.get('node_id')}={m.get('raft_address')}" for m in members)
    print(f"--peers {peers}")


async def _add_member(client: Client, args: argparse.Namespace) -> int:
    _print_members(await client.add_member(args.node_id, args.raft_address))
    return 0


async def _remove_member(client: Client, args: argparse.Namespace) -> int:
    _print_members(await client.remove_member(args.node_id))
    return 0


async def _transfer_leadership(client: Client, args: argparse.Namespace) -> int:
    leader = await client.transfer_leadership(args.to)
    print(f"leader is now {leader}")
    return 0


async def _queues(client: Client, args: argparse.Namespace) -> int:
    if args.describe is not None:
        info = await client.queue_info(args.describe)
        if args.json:
            print(json.dumps(info, indent=2, sort_keys=True))
        else:
            _print_fields(info)
        return 0
    queues = await client.list_queues()
    if args.json:
        print(json.dumps(queues, indent=2, sort_keys=True))
        return 0
    if not queues:
        print("no queues")
        return 0
    rows: list[tuple[str, ...]] = [(
        "QUEUE", "READY", "DELAYED", "LEASED", "BYTES", "CONSUMERS", "PUBLISHED", "ACKED",
        "DEAD-LETTERED",
    )]
    for queue in queues:
        counters = queue.get("counters") or {}
        rows.append((
            str(queue.get("name")),
            *(str(queue.get(key, "")) for key in
              ("ready", "delayed", "leased", "bytes", "consumers")),
            *(str(counters.get(key, "")) for key in ("published", "acked", "dead_lettered")),
        ))
    print_table(rows)
    return 0


def _print_fields(document: dict[str, Any], indent: str = "") -> None:
    for key in sorted(document):
        value = document[key]
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            _print_fields(value, indent + "  ")
        else:
            print(f"{indent}{key}: {'-' if value is None else value}")


async def _cluster_status(client: Client, args: argparse.Namespace) -> int:
    view = await client.cluster_status()
    node_views = await _node_views(client.nodes)
    if args.json:
        print(json.dumps({"cluster": view, "nodes": node_views}, indent=2, sort_keys=True))
        return 0
    leader = view.get("leader_id")
    leader_text = f"leader {leader} {view.get('leader_url') or ''}".rstrip() if leader else \
        "leader unknown (no leader elected?)"
    print(f"{leader_text}, term {view.get('term')} (as seen by {view.get('node_id')})")
    rows: list[tuple[str, ...]] = [
        ("NODE", "URL", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "QUORUM", "READY")]
    for url, node in node_views.items():
        if "error" in node:
            rows.append(("?", url, f"unreachable: {node['error']}", "", "", "", "", "", ""))
            continue
        rows.append((
            str(node.get("node_id")), url, str(node.get("role")), str(node.get("term")),
            str(node.get("leader_id") or "-"), str(node.get("commit_index")),
            str(node.get("applied_index")), "yes" if node.get("has_quorum") else "NO",
            "yes" if node.get("ready") else "no",
        ))
    print_table(rows)
    return 0


async def _node_views(urls: list[str]) -> dict[str, dict[str, Any]]:
    """Every node's own /v1/cluster, asked of that node alone (no failover: that is the point)."""
    from raftmq.client import RaftMQ, RaftMQError

    async def one(url: str) -> dict[str, Any]:
        try:
            async with RaftMQ(url, timeout_s=NODE_PROBE_TIMEOUT_S) as node:
                return await node.cluster()
        except RaftMQError as error:
            return {"error": error.code}

    views = await asyncio.gather(*(one(url) for url in urls))
    return dict(zip(urls, views, strict=True))
