"""`raftmq chaos run | report | scenarios`: the chaos suite from the command line."""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
from pathlib import Path

from raftmq.chaos.schedule import FAULTS, NETWORK_FAULTS, SCENARIOS

__all__ = ["add_chaos_parser", "parse_duration_s"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_WORKLOADS = ("queue", "fanout", "stream")


def parse_duration_s(text: str) -> float:
    """'90', '90s', '10m', '1.5h' -> seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 10m, 1h)")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds <= 0:
        raise argparse.ArgumentTypeError("a duration must be positive")
    return seconds


def _workloads(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in _WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"workloads are a comma-separated subset of {', '.join(_WORKLOADS)}")
    return names


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_chaos_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chaos = subparsers.add_parser(
        "chaos", help="kill, pause and partition a real cluster under load, then check",
        description="Run a real cluster under a seeded fault schedule with workloads that "
        "record every operation, then check the history for lost, duplicated or reordered "
        "messages and write an HTML report.")
    actions = chaos.add_subparsers(dest="chaos_command", metavar="ACTION", required=True)
    run = actions.add_parser("run", help="one chaos run (exit status 1 on any violation)",
                             description="Start a cluster, run workloads under faults, heal, "
                             "drain, check. Exit status: 0 valid, 1 violations, 2 usage.")
    run.add_argument("--scenario", default="smoke",
                     help="a scenario or fault, or several comma-separated (see `raftmq chaos "
                     "scenarios`; default smoke)")
    run.add_argument("--duration", type=parse_duration_s, default=60.0, metavar="TIME",
                     help="how long faults keep coming, e.g. 90s or 10m (default 60s); every "
                     "fault of the scenario gets at least one turn")
    run.add_argument("--seed", type=int, default=None,
                     help="seed of the schedule and the workloads (default: random, printed)")
    run.add_argument("--nodes", type=int, choices=(3, 5), default=3, help="cluster size")
    run.add_argument("--network", choices=("netns", "loopback"), default="netns",
                     help="netns: a network namespace per node, real partitions (root, "
                     "`ip`, `nft`); loopback: 127.0.0.1, no partition faults (default netns)")
    run.add_argument("--fsync", choices=("always", "never"), default="always")
    run.add_argument("--workload", type=_workloads, default=_WORKLOADS, metavar="LIST",
                     help="comma-separated: queue, fanout, stream (default all)")
    run.add_argument("--rate", type=float, default=200.0, metavar="MSGS_PER_S",
                     help="publishes per second per workload (default 200)")
    run.add_argument("--drain-timeout", type=parse_duration_s, default=120.0, metavar="TIME")
    run.add_argument("--out", type=Path, default=Path("chaos-runs"),
                     help="where run directories go (default ./chaos-runs)")
    run.add_argument("--repeat", type=_positive_int, default=1,
                     help="runs in a row, seeds seed, seed+1, ... (default 1)")
    run.add_argument("--test-fault", default=None, metavar="FAULT",
                     help="run a deliberately broken broker (e.g. drop-publish-every=50) to see "
                     "the checker fail")
    run.set_defaults(handler=_run, subparser=run)
    report = actions.add_parser("report", help="check a finished run again and rewrite its report")
    report.add_argument("run_dir", type=Path, help="a run directory (holds history.jsonl)")
    report.set_defaults(handler=_report, subparser=report)
    scenarios = actions.add_parser("scenarios", help="list scenarios and faults")
    scenarios.set_defaults(handler=_scenarios, subparser=scenarios)


def _run(args: argparse.Namespace) -> int:
    from raftmq.chaos.launcher import NETNS
    from raftmq.chaos.netns import available
    from raftmq.chaos.runner import RunOptions, run_chaos
    from raftmq.chaos.schedule import ScheduleError

    parser: argparse.ArgumentParser = args.subparser
    if args.network == NETNS:
        usable, reason = available()
        if not usable:
            parser.error(f"network namespaces are not usable here ({reason}); "
                         "run with --network loopback to go without partition faults")
    seed = args.seed if args.seed is not None else secrets.randbelow(1_000_000)
    failures = 0
    for run_index in range(args.repeat):
        options = RunOptions(
            out_dir=args.out, scenario=args.scenario, duration_s=args.duration,
            seed=seed + run_index, nodes=args.nodes, network=args.network, fsync=args.fsync,
            workloads=args.workload, rate_per_s=args.rate, drain_timeout_s=args.drain_timeout,
            test_fault=args.test_fault)
        print(f"chaos: run {run_index + 1}/{args.repeat}: scenario {args.scenario}, "
              f"seed {options.seed}", flush=True)
        try:
            outcome = asyncio.run(run_chaos(options))
        except ScheduleError as error:
            parser.error(str(error))
        failures += not outcome.valid
    return 1 if failures else 0


def _report(args: argparse.Namespace) -> int:
    from raftmq.chaos.runner import check_run

    parser: argparse.ArgumentParser = args.subparser
    if not (args.run_dir / "history.jsonl").is_file() or not (args.run_dir / "meta.json").is_file():
        parser.error(f"{args.run_dir} holds no history.jsonl and meta.json of a chaos run")
    outcome = check_run(args.run_dir)
    result = outcome.result
    print("VALID" if outcome.valid else "INVALID")
    for kind, count in sorted(result.counts.items()):
        print(f"  {kind:28} {count}")
    for line in outcome.meta.get("critical_log_lines", []):
        print(f"  CRITICAL in a node log: {line}")
    print(f"report: {args.run_dir / 'report.html'}")
    return 0 if outcome.valid else 1


def _scenarios(_args: argparse.Namespace) -> int:
    print("faults (hold time in seconds; * needs --network netns):")
    for name, (shortest, longest) in FAULTS.items():
        mark = "*" if name in NETWORK_FAULTS else " "
        print(f"  {mark} {name:20} {shortest:g}-{longest:g}")
    print("scenarios:")
    for name, faults in SCENARIOS.items():
        if len(faults) > 1:
            print(f"    {name:20} {', '.join(faults)}")
    return 0
