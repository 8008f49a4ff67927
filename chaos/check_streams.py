"""Stream checks: unexpected, duplicated (one id at two positions), divergent_read (one
position holding two ids), lost and order (per key: one partition; per producer and partition:
offsets follow real time).

A position is claimed by a read and by a publish ok that names it (only when the publish has a
single stream target: the ok carries one partition and offset)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from raftmq.chaos.check_common import Findings, Placed, lost_kind, order_inversions
from raftmq.chaos.check_model import HistoryModel, Publish

__all__ = ["check_streams"]


@dataclass(frozen=True, slots=True)
class _Claim:
    index: int
    time_ms: float
    stream: str
    partition: int
    offset: int
    id: str
    source: str  # "read" | "publish ok"

    def where(self) -> str:
        return f"{self.stream}[{self.partition}]@{self.offset}"


def check_streams(model: HistoryModel, findings: Findings) -> None:
    positions = _check_claims(model, findings)
    _check_lost(model, positions, findings)
    _check_order(model, positions, findings)


def _claims(model: HistoryModel) -> list[_Claim]:
    claims = [_Claim(read.index, read.time_ms, read.stream, read.partition, read.offset, read.id, "read")
              for read in model.reads]
    for publish in model.publishes.values():
        stream_targets = publish.stream_targets
        if (publish.outcome == "ok" and len(stream_targets) == 1 and publish.partition is not None
                and publish.offset is not None):
            claims.append(_Claim(publish.done_index, publish.done_time_ms, stream_targets[0],
                                 publish.partition, publish.offset, publish.id, "publish ok"))
    claims.sort(key=lambda claim: claim.index)
    return claims


def _check_claims(model: HistoryModel, findings: Findings) -> dict[tuple[str, str], _Claim]:
    """Walks every claim in history order; returns (stream, id) -> the first claim (its position)
    of each id that a read or an ok placed."""
    first_by_id: dict[tuple[str, str], _Claim] = {}
    seen_positions: set[tuple[str, str, int, int]] = set()
    holders: dict[tuple[str, int, int], _Claim] = {}
    divergent_reported: set[tuple[str, int, int, str]] = set()
    for claim in _claims(model):
        id_key = (claim.stream, claim.id)
        position = (claim.stream, claim.partition, claim.offset)
        first = first_by_id.setdefault(id_key, claim)
        if first is claim and claim.source == "read":
            _check_placement(model, claim, findings)
        if (*id_key, claim.partition, claim.offset) not in seen_positions:
            seen_positions.add((*id_key, claim.partition, claim.offset))
            if first is not claim:
                findings.add("duplicated",
                             f"{claim.id!r} at two positions of stream {claim.stream}: {first.where()} "
                             f"({first.source}) and {claim.where()} ({claim.source})",
                             {"reason": "two_positions", "id": claim.id, "stream": claim.stream,
                              "positions": [[first.partition, first.offset],
                                            [claim.partition, claim.offset]]},
                             claim.time_ms, claim.index)
        holder = holders.setdefault(position, claim)
        if holder.id != claim.id and (*position, claim.id) not in divergent_reported:
            divergent_reported.add((*position, claim.id))
            findings.add("divergent_read",
                         f"{claim.where()} holds {holder.id!r} ({holder.source}, op {holder.index}) and "
                         f"{claim.id!r} ({claim.source})",
                         {"stream": claim.stream, "partition": claim.partition, "offset": claim.offset,
                          "ids": [holder.id, claim.id], "sources": [holder.source, claim.source]},
                         claim.time_ms, claim.index)
    return first_by_id



def _check_placement(model: HistoryModel, claim: _Claim, findings: Findings) -> None:
    publish = model.publishes.get(claim.id)
    if publish is None:
        problem = "it was never published"
    elif claim.stream not in publish.targets:
        problem = f"stream {claim.stream} is not one of its targets {list(publish.targets)}"
    else:
        return
    findings.add("unexpected", f"{claim.id!r} read at {claim.where()}: {problem}",
                 {"id": claim.id, "stream": claim.stream, "partition": claim.partition,
                  "offset": claim.offset,
                  "targets": None if publish is None else list(publish.targets)},
                 claim.time_ms, claim.index)


def _check_lost(model: HistoryModel, positions: dict[tuple[str, str], _Claim], findings: Findings) -> None:
    read_ids = {(read.stream, read.id) for read in model.reads}
    for publish in model.publishes.values():
        if not publish.stored_for_sure:
            continue
        for stream in publish.stream_targets:
            if (stream, publish.id) in read_ids:
                continue
            claim = positions.get((stream, publish.id))
            findings.add(lost_kind(model.drained("stream", stream)),
                         f"{publish.id!r} published ok but never read from stream {stream}",
                         {"id": publish.id, "stream": stream, "producer": publish.producer,
                          "ok_index": publish.done_index,
                          "position": None if claim is None else [claim.partition, claim.offset],
                          "drain_complete": model.drained("stream", stream)},
                         publish.done_time_ms, publish.done_index)


def _check_order(model: HistoryModel, positions: dict[tuple[str, str], _Claim], findings: Findings) -> None:
    per_partition: dict[tuple[str, str, int], list[Placed]] = defaultdict(list)
    key_partition: dict[tuple[str, str], tuple[int, str]] = {}
    split_reported: set[tuple[str, str, int]] = set()
    for publish in model.publishes.values():
        ok_index = publish.done_index if publish.outcome == "ok" else None
        for stream in publish.stream_targets:
            claim = positions.get((stream, publish.id))
            if claim is None:
                continue
            per_partition[(publish.producer, stream, claim.partition)].append(
                Placed(publish.id, publish.invoke_index, ok_index, claim.offset))
            if publish.key is None:
                continue
            first_partition, first_id = key_partition.setdefault(
                (stream, publish.key), (claim.partition, publish.id))
            split_key = (stream, publish.key, claim.partition)
            if first_partition != claim.partition and split_key not in split_reported:
                split_reported.add(split_key)
                _key_split(findings, publish, stream, (first_partition, first_id), claim.partition)
    for (producer, stream, partition), placed in sorted(per_partition.items()):
        for earlier, later in order_inversions(placed):
            op = model.publishes[later.id]
            findings.add("order",
                         f"stream {stream} partition {partition}, producer {producer}: {earlier.id!r} (ok "
                         f"before {later.id!r} was sent) has offset {earlier.position} > {later.position}",
                         {"reason": "offsets", "stream": stream, "partition": partition, "producer": producer,
                          "earlier": earlier.id, "later": later.id, "earlier_offset": earlier.position,
                          "later_offset": later.position},
                         op.invoke_time_ms, op.invoke_index)


def _key_split(findings: Findings, publish: Publish, stream: str, first: tuple[int, str],
               partition: int) -> None:
    findings.add("order",
                 f"stream {stream} key {publish.key!r} in two partitions: {first[0]} ({first[1]!r}) and "
                 f"{partition} ({publish.id!r})",
                 {"reason": "key_in_two_partitions", "stream": stream, "key": publish.key,
                  "partitions": [first[0], partition], "ids": [first[1], publish.id]},
                 publish.invoke_time_ms, publish.invoke_index)
