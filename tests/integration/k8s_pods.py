"""The StatefulSet's pods without Kubernetes: the kubelet's part, played from the manifest.

`load_template` renders deploy/k8s with the manifests' own loader (tests/unit/k8s_render.py,
which applies the kustomization: namespace, generated Secret) and takes the pod template of
the StatefulSet. `PodSet` then runs each pod as one process in its own network namespace
(raftmq.chaos.netns) with the headless Service's per-pod DNS names in the namespaces' hosts
files, doing what a kubelet does with the container spec:
- the command and args, `$(VAR)` references expanded;
- the environment: `env` over `envFrom`, `fieldRef` (metadata.name/namespace, status.podIP),
  `configMapKeyRef` and `secretKeyRef` resolved from the rendered ConfigMap and Secret;
- volumes: a persistent directory per volume claim template (kept across restarts), the
  Secret's keys as files, a fresh emptyDir per start. Processes share one filesystem, so the
  mount paths are rewritten to those directories wherever the environment names them;
- probes: HTTP GETs on the pod's IP at the probe's path and port (named ports resolved);
- stopping: the preStop command inside the pod's namespace, then SIGTERM, then SIGKILL once
  `terminationGracePeriodSeconds` (counted from the start of the preStop) has passed
  (`run_pre_stop`, then `terminate`).
Each restart gives the pod a new IP (as most CNIs do), so peers must re-resolve its name.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ipaddress
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftmq.chaos.netns import Network
from raftmq.chaos.netns_rules import NODE_INTERFACE

__all__ = ["Pod", "PodSet", "PodTemplate", "Probe", "load_template", "wait_until"]

REPO_ROOT = Path(__file__).resolve().parents[2]
# The image's PATH holds `raftmq`; here it is the script beside this interpreter.
BIN_DIR = Path(sys.executable).parent
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")
_HTTP_TIMEOUT_S = 2.0
_PR_SET_PDEATHSIG = 1

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Probe:
    path: str
    port: int


@dataclass(frozen=True)
class PodTemplate:
    statefulset: str
    namespace: str
    service_name: str
    replicas: int
    grace_period_s: int
    container: Manifest
    volumes: dict[str, Manifest]
    claim_names: frozenset[str]
    configmaps: dict[str, dict[str, str]]
    secrets: dict[str, dict[str, bytes]]

    @property
    def command(self) -> list[str]:
        return [*self.container.get("command", []), *self.container.get("args", [])]

    @property
    def pre_stop(self) -> list[str]:
        return list(self.container["lifecycle"]["preStop"]["exec"]["command"])

    def port(self, name_or_number: int | str) -> int:
        if isinstance(name_or_number, int):
            return name_or_number
        for port in self.container.get("ports", []):
            if port.get("name") == name_or_number:
                return int(port["containerPort"])
        raise LookupError(f"no container port named {name_or_number!r}")

    def probe(self, kind: str) -> Probe:
        """`kind`: startupProbe, livenessProbe or readinessProbe (HTTP GETs only)."""
        http_get = self.container[kind]["httpGet"]
        assert http_get.get("scheme", "HTTP") == "HTTP", http_get
        return Probe(str(http_get["path"]), self.port(http_get["port"]))

    def pod_host(self, pod: str) -> str:
        return f"{pod}.{self.service_name}.{self.namespace}.svc.cluster.local"


def load_template(work_dir: Path, secret: str) -> PodTemplate:
    """The StatefulSet's pod template, from the kustomization rendered with `secret`."""
    from tests.unit.k8s_render import find_manifest, render_kustomization, stage_kustomization

    manifests = render_kustomization(stage_kustomization(work_dir, secret))
    [statefulset] = [m for m in manifests if m["kind"] == "StatefulSet"]
    spec = statefulset["spec"]
    pod_spec = spec["template"]["spec"]
    [container] = [c for c in pod_spec["containers"] if c["name"] == "raftmq"]
    service = find_manifest(manifests, "Service", spec["serviceName"])
    assert service["spec"].get("clusterIP") == "None", "the serviceName must be headless"
    return PodTemplate(
        statefulset=statefulset["metadata"]["name"],
        namespace=statefulset["metadata"]["namespace"],
        service_name=spec["serviceName"],
        replicas=int(spec["replicas"]),
        grace_period_s=int(pod_spec.get("terminationGracePeriodSeconds", 30)),
        container=container,
        volumes={volume["name"]: volume for volume in pod_spec.get("volumes", [])},
        claim_names=frozenset(claim["metadata"]["name"]
                              for claim in spec.get("volumeClaimTemplates", [])),
        configmaps={m["metadata"]["name"]: dict(m.get("data", {}))
                    for m in manifests if m["kind"] == "ConfigMap"},
        secrets={m["metadata"]["name"]: {k: _b64(v) for k, v in m.get("data", {}).items()}
                 for m in manifests if m["kind"] == "Secret"},
    )


