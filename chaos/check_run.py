"""Run-wide checks: publish outcomes against what arrived (failed_but_stored, recovered,
unknown_absent), replica digests after the final drain, and stalls (info)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Collection, Sequence

from raftmq.chaos.check_common import FaultWindow, Findings
from raftmq.chaos.check_model import HistoryModel

__all__ = ["check_outcomes", "check_replicas", "check_stalls", "longest_gap"]


def check_outcomes(model: HistoryModel, findings: Findings) -> None:
    first_arrival: dict[str, tuple[float, int, str]] = {}
    for delivery in model.deliveries:
        first_arrival.setdefault(delivery.id, (delivery.time_ms, delivery.index, f"queue {delivery.queue}"))
    for read in model.reads:
        seen = first_arrival.get(read.id)
        if seen is None or read.index < seen[1]:
            first_arrival[read.id] = (read.time_ms, read.index, f"stream {read.stream}")
    recovered: list[tuple[float, int, str]] = []
    absent: list[tuple[float, int, str]] = []
    for publish in model.publishes.values():
        arrival = first_arrival.get(publish.id)
        if publish.not_stored_for_sure and arrival is not None:
            how = f"failed ({publish.outcome})" if publish.outcome == "fail" else f"was {publish.status}"
            findings.add("failed_but_stored",
                         f"{publish.id!r} {how} but arrived in {arrival[2]} at op {arrival[1]}",
                         {"id": publish.id, "outcome": publish.outcome, "status": publish.status,
                          "done_index": publish.done_index, "arrival_index": arrival[1],
                          "arrived_in": arrival[2]},
                         arrival[0], arrival[1])
        elif publish.outcome_unknown:
            done_ms = publish.done_time_ms if publish.outcome == "unknown" else publish.invoke_time_ms
            done_index = publish.done_index if publish.outcome == "unknown" else publish.invoke_index
            (recovered if arrival is not None else absent).append((done_ms, done_index, publish.id))
    findings.add_summary("recovered", "publishes with an unknown outcome arrived", recovered)
    findings.add_summary("unknown_absent", "publishes with an unknown outcome never arrived", absent)


def check_replicas(model: HistoryModel, findings: Findings, nodes: Collection[str]) -> None:
    digests = model.digests
    if len({digest for digest, _, _ in digests.values()}) > 1:
        _, index, time_ms = max(digests.values(), key=lambda entry: entry[1])
        by_node = {node: digests[node][0] for node in sorted(digests)}
        groups: dict[str, list[str]] = {}
        for node, digest in by_node.items():
            groups.setdefault(digest, []).append(node)
        summary = "; ".join(f"{', '.join(members)}: {digest}" for digest, members in sorted(groups.items()))
        findings.add("replicas_differ", f"replica digests differ after the final drain ({summary})",
                     {"digests": by_node}, time_ms, index)
    expected = set(nodes) | model.nodes
    missing = sorted(expected - digests.keys())
    findings.add_summary("missing_digest", "nodes without a final replica digest",
                         [(model.end_ms, -1, node) for node in missing], {"expected": sorted(expected)})


def longest_gap(times_ms: Sequence[float]) -> tuple[float, float, float] | None:
    """(gap_ms, from_ms, to_ms) of the longest gap between consecutive sorted times."""
    best: tuple[float, float, float] | None = None
    for earlier, later in itertools.pairwise(times_ms):
        if best is None or later - earlier > best[0]:
            best = (later - earlier, earlier, later)
    return best


def check_stalls(model: HistoryModel, windows: Sequence[FaultWindow], findings: Findings) -> None:
    publish_ok_ms = sorted(publish.done_time_ms for publish in model.publishes.values()
                           if publish.outcome == "ok")
    flow_ms = sorted([delivery.time_ms for delivery in model.deliveries]
                     + [read.time_ms for read in model.reads])
    for what, times_ms, stat in (("publish ok", publish_ok_ms, "max_publish_gap_ms"),
                                 ("delivery or read", flow_ms, "max_delivery_gap_ms")):
        gap = longest_gap(times_ms)
        model.stats[stat] = round(gap[0]) if gap is not None else 0
        if gap is not None:
            findings.add("stall", f"longest time without a {what}: {gap[0]:.0f} ms "
                         f"(from {gap[1]:.0f} to {gap[2]:.0f} ms)",
                         {"what": what, "gap_ms": gap[0], "from_ms": gap[1], "to_ms": gap[2]}, gap[1], -1)
    for window in windows:
        publish_after = _first_at_or_after(publish_ok_ms, window.start_ms)
        flow_after = _first_at_or_after(flow_ms, window.start_ms)
        findings.add("stall",
                     f"fault {window.fault} at {window.start_ms:.0f} ms: first publish ok "
                     f"{_describe_delay(publish_after)}, "
                     f"first delivery or read {_describe_delay(flow_after)}",
                     {"fault": window.fault, "start_ms": window.start_ms, "stop_ms": window.stop_ms,
                      "nodes": list(window.nodes), "publish_ok_after_ms": publish_after,
                      "delivery_after_ms": flow_after},
                     window.start_ms, window.start_index)


def _first_at_or_after(times_ms: Sequence[float], start_ms: float) -> float | None:
    position = bisect.bisect_left(times_ms, start_ms)
    return times_ms[position] - start_ms if position < len(times_ms) else None


def _describe_delay(delay_ms: float | None) -> str:
    return "never" if delay_ms is None else f"{delay_ms:.0f} ms later"
