"""`check(history)`: every chaos check over a recorded history, as one `CheckResult`.

Pure: no I/O, no clock; the same history always gives the same result, anomalies sorted by
(kind, time, op index). A history that breaks the format raises `HistoryError` before any
check runs: a recorder bug must not read as a broker bug.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from raftmq.chaos.check_common import CHECKERS, INFO_KINDS, VIOLATION_KINDS, Anomaly, Findings, fault_windows
from raftmq.chaos.check_model import build_model
from raftmq.chaos.check_queues import check_queues
from raftmq.chaos.check_run import check_outcomes, check_replicas, check_stalls
from raftmq.chaos.check_streams import check_streams
from raftmq.chaos.history import Op, validate_history

__all__ = ["CHECKERS", "INFO_KINDS", "VIOLATION_KINDS", "Anomaly", "CheckResult", "check"]

# Model counters renamed for the result (events are counted as what they are).
_STAT_NAMES = {"deliver_event": "deliveries", "read_event": "reads", "nemesis_event": "nemesis_events",
               "final_event": "final_events", "workload_event": "workloads"}


@dataclass(frozen=True)
class CheckResult:
    valid: bool
    # Findings per anomaly kind, every kind present (0 when none). Info kinds that are
    # summarised into one anomaly count each finding.
    counts: dict[str, int]
    anomalies: list[Anomaly]
    stats: dict[str, int | float]

    @property
    def violations(self) -> list[Anomaly]:
        return [anomaly for anomaly in self.anomalies if anomaly.violation]

    def to_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "counts": dict(self.counts), "stats": dict(self.stats),
                "anomalies": [anomaly.to_dict() for anomaly in self.anomalies]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def check(history: Sequence[Op], *, nodes: Collection[str] = ()) -> CheckResult:
    """Check a history. `nodes`: the cluster's node names when the caller knows them (the
    history also names nodes in the workload's optional "nodes" and in nemesis events); a node
    without a final replica digest is reported as missing_digest (info)."""
    validate_history(history)
    model = build_model(history)
    findings = Findings()
    check_queues(model, findings)
    check_streams(model, findings)
    check_outcomes(model, findings)
    check_replicas(model, findings, nodes)
    windows = fault_windows(history)
    check_stalls(model, windows, findings)
    stats: dict[str, int | float] = {
        _STAT_NAMES.get(name, name): count for name, count in model.stats.items()}
    stats["ops"] = len(history)
    stats["duration_ms"] = model.end_ms - model.start_ms
    stats["fault_windows"] = len(windows)
    anomalies = sorted(findings.anomalies, key=Anomaly.sort_key)
    counts = {kind: findings.counts.get(kind, 0) for kinds in CHECKERS.values() for kind in kinds}
    valid = not any(anomaly.violation for anomaly in anomalies)
    return CheckResult(valid, counts, anomalies, dict(sorted(stats.items())))