def _b64(text: str) -> bytes:
    return base64.b64decode(text)


def expand(text: str, env: Mapping[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion: unknown references stay as written, `$$` is `$`."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(one, text)


def _field(path: str, pod: str, namespace: str, pod_ip: str) -> str:
    values = {"metadata.name": pod, "metadata.namespace": namespace, "status.podIP": pod_ip}
    if path not in values:
        raise NotImplementedError(f"fieldRef {path!r} is not emulated")
    return values[path]


def _value_from(source: Manifest, template: PodTemplate, pod: str, pod_ip: str) -> str | None:
    if "fieldRef" in source:
        return _field(source["fieldRef"]["fieldPath"], pod, template.namespace, pod_ip)
    for kind, store in (("configMapKeyRef", template.configmaps), ("secretKeyRef", template.secrets)):
        if kind in source:
            ref = source[kind]
            value = store.get(ref["name"], {}).get(ref["key"])
            if value is None and not ref.get("optional", False):
                raise LookupError(f"{kind} {ref['name']}/{ref['key']} does not exist: the kubelet "
                                  "would not start the container")
            return value.decode() if isinstance(value, bytes) else value
    raise NotImplementedError(f"valueFrom {sorted(source)} is not emulated")


def pod_environment(template: PodTemplate, pod: str, pod_ip: str) -> dict[str, str]:
    """The container's environment as the kubelet builds it (envFrom first, env wins)."""
    env: dict[str, str] = {}
    for source in template.container.get("envFrom", []):
        prefix = source.get("prefix", "")
        ref = source.get("configMapRef") or source.get("secretRef")
        store: Mapping[str, Mapping[str, str | bytes]] = (
            template.configmaps if "configMapRef" in source else template.secrets)
        for key, stored in store.get(ref["name"], {}).items():
            env[prefix + key] = stored.decode() if isinstance(stored, bytes) else stored
    for entry in template.container.get("env", []):
        if "valueFrom" in entry:
            value = _value_from(entry["valueFrom"], template, pod, pod_ip)
            if value is not None:
                env[entry["name"]] = value
        else:
            env[entry["name"]] = expand(str(entry.get("value", "")), env)
    return env


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Pod:
    name: str
    ordinal: int
    ip: str
    base_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kill_at: float | None = None
    pre_stop_results: list[subprocess.CompletedProcess[str]] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.base_dir / "pod.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class PodSet:
    """The StatefulSet's pods (plus extra namespaces, e.g. for clients) on one bridge."""

    def __init__(self, template: PodTemplate, network: Network, run_dir: Path,
                 replicas: int | None = None) -> None:
        self.template = template
        self.network = network
        self.run_dir = run_dir
        count = template.replicas if replicas is None else replicas
        self.pods = {f"{template.statefulset}-{i}": Pod(
            f"{template.statefulset}-{i}", i, network.node_address(f"{template.statefulset}-{i}"),
            run_dir / f"{template.statefulset}-{i}") for i in range(count)}
        hosts = list(network.plan.subnet.hosts())
        # Addresses for restarted pods, from the top of the subnet (the plan uses the bottom).
        self._spare_ips = [str(address) for address in reversed(hosts[len(hosts) // 2:])]
        self.write_hosts()

    # -- the Service's DNS ------------------------------------------------------------------------

    def write_hosts(self) -> None:
        mapping = {}
        for pod in self.pods.values():
            mapping[self.template.pod_host(pod.name)] = pod.ip
            mapping[pod.name] = pod.ip
        self.network.write_hosts(mapping)

    def url(self, name: str, *, by_ip: bool = False) -> str:
        port = self.template.port("http")
        host = self.pods[name].ip if by_ip else self.template.pod_host(name)
        return f"http://{host}:{port}"

    # -- processes -----------------------------------------------------------------------------

    def _volume_dirs(self, pod: Pod, *, fresh: bool) -> dict[str, Path]:
        """mountPath -> host directory for the container's volume mounts; `fresh`: a new pod,
        so new emptyDirs and Secret files."""
        mounts: dict[str, Path] = {}
        for mount in self.template.container.get("volumeMounts", []):
            name = mount["name"]
            if name in self.template.claim_names:
                directory = pod.base_dir / f"pvc-{name}"  # survives restarts, as a PVC does
                directory.mkdir(parents=True, exist_ok=True)
            else:
                directory = pod.base_dir / f"volume-{name}"
                if fresh or not directory.exists():
                    shutil.rmtree(directory, ignore_errors=True)
                    directory.mkdir(parents=True)
                    self._fill_volume(self.template.volumes[name], directory)
            mounts[str(mount["mountPath"]).rstrip("/")] = directory
        return mounts

    def _fill_volume(self, volume: Manifest, directory: Path) -> None:
        if "secret" in volume:
            source = volume["secret"]
            for key, value in self.template.secrets[source["secretName"]].items():
                path = directory / key
                path.write_bytes(value)
                path.chmod(int(source.get("defaultMode", 0o644)))
        elif "configMap" in volume:
            for key, text in self.template.configmaps[volume["configMap"]["name"]].items():
                (directory / key).write_text(text)
        elif "emptyDir" not in volume:
            raise NotImplementedError(f"volume {volume['name']!r} of this kind is not emulated")

    @staticmethod
    def _rewrite_paths(value: str, mounts: Mapping[str, Path]) -> str:
        for mount_path in sorted(mounts, key=len, reverse=True):
            if value == mount_path or value.startswith(mount_path + "/"):
                return str(mounts[mount_path]) + value[len(mount_path):]
        return value

    def container_environment(self, pod: Pod, *, fresh_volumes: bool = False) -> dict[str, str]:
        mounts = self._volume_dirs(pod, fresh=fresh_volumes)
        env = pod_environment(self.template, pod.name, pod.ip)
        env = {key: self._rewrite_paths(value, mounts) for key, value in env.items()}
        return {"PATH": f"{BIN_DIR}:/usr/local/bin:/usr/bin:/bin", "HOME": str(pod.base_dir),
                "LANG": "C.UTF-8", **env}

    def _command_line(self, pod: Pod, command: list[str], env: Mapping[str, str]) -> list[str]:
        words = [expand(word, env) for word in command]
        executable = BIN_DIR / words[0]
        words[0] = str(executable) if executable.exists() else (shutil.which(words[0]) or words[0])
        return [*self.network.exec_prefix(pod.name), *words]

    def start(self, name: str) -> None:
        pod = self.pods[name]
        assert not pod.running, f"{name} is already running"
        pod.base_dir.mkdir(parents=True, exist_ok=True)
        env = self.container_environment(pod, fresh_volumes=True)
        pod.starts += 1
        with open(pod.log_path, "ab") as log_file:
            log_file.write(f"===== start #{pod.starts} of {name} at {pod.ip} =====\n".encode())
            log_file.flush()
            pod.process = subprocess.Popen(
                self._command_line(pod, self.template.command, env), env=env, cwd=pod.base_dir,
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent)

    def exec(self, name: str, command: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        """`kubectl exec`: a command inside the running pod, with the container's environment."""
        pod = self.pods[name]
        assert pod.running, f"{name} is not running"
        env = self.container_environment(pod)
        return subprocess.run(self._command_line(pod, command, env), env=env, capture_output=True,
                              text=True, timeout=timeout_s)

    def run_pre_stop(self, name: str) -> subprocess.CompletedProcess[str]:
        """The preStop hook, inside the pod; the grace period starts now."""
        pod = self.pods[name]
        pod.kill_at = time.monotonic() + self.template.grace_period_s
        result = self.exec(name, self.template.pre_stop, self.template.grace_period_s)
        pod.pre_stop_results.append(result)
        return result

    def terminate(self, name: str) -> int:
        """SIGTERM, then SIGKILL when the grace period is over; returns the exit status."""
        pod = self.pods[name]
        assert pod.process is not None
        if pod.process.poll() is None:
            kill_at = pod.kill_at or time.monotonic() + self.template.grace_period_s
            pod.process.send_signal(signal.SIGTERM)
            try:
                pod.process.wait(timeout=max(0.1, kill_at - time.monotonic()))
            except subprocess.TimeoutExpired:
                pod.process.kill()
                pod.process.wait(timeout=10)
        pod.kill_at = None
        return pod.process.returncode

    def move_to_new_ip(self, name: str) -> None:
        """Give a stopped pod another address, as a rescheduled pod gets, and update DNS."""
        pod = self.pods[name]
        assert not pod.running
        new_ip = self._spare_ips.pop()
        prefix = self.network.plan.subnet.prefixlen
        namespace = self.network.namespace(name)
        subprocess.run(["ip", "-n", namespace, "addr", "flush", "dev", NODE_INTERFACE], check=True)
        subprocess.run(["ip", "-n", namespace, "addr", "add", f"{new_ip}/{prefix}", "dev",
                        NODE_INTERFACE], check=True)
        assert ipaddress.ip_address(new_ip) in self.network.plan.subnet
        pod.ip = new_ip
        self.write_hosts()

    def stop_all(self) -> None:
        for name, pod in self.pods.items():
            if pod.process is not None:
                with contextlib.suppress(Exception):
                    self.terminate(name)

    def logs(self, lines: int = 60) -> str:
        parts = []
        for pod in self.pods.values():
            if pod.log_path.exists():
                tail = pod.log_path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"----- {pod.name} -----\n" + "\n".join(tail))
        return "\n".join(parts)

    # -- probes and views, from the driver (the root namespace reaches every pod's IP) -----------

    def get(self, name: str, path: str, port: int | None = None) -> tuple[int, Any] | None:
        """(status, JSON body) of a GET on the pod's IP; None when it does not answer."""
        port = self.template.port("http") if port is None else port
        url = f"http://{self.pods[name].ip}:{port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as reply:
                return reply.status, json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as error:
            with contextlib.suppress(ValueError):
                return error.code, json.loads(error.read() or b"null")
            return error.code, None
        except (OSError, ValueError):
            return None

    def probe(self, name: str, kind: str) -> int | None:
        """The HTTP status the kubelet's probe would see (None: no answer)."""
        probe = self.template.probe(kind)
        answer = self.get(name, probe.path, probe.port)
        return None if answer is None else answer[0]

    def wait_ready(self, name: str, timeout_s: float) -> None:
        wait_until(lambda: self.probe(name, "readinessProbe") == 200, timeout_s, f"{name} ready")

    def leader(self) -> str | None:
        """The leader every running pod agrees on, if any."""
        seen = set()
        for name, pod in self.pods.items():
            if not pod.running:
                continue
            answer = self.get(name, "/v1/cluster")
            if answer is None or answer[0] != 200:
                return None
            seen.add(answer[1].get("leader_id"))
        return seen.pop() if len(seen) == 1 and None not in seen else None
