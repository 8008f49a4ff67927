"""The `raftmq` command: `server`, `dev`, and the client-side commands (`publish`, `consume`,
`queues`, `streams`, `cluster status`, `bench`) built on the failover client, and `chaos`
(raftmq.chaos: the command is the one place the broker's package reaches into it).

Heavy modules (aiohttp, the Raft layer, the client) are imported by the subcommand that
needs them, so `raftmq --help` and configuration errors answer instantly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from raftmq.broker import cli_admin, cli_debug, cli_dev, cli_drain
from raftmq.broker.config import ConfigError, add_server_arguments, settings_from_namespace
from raftmq.chaos.cli import add_chaos_parser

__all__ = ["build_parser", "main"]


def _run_server(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.subparser
    try:
        settings = settings_from_namespace(args, os.environ)
    except ConfigError as exc:
        parser.error(str(exc))
    from raftmq.broker.node import run_server

    return run_server(settings)


def _add_server_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "server",
        help="run one broker node",
        description="Run one raftmq broker node. Every flag can also be set through the "
        "environment variable shown beside it; a flag wins over its variable.",
    )
    add_server_arguments(parser)
    parser.set_defaults(handler=_run_server, subparser=parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raftmq",
        description="raftmq: a Raft-replicated message broker (queues, exchanges, streams).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_server_parser(subparsers)
    cli_dev.add_dev_parser(subparsers)
    cli_admin.add_admin_parsers(subparsers)
    cli_debug.add_debug_parser(subparsers)
    cli_drain.add_drain_parsers(subparsers)
    add_chaos_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`raftmq consume ... | head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
