"""raftmq.chaos: a real cluster under faults, workloads that record histories, and checkers.

    raftmq chaos run --scenario all --duration 10m      # the command line (docs/chaos.md)

Library use: `run_chaos(RunOptions(...))` for a whole run; `check(load_history(path))` and
`write_report(...)` to check and report a history; `ChaosCluster` and `Network` to build
other experiments on real processes and real partitions.
"""

from raftmq.chaos.checker import Anomaly, CheckResult, check
from raftmq.chaos.history import HistoryError, HistoryWriter, Op, load_history, run_clock_ms
from raftmq.chaos.launcher import ChaosCluster
from raftmq.chaos.netns import Network
from raftmq.chaos.report import write_report
from raftmq.chaos.timeline import bucket

__all__ = [
    "Anomaly",
    "ChaosCluster",
    "CheckResult",
    "HistoryError",
    "HistoryWriter",
    "Network",
    "Op",
    "bucket",
    "check",
    "load_history",
    "run_clock_ms",
    "write_report",
]
