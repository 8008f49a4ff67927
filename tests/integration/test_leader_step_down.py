"""A leader cut off from its followers answers its pending writes as unknown once it steps down.

Both followers are paused (SIGSTOP), so the leader keeps accepting a publish it can never
commit. It steps down after the leader fallback timeout (2.5 s without a majority); the
publish must then end at once as an unknown outcome (503 `leadership_lost`, definite false),
which a client retries elsewhere, rather than hold its caller until the 10 s proposal deadline.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from tests.integration.cluster_harness import ClusterHarness
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PROPOSE_TIMEOUT_S = 10.0


def _post(url: str, document: object, timeout_s: float) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=json.dumps(document).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_an_isolated_leader_fails_pending_writes_as_unknown_when_it_steps_down(
        cluster_factory: ClusterFactory) -> None:
    harness: ClusterHarness = cluster_factory(
        3, server_args=("--propose-timeout-s", str(PROPOSE_TIMEOUT_S)))
    harness.start()
    leader = harness.wait_for_leader(timeout_s=30.0)
    harness.wait_ready()
    url = harness.nodes[leader].url
    request = urllib.request.Request(f"{url}/v1/queues/q", data=b"{}", method="PUT",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10.0) as reply:
        assert reply.status in (200, 201)
    followers = [name for name in harness.nodes if name != leader]
    for name in followers:
        harness.pause(name)
    try:
        started = time.monotonic()
        status, answer = _post(f"{url}/v1/queues/q/publish",
                               {"messages": [{"body": "cut off"}]}, PROPOSE_TIMEOUT_S + 5)
        elapsed_s = time.monotonic() - started
    finally:
        for name in followers:
            harness.resume(name)
    error = answer.get("error")
    assert status == 503 and isinstance(error, dict), answer
    assert error["code"] == "leadership_lost" and error["definite"] is False
    # Stepping down takes the 2.5 s fallback timeout (and a tick); the deadline is 10 s.
    assert elapsed_s < PROPOSE_TIMEOUT_S - 3, f"answered after {elapsed_s:.1f} s"
    harness.wait_for_leader(timeout_s=30.0)
