"""`check_run` on a finished run's directory: the history's verdict, and the CRITICAL lines of
the node logs listed beside it (pysyncobj truncating entries it had applied; the replica
digests, not the line, say whether replicas diverged)."""

from __future__ import annotations

import json
from pathlib import Path

from raftmq.chaos.runner import check_run
from tests.unit.chaos_histories import HistoryBuilder


def _run_dir(tmp_path: Path, log_line: str) -> Path:
    history = HistoryBuilder()
    history.publish("m1")
    history.consume("q", "m1", 1)
    history.drain(queue="q")
    (tmp_path / "history.jsonl").write_text("".join(op.to_json() + "\n" for op in history.ops))
    (tmp_path / "meta.json").write_text(json.dumps({"scenario": "test", "nodes": 0}))
    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes" / "n1.log").write_text(f"2026-11-28 INFO [n1] started\n{log_line}\n")
    return tmp_path


def test_a_clean_history_and_clean_logs_are_valid(tmp_path: Path) -> None:
    outcome = check_run(_run_dir(tmp_path, "2026-11-28 WARNING [n1] raft tick stalled"))
    assert outcome.valid and outcome.meta["critical_log_lines"] == []
    assert (tmp_path / "report.html").is_file() and (tmp_path / "result.json").is_file()


def test_a_critical_line_in_a_node_log_is_listed(tmp_path: Path) -> None:
    line = ("2026-11-28 17:25:16,822 CRITICAL [n3] pysyncobj.syncobj: truncating already-applied "
            "log entries from index 7042 (last applied: 11313)")
    outcome = check_run(_run_dir(tmp_path, line))
    assert outcome.valid
    assert outcome.meta["critical_log_lines"] == [f"n1: {line}"]
