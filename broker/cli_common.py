"""What every client-side `raftmq` command shares: the seed URLs and timeout options, running a
handler with a connected `Client`, and turning a failure into one plain line and exit status 1.

A failure line names the stable error code and says whether the operation certainly did not
happen or its outcome is unknown, so a script (or a person) knows whether a retry is safe.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raftmq.client import Client, RaftMQError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_URL",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "CliUsageError",
    "Handler",
    "common_options",
    "describe_error",
    "format_body",
    "jsonable",
    "parse_seeds",
    "print_table",
    "runner",
]

DEFAULT_URL = "http://127.0.0.1:8001"
DEFAULT_TIMEOUT_S = 10.0
EXIT_FAILURE = 1
EXIT_USAGE = 2
BODY_PREVIEW_CHARS = 200
# A long-poll needs its wait on top of the time a node may take to answer.
_LONG_POLL_MARGIN_S = 5.0

Handler = Callable[["Client", argparse.Namespace], Awaitable[int]]


class CliUsageError(ValueError):
    """Bad command-line input found after parsing (e.g. a malformed --header): exit status 2."""


def parse_seeds(value: str) -> list[str]:
    """`--url` takes one URL or several separated by commas (any node will do as a seed)."""
    seeds = [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
    if not seeds:
        raise argparse.ArgumentTypeError("expected one or more comma-separated node URLs")
    for seed in seeds:
        if not seed.startswith(("http://", "https://")):
            raise argparse.ArgumentTypeError(f"{seed!r} is not an http:// or https:// URL")
    return seeds


def common_options() -> argparse.ArgumentParser:
    """`--url` and `--timeout`, as a parent parser for every client-side command."""
    common = argparse.ArgumentParser(add_help=False)
    default_url = os.environ.get("RAFTMQ_URL") or DEFAULT_URL
    common.add_argument(
        "--url", type=parse_seeds, default=default_url, metavar="URL[,URL...]",
        help="one or more node URLs, comma-separated; the client discovers the rest and fails "
        f"over between them [env RAFTMQ_URL, default {DEFAULT_URL}]")
    common.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
        help="give up an operation, with its retries on other nodes, after this long "
        f"(default {DEFAULT_TIMEOUT_S:g})")
    return common


def runner(
    handler: Handler, *, writes: bool, check: Callable[[argparse.Namespace], None] | None = None
) -> Callable[[argparse.Namespace], int]:
    """The argparse handler: check the arguments (raising CliUsageError), connect, run, report.
    `writes` says whether the command changes anything, so that a definite failure can say
    that nothing was changed."""

    def run(args: argparse.Namespace) -> int:
        if check is not None:
            try:
                check(args)
            except CliUsageError as error:
                return _fail(args, str(error), EXIT_USAGE)
        return asyncio.run(_with_client(handler, args, writes=writes))

    return run


async def _with_client(handler: Handler, args: argparse.Namespace, *, writes: bool) -> int:
    from raftmq.client import Client, RaftMQError, RetryPolicy

    seeds = args.url if isinstance(args.url, list) else parse_seeds(str(args.url))
    if not args.timeout > 0:
        return _fail(args, "--timeout must be > 0", EXIT_USAGE)
    # A command that long-polls (consume) needs each attempt to outlast its wait.
    long_poll_s = float(getattr(args, "wait_ms", 0) or 0) / 1000.0
    long_poll_floor_s = long_poll_s + _LONG_POLL_MARGIN_S if long_poll_s > 0 else 0.0
    deadline_s = max(args.timeout, long_poll_floor_s)
    request_timeout_s = max(min(args.timeout, DEFAULT_TIMEOUT_S), long_poll_floor_s)
    try:
        async with Client.connect(seeds, retry=RetryPolicy(deadline_s=deadline_s),
                                  request_timeout_s=request_timeout_s) as client:
            return await handler(client, args)
    except RaftMQError as error:
        return _fail(args, describe_error(error, writes=writes), EXIT_FAILURE)
    except CliUsageError as error:
        return _fail(args, str(error), EXIT_USAGE)


def describe_error(error: RaftMQError, *, writes: bool) -> str:
    """`code: message`, the leader hint if any, and what is known of the outcome."""
    hint = f" (leader: {error.leader})" if error.leader else ""
    if not error.definite:
        outcome = " [outcome unknown: it may or may not have been applied]"
    elif writes:
        outcome = " [definite: nothing was applied]"
    else:
        outcome = ""
    return f"{error.code}: {error.message}{hint}{outcome}"


def _fail(args: argparse.Namespace, text: str, status: int) -> int:
    print(f"raftmq {args.command}: error: {text}", file=sys.stderr)
    return status


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns, the first row being the header."""
    if not rows:
        return
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())


def format_body(body: bytes) -> str:
    """A printable preview: text as is, binary as a hex prefix."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(body)} bytes: {body[:32].hex()}{'...' if len(body) > 32 else ''}>"
    return text if len(text) <= BODY_PREVIEW_CHARS else text[:BODY_PREVIEW_CHARS] + "..."


def jsonable(value: object) -> object:
    """Headers and bodies for --json: bytes that are not UTF-8 become {"b64": ...}."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    return value
