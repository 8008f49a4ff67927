"""Fixtures for integration tests: real clusters that are always torn down.

On a failed test the last lines of every node's log are printed in the teardown section of
the report, so a failure in CI explains itself.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster_harness import ClusterHarness

ClusterFactory = Callable[..., ClusterHarness]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"raftmq_report_{report.when}", report)
    return report


def _test_failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"raftmq_report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


@pytest.fixture
def cluster_factory(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[ClusterFactory]:
    """`make(size=3, **options)` builds (not starts) clusters; all are stopped at teardown."""
    created: list[ClusterHarness] = []

    def make(size: int = 3, **options: Any) -> ClusterHarness:
        harness = ClusterHarness(tmp_path / f"cluster{len(created)}", size, **options)
        created.append(harness)
        return harness

    yield make
    for harness in created:
        harness.stop()
        if _test_failed(request):
            print(f"\n===== logs of {harness.base_dir} =====\n{harness.dump_logs()}")


@pytest.fixture
def cluster(cluster_factory: ClusterFactory) -> ClusterHarness:
    """A started 3-node cluster with an elected leader (fsync=never for speed)."""
    harness = cluster_factory(3)
    harness.start()
    harness.wait_for_leader(timeout_s=30.0)
    return harness
