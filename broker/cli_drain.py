"""`raftmq drain` (a node's preStop hook) and `raftmq wait-caught-up` (scaling, one member at a
time): the two checks that make a member safe to lose or to rely on.

Both talk to the node named by `--url` alone, with no failover: `drain` concerns that very node
(in a pod, http://127.0.0.1:8080), and `wait-caught-up` follows that node's leader hint.
Exit status 0 when done, 1 with the reason otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

__all__ = ["DEFAULT_DRAIN_URL", "add_drain_parsers"]

DEFAULT_DRAIN_URL = "http://127.0.0.1:8080"
DEFAULT_DRAIN_TIMEOUT_S = 50.0
# The node ends its drain at the timeout; the HTTP call waits this much longer for the answer.
_ANSWER_MARGIN_S = 5.0
_MAX_TIMEOUT_S = 600.0
_POLL_PERIOD_S = 0.2
_MAX_ANSWER_BYTES = 1 << 20
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_drain_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    drain = subparsers.add_parser(
        "drain", help="drain a node before stopping it (Kubernetes preStop)",
        description="Ask one node to drain: it stops taking new work (readiness and new writes "
        "answer 503 draining), hands off the leadership if it leads, and waits until the other "
        "members hold a quorum without it. Exit 0 once they do, 1 with the reason if not "
        "within --timeout (the node stays draining either way; --cancel undoes it).")
    _add_target_options(drain, DEFAULT_DRAIN_TIMEOUT_S)
    drain.add_argument("--cancel", action="store_true",
                       help="stop draining: the node takes new work again")
    drain.set_defaults(handler=_run_drain)
    wait = subparsers.add_parser(
        "wait-caught-up", help="wait until a member is connected to the leader and caught up",
        description="Wait until NODE_ID is a member connected to the leader and holds every "
        "entry committed when the wait began (as the leader sees it). Use it after adding a "
        "member and before the next membership change.")
    wait.add_argument("node_id", metavar="NODE_ID", help="the member to wait for")
    _add_target_options(wait, DEFAULT_DRAIN_TIMEOUT_S)
    wait.set_defaults(handler=_run_wait_caught_up)


def _add_target_options(parser: argparse.ArgumentParser, timeout_s: float) -> None:
    parser.add_argument("--url", default=os.environ.get("RAFTMQ_URL") or DEFAULT_DRAIN_URL,
                        help=f"the node's URL [env RAFTMQ_URL, default {DEFAULT_DRAIN_URL}]")
    parser.add_argument("--timeout", type=float, default=timeout_s, metavar="SECONDS",
                        help=f"give up after this long (default {timeout_s:g})")
    parser.add_argument("--json", action="store_true", help="print the node's answer as JSON")


def _checked(args: argparse.Namespace) -> str | None:
    """The problem with the arguments, if any."""
    url = str(args.url).strip().rstrip("/")
    if "," in url or not url.startswith(("http://", "https://")):
        return f"--url takes one http(s):// URL, got {args.url!r}"
    if not 0 < args.timeout <= _MAX_TIMEOUT_S:
        return f"--timeout must be in (0, {_MAX_TIMEOUT_S:g}] seconds, got {args.timeout:g}"
    if getattr(args, "node_id", None) is not None:
        from raftmq.broker.config import parse_node_id

        try:
            parse_node_id(args.node_id)
        except ValueError as error:
            return str(error)
    args.url = url
    return None


def _fail(command: str, text: str, status: int = EXIT_FAILURE) -> int:
    print(f"raftmq {command}: {text}", file=sys.stderr)
    return status


async def _call(method: str, url: str, document: dict[str, object] | None,
                timeout_s: float) -> tuple[int, dict[str, Any]]:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.request(
            method, url, json=document, headers={"Accept": "application/json"}) as response:
        body = await response.content.read(_MAX_ANSWER_BYTES)
    answer = json.loads(body) if body else {}
    if not isinstance(answer, dict):
        raise ValueError(f"expected a JSON object, got {type(answer).__name__}")
    return response.status, answer


def _error_text(status: int, answer: dict[str, Any]) -> str:
    error = answer.get("error")
    if isinstance(error, dict):
        return f"{error.get('code')}: {error.get('message')} (HTTP {status})"
    return f"unexpected answer (HTTP {status})"


def _run_drain(args: argparse.Namespace) -> int:
    problem = _checked(args)
    if problem is not None:
        return _fail("drain", problem, EXIT_USAGE)
    method, document = ("DELETE", None) if args.cancel else (
        "POST", {"timeout_ms": max(1, round(args.timeout * 1000))})
    try:
        status, answer = asyncio.run(_call(method, f"{args.url}/v1/node/drain", document,
                                           args.timeout + _ANSWER_MARGIN_S))
    except Exception as error:  # connection refused, timeout, garbled answer: all say "not drained"
        return _fail("drain", f"cannot drain {args.url}: {type(error).__name__}: {error}")
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
    if status != 200:
        return _fail("drain", _error_text(status, answer))
    node = answer.get("node_id")
    if args.cancel:
        print(f"{node} takes new work again")
        return EXIT_OK
    if answer.get("drained") is True:
        print(f"{node} drained: {answer.get('detail')}")
        return EXIT_OK
    return _fail("drain", f"{node} not drained: {answer.get('detail')}")


def _run_wait_caught_up(args: argparse.Namespace) -> int:
    problem = _checked(args)
    if problem is not None:
        return _fail("wait-caught-up", problem, EXIT_USAGE)
    verdict = asyncio.run(_wait_caught_up(args.url, args.node_id, args.timeout))
    if verdict.startswith("ok: "):
        print(verdict[len("ok: "):])
        return EXIT_OK
    return _fail("wait-caught-up", verdict)


async def _wait_caught_up(url: str, node_id: str, timeout_s: float) -> str:
    """"ok: ..." once `node_id` is caught up, else why not when the time is up."""
    from raftmq.broker.drain import parse_leader_view
    from raftmq.broker.k8s_join import fetch_cluster_document

    deadline = time.monotonic() + timeout_s
    target: int | None = None
    reason = "no answer yet"
    while True:
        remaining_s = max(0.05, deadline - time.monotonic())
        document = await fetch_cluster_document(url, min(remaining_s, 2.0))
        leader_url = None if document is None else document.get("leader_url")
        view = parse_leader_view(document)
        if view is None and isinstance(leader_url, str):
            view = parse_leader_view(await fetch_cluster_document(leader_url, min(remaining_s, 2.0)))
        if view is None:
            reason = f"no leader view from {url} (or the leader it names)"
        else:
            target = view.commit_index if target is None else target
            peer = next((p for p in view.peers if p.node_id == node_id), None)
            if view.leader_id == node_id or (
                    peer is not None and peer.connected and (peer.match_index or 0) >= target):
                return f"ok: {node_id} is caught up with leader {view.leader_id} (index {target})"
            reason = (f"{node_id} is not a member (leader {view.leader_id})" if peer is None else
                      f"{node_id} is {'connected' if peer.connected else 'not connected'}, at "
                      f"index {peer.match_index} of {target}")
        if time.monotonic() + _POLL_PERIOD_S >= deadline:
            return f"not caught up within {timeout_s:g} s: {reason}"
        await asyncio.sleep(_POLL_PERIOD_S)
