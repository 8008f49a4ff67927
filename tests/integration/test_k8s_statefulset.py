"""The StatefulSet booted from its own manifest (deploy/k8s, rendered with the kustomization),
without Kubernetes: each pod a process in its own network namespace, the headless Service's DNS
names in the namespaces' hosts files, the container's command, environment, probes and preStop
taken from the pod template (tests/integration/k8s_pods.py plays the kubelet).

Shows that the cluster forms from the derived identities, that the probes answer as configured
(readiness without quorum while bootstrapping, 503 while draining), and that a rolling restart
in reverse ordinal order, each pod through its preStop drain and onto a new IP, loses no
confirmed message of a producer and a consumer running in a client namespace. Then a scale-up:
a pod added to the membership joins; a pod that was not added waits instead of forming a cluster.
Needs root, `ip netns` and nftables: skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftmq.chaos.netns import Network, available
from tests.integration.k8s_pods import PodSet, load_template, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

WORKLOAD = Path(__file__).with_name("k8s_workload.py")
CLIENT = "client"
START_TIMEOUT_S = 30.0


def _run_id() -> str:
    return f"k{os.getpid() % 100000}{secrets.token_hex(2)}"


@pytest.fixture
def netns_usable() -> None:
    usable, reason = available()
    if not usable:
        pytest.skip(reason)


@pytest.fixture
def statefulset(netns_usable: None, tmp_path: Path, request: pytest.FixtureRequest,
                ) -> Iterator[PodSet]:
    """The StatefulSet's pods (ordinals 0..replicas, one spare for scaling), none started,
    plus a client namespace; everything torn down afterwards."""
    template = load_template(tmp_path / "k8s", secrets.token_hex(32))
    names = [f"{template.statefulset}-{i}" for i in range(template.replicas + 2)]
    network = Network.create(_run_id(), [*names, CLIENT])
    pods = PodSet(template, network, tmp_path / "pods", replicas=len(names))
    try:
        yield pods
    finally:
        pods.stop_all()
        network.teardown()
        report = getattr(request.node, "raftmq_report_call", None)
        if report is not None and report.failed:
            print(f"\n===== pod logs =====\n{pods.logs()}")


def _confirmed(out_dir: Path) -> int:
    path = out_dir / "confirmed"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _read_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            raise AssertionError(f"no output from the workload within {timeout_s} s")
    return process.stdout.readline().strip()


def _start_workload(pods: PodSet, out_dir: Path, names: list[str]) -> subprocess.Popen[str]:
    out_dir.mkdir(parents=True)
    seeds = [pods.url(name) for name in names]
    command = [*pods.network.exec_prefix(CLIENT), sys.executable, str(WORKLOAD), str(out_dir),
               "k8s-rolling", *seeds]
    with open(out_dir / "workload.log", "ab") as log_file:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=log_file, text=True)
    assert _read_line(process, START_TIMEOUT_S) == "READY"
    return process


def _stop_workload(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdin is not None
    process.stdin.write("STOP\n")
    process.stdin.close()
    summary: dict[str, Any] = json.loads(_read_line(process, 60.0))
    process.wait(timeout=20)
    return summary


def _start_bootstrap(pods: PodSet, names: list[str]) -> None:
    """Readiness must not wait for a quorum: the first pod is ready alone, with no leader."""
    first, *others = names
    pods.start(first)
    wait_until(lambda: pods.probe(first, "startupProbe") == 200, START_TIMEOUT_S, "startup")
    pods.wait_ready(first, START_TIMEOUT_S)
    status, alone = pods.get(first, "/v1/cluster") or (0, {})
    assert status == 200 and alone["leader_id"] is None and not alone["has_quorum"]
    for name in others:
        pods.start(name)


def _check_formed(pods: PodSet, names: list[str]) -> None:
    template = pods.template
    leader = wait_until(pods.leader, START_TIMEOUT_S, "a leader every pod agrees on")
    assert leader in names
    for name in names:
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert pods.probe(name, kind) == 200, (name, kind)

    def announced() -> dict[str, Any] | None:
        answer = pods.get(names[0], "/v1/cluster")
        nodes = {} if answer is None else answer[1]["nodes"]
        return nodes if len(nodes) == len(names) and all(
            "http_url" in meta for meta in nodes.values()) else None

    assert wait_until(announced, START_TIMEOUT_S, "every pod to announce itself") == {
        name: {"address": f"{template.pod_host(name)}:{template.port('raft')}",
               "http_url": f"http://{template.pod_host(name)}:{template.port('http')}"}
        for name in names}


def _drain_and_restart(pods: PodSet, name: str, out_dir: Path) -> None:
    """One step of the rolling update: preStop (checked while draining), SIGTERM, a new IP,
    start, ready, and the producer still confirming."""
    result = pods.run_pre_stop(name)
    assert result.returncode == 0, f"preStop of {name}: {result.stdout}{result.stderr}"
    assert f"{name} drained: " in result.stdout
    status, body = pods.get(name, "/readyz") or (0, {})
    assert (status, body["error"]["code"]) == (503, "draining")
    assert pods.probe(name, "livenessProbe") == 200  # draining is not dead
    _, view = pods.get(name, "/v1/cluster") or (0, {})
    assert view["role"] != "leader" and view["leader_id"] not in (None, name), view
    assert pods.terminate(name) == 0
    before = _confirmed(out_dir)
    pods.move_to_new_ip(name)
    pods.start(name)
    pods.wait_ready(name, START_TIMEOUT_S)
    wait_until(lambda: _confirmed(out_dir) >= before + 50, START_TIMEOUT_S,
               f"the producer to go on after {name} restarted")


def test_rolling_restart_through_prestop_loses_no_confirmed_message(
    statefulset: PodSet, tmp_path: Path,
) -> None:
    pods = statefulset
    names = [f"{pods.template.statefulset}-{i}" for i in range(pods.template.replicas)]
    assert len(names) == 3
    _start_bootstrap(pods, names)
    _check_formed(pods, names)
    out_dir = tmp_path / "workload"
    workload = _start_workload(pods, out_dir, names)
    try:
        wait_until(lambda: _confirmed(out_dir) >= 100, START_TIMEOUT_S, "first confirms")
        for name in reversed(names):  # the StatefulSet controller's order
            _drain_and_restart(pods, name, out_dir)
        summary = _stop_workload(workload)
    finally:
        if workload.poll() is None:
            workload.kill()
            workload.wait(timeout=10)
    assert summary["confirmed"] >= 300, summary
    assert summary["missing_count"] == 0, summary
    assert summary["failed"] == [], summary
    for name in names:
        assert [r.returncode for r in pods.pods[name].pre_stop_results] == [0]
    assert wait_until(pods.leader, START_TIMEOUT_S, "a leader after the rolling restart")


def test_scaled_up_pod_joins_only_once_added(statefulset: PodSet) -> None:
    pods = statefulset
    template = pods.template
    names = [f"{template.statefulset}-{i}" for i in range(template.replicas)]
    added, not_added = f"{template.statefulset}-3", f"{template.statefulset}-4"
    for name in names:
        pods.start(name)
    _check_formed(pods, names)
    # Not a member: it waits, says so, and never serves (no cluster of its own).
    pods.start(not_added)
    wait_until(lambda: "is not a member" in pods.pods[not_added].log_path.read_text(),
               START_TIMEOUT_S, f"{not_added} to say it is not a member")
    assert pods.probe(not_added, "startupProbe") is None
    # Added first, as deploy/k8s/scale.sh does: it joins and catches up.
    local_url = f"http://127.0.0.1:{template.port('http')}"
    raft_address = f"{template.pod_host(added)}:{template.port('raft')}"
    result = pods.exec(names[0], ["raftmq", "cluster", "add-member", added, raft_address,
                                  "--url", local_url], 60)
    assert result.returncode == 0, result.stderr
    # Not started yet: it cannot be caught up.
    result = pods.exec(names[0], ["raftmq", "wait-caught-up", added, "--url", local_url,
                                  "--timeout", "1"], 60)
    assert result.returncode == 1 and "not connected" in result.stderr, result.stderr
    pods.start(added)
    pods.wait_ready(added, START_TIMEOUT_S)
    wait_until(lambda: (pods.get(added, "/v1/cluster") or (0, {}))[1].get("leader_id") in names,
               START_TIMEOUT_S, f"{added} to follow the leader")
    _, view = pods.get(added, "/v1/cluster") or (0, {})
    assert set(view["nodes"]) == {*names, added}
    assert pods.probe(not_added, "startupProbe") is None  # still waiting
