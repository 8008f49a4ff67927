"""deploy/k8s/scale.sh against a fake kubectl that models a StatefulSet and the Raft membership:
the order of membership changes and pod changes for 3 -> 5 -> 3, and its refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "scale.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="scale.sh needs bash")

# The fake: state in a JSON file; every call appended to it as one short line.
FAKE_KUBECTL = r'''
import json, sys
from pathlib import Path

state_path = Path(__file__).with_name("state.json")
state = json.loads(state_path.read_text())
args = sys.argv[1:]
assert args[:2] == ["-n", state["namespace"]], args
args = args[2:]

def pods():
    return [f"raftmq-{i}" for i in range(state["replicas"])]

def done(line, code=0, out=""):
    state["calls"].append(line)
    state_path.write_text(json.dumps(state))
    if out:
        print(out)
    sys.exit(code)

if args[:2] == ["get", "statefulset"]:
    done("get replicas", out=str(state["replicas"]))
if args[:2] == ["get", "pod"]:
    done(f"get pod {args[2]}", 0 if args[2] in pods() else 1)
if args[0] == "scale":
    state["replicas"] = int(args[-1].split("=")[1])
    done(f"scale {state['replicas']}")
if args[0] == "wait":
    pod = args[2].split("/")[1]
    done(f"wait {args[1].split('=')[1]} {pod}")
if args[:2] == ["delete", "pvc"]:
    done(f"delete pvc {args[2]}")
if args[0] == "exec":
    pod, command = args[1], args[args.index("--") + 1:]
    assert command[0] == "raftmq" and pod in pods(), (pod, command)
    if pod in state["failing_pods"]:
        done(f"{pod}: {command[1]} failed", 1)
    if command[1:3] == ["cluster", "add-member"]:
        node_id, address = command[3], command[4]
        state["members"][node_id] = address
        done(f"{pod}: add-member {node_id} {address}")
    if command[1:3] == ["cluster", "remove-member"]:
        node_id = command[3]
        if node_id not in state["members"]:
            print("raftmq cluster: error: member_not_found: no such member", file=sys.stderr)
            done(f"{pod}: remove-member {node_id} (not a member)", 1)
        del state["members"][node_id]
        done(f"{pod}: remove-member {node_id}")
    if command[1] == "wait-caught-up":
        done(f"{pod}: wait-caught-up {command[2]}", 0 if command[2] in state["members"] else 1)
    if command[1] == "drain":
        done(f"{pod}: drain")
done(f"unexpected: {args}", 3)
'''


class Fake:
    def __init__(self, base: Path, replicas: int, members: int) -> None:
        self.base = base
        self.kubectl = base / "kubectl"
        self.kubectl.write_text(f"#!{sys.executable}\n{FAKE_KUBECTL}")
        self.kubectl.chmod(0o755)
        address = "raftmq-{}.raftmq-headless.prod.svc.cluster.local:7000"
        self.write({"namespace": "prod", "replicas": replicas, "calls": [], "failing_pods": [],
                    "members": {f"raftmq-{i}": address.format(i) for i in range(members)}})

    def read(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads((self.base / "state.json").read_text())
        return state

    def write(self, state: dict[str, Any]) -> None:
        (self.base / "state.json").write_text(json.dumps(state))

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, "KUBECTL": str(self.kubectl), "NAMESPACE": "prod", **env}
        return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                              env=environment, timeout=60)

    def calls(self) -> list[str]:
        return [call for call in self.read()["calls"] if not call.startswith("get ")]


def test_scale_up_adds_each_member_before_its_pod(tmp_path: Path) -> None:
    fake = Fake(tmp_path, replicas=3, members=3)
    result = fake.run("5")
    assert result.returncode == 0, result.stderr
    host = "raftmq-{}.raftmq-headless.prod.svc.cluster.local:7000"
    assert fake.calls() == [
        f"raftmq-0: add-member raftmq-3 {host.format(3)}", "scale 4",
        "wait condition raftmq-3", "raftmq-0: wait-caught-up raftmq-3",
        f"raftmq-0: add-member raftmq-4 {host.format(4)}", "scale 5",
        "wait condition raftmq-4", "raftmq-0: wait-caught-up raftmq-4",
    ]
    assert sorted(fake.read()["members"]) == [f"raftmq-{i}" for i in range(5)]


def test_scale_down_removes_each_member_then_its_pod_and_volume(tmp_path: Path) -> None:
    fake = Fake(tmp_path, replicas=5, members=5)
    result = fake.run("3")
    assert result.returncode == 0, result.stderr
    assert fake.calls() == [
        "raftmq-4: drain", "raftmq-0: remove-member raftmq-4", "scale 4", "wait delete raftmq-4",
        "delete pvc data-raftmq-4",
        "raftmq-3: drain", "raftmq-0: remove-member raftmq-3", "scale 3", "wait delete raftmq-3",
        "delete pvc data-raftmq-3",
    ]
    assert sorted(fake.read()["members"]) == ["raftmq-0", "raftmq-1", "raftmq-2"]


def test_a_rerun_after_a_removal_finishes_the_job(tmp_path: Path) -> None:
    fake = Fake(tmp_path, replicas=4, members=3)  # raftmq-3 removed, its pod still there
    result = fake.run("3")
    assert result.returncode == 0, result.stderr
    assert fake.calls()[:2] == ["raftmq-3: drain", "raftmq-0: remove-member raftmq-3 (not a member)"]
    assert fake.calls()[2:] == ["scale 3", "wait delete raftmq-3", "delete pvc data-raftmq-3"]


def test_a_failed_drain_stops_before_any_change(tmp_path: Path) -> None:
    fake = Fake(tmp_path, replicas=5, members=5)
    state = fake.read()
    state["failing_pods"] = ["raftmq-4"]
    fake.write(state)
    result = fake.run("3")
    assert result.returncode == 1
    assert "could not drain raftmq-4" in result.stderr
    assert fake.calls() == ["raftmq-4: drain failed"]
    assert fake.read()["replicas"] == 5 and len(fake.read()["members"]) == 5


@pytest.mark.parametrize(("replicas", "coordinator", "message"), [
    ("0", "raftmq-0", "REPLICAS must be a positive integer"),
    ("three", "raftmq-0", "REPLICAS must be a positive integer"),
    ("2", "raftmq-2", "COORDINATOR raftmq-2 would be removed itself"),
])
def test_refusals(tmp_path: Path, replicas: str, coordinator: str, message: str) -> None:
    fake = Fake(tmp_path, replicas=3, members=3)
    result = fake.run(replicas, COORDINATOR=coordinator)
    assert result.returncode == 1
    assert message in result.stderr
    assert fake.calls() == []


def test_usage_and_nothing_to_do(tmp_path: Path) -> None:
    fake = Fake(tmp_path, replicas=3, members=3)
    assert fake.run().returncode == 2
    result = fake.run("3")
    assert result.returncode == 0 and "already has 3 replicas" in result.stderr
    assert fake.calls() == []
