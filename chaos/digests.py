"""Replica digests after the drain: every node's state hash at one common applied index.

Replicas that applied the same log prefix must hold identical state; comparing them at
different indices would only show lag. So the nodes are sampled until all report the same
applied index, and their digests at that index are what the checker compares.
"""

from __future__ import annotations

import asyncio
import time

from raftmq.chaos.launcher import ChaosCluster

__all__ = ["collect_digests"]

_CONVERGE_TIMEOUT_S = 60.0
_POLL_S = 0.1


async def collect_digests(cluster: ChaosCluster, timeout_s: float = _CONVERGE_TIMEOUT_S
                          ) -> dict[str, str]:
    """{node: digest} at one applied index shared by every node. A node still apart when the
    time is up gets a digest naming its index ("unconverged@N"), which the checker reports
    as replicas that differ: after a heal and a drain they should have converged."""
    deadline = time.monotonic() + timeout_s
    while True:
        sample = await asyncio.to_thread(_sample, cluster)
        indices = {index for index, _ in sample.values()}
        if len(sample) == len(cluster.nodes) and len(indices) == 1:
            return {node: digest for node, (_, digest) in sample.items()}
        if time.monotonic() >= deadline:
            return {node: (sample[node][1] if node in sample else "unanswered")
                    if len(indices) == 1 else
                    (f"unconverged@{sample[node][0]}" if node in sample else "unanswered")
                    for node in cluster.nodes}
        await asyncio.sleep(_POLL_S)


def _sample(cluster: ChaosCluster) -> dict[str, tuple[int, str]]:
    sample: dict[str, tuple[int, str]] = {}
    for name in cluster.nodes:
        answer = cluster.get_json(name, "/v1/cluster/digest")
        if answer is None or answer[0] != 200 or not isinstance(answer[1], dict):
            continue
        index, digest = answer[1].get("applied_index"), answer[1].get("digest")
        if isinstance(index, int) and isinstance(digest, str):
            sample[name] = (index, digest)
    return sample
