"""Raft timing and log-size options of `raftmq server`."""

from __future__ import annotations

import pytest

from tests.unit.test_config import BASE_FLAGS, parse, parse_error


def test_raft_timing_defaults_and_environment() -> None:
    settings = parse(BASE_FLAGS)
    assert (settings.election_timeout_min_ms, settings.election_timeout_max_ms,
            settings.heartbeat_ms, settings.max_log_bytes) == (1000, 2000, 50, 128 << 20)
    tuned = parse(BASE_FLAGS, {"RAFTMQ_ELECTION_TIMEOUT_MIN_MS": "300",
                               "RAFTMQ_ELECTION_TIMEOUT_MAX_MS": "600",
                               "RAFTMQ_HEARTBEAT_MS": "40", "RAFTMQ_MAX_LOG_BYTES": "64MiB"})
    assert (tuned.election_timeout_min_ms, tuned.election_timeout_max_ms,
            tuned.heartbeat_ms, tuned.max_log_bytes) == (300, 600, 40, 64 << 20)


@pytest.mark.parametrize(("flags", "complaint"), [
    (["--election-timeout-min-ms", "800", "--election-timeout-max-ms", "800"], "must be below"),
    (["--election-timeout-min-ms", "2500"], "must be below"),
    (["--election-timeout-min-ms", "100", "--heartbeat-ms", "50"], "must exceed 3 heartbeats"),
    (["--election-timeout-max-ms", "5000"], "connection timeout"),
    (["--heartbeat-ms", "0"], "positive"),
])
def test_inconsistent_raft_timing_is_refused(capsys: pytest.CaptureFixture[str], flags: list[str],
                                            complaint: str) -> None:
    assert complaint in parse_error(capsys, [*BASE_FLAGS, *flags])
