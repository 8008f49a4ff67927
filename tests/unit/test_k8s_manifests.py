"""deploy/k8s, checked offline: every object against the Kubernetes JSON schemas (shipped by the
kubernetes-validate package), the kustomization rendered by our own loader and, where kubectl is
installed, by `kubectl kustomize` too, and the invariants the server and docs/operations.md rely
on as assertions. The Dockerfile's checks are in test_k8s_image.py."""

from __future__ import annotations

import copy
import os
import re
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from raftmq.broker.cli import build_parser
from raftmq.broker.config import build_server_parser, env_name, parse_size_bytes
from tests.unit.k8s_render import (
    K8S_DIR,
    REPO_ROOT,
    Manifest,
    UnsupportedKustomizationError,
    find_manifest,
    load_yaml_documents,
    render_kustomization,
    stage_kustomization,
)

# The oldest Kubernetes the manifests promise to work on, and the newest the package knows.
SCHEMA_VERSIONS = ("1.27", kubernetes_validate.latest_version())
DRAIN_COMMAND = ["raftmq", "drain", "--url", "http://127.0.0.1:8080", "--timeout", "50"]
POD_LABELS = {"app.kubernetes.io/name": "raftmq"}
PLAIN_ENV = {
    "RAFTMQ_STATEFULSET": "raftmq",
    "RAFTMQ_HEADLESS_SERVICE": "raftmq-headless",
    "RAFTMQ_CLUSTER_DOMAIN": "cluster.local",
    "RAFTMQ_RAFT_PORT": "7000",
    "RAFTMQ_HTTP_PORT": "8080",
    "RAFTMQ_DATA_DIR": "/var/lib/raftmq",
    "RAFTMQ_SECRET_FILE": "/etc/raftmq/secret/cluster.secret",
}
CONFIGMAP_ENV = {"RAFTMQ_INITIAL_CLUSTER_SIZE": "initial-cluster-size", "RAFTMQ_FSYNC": "fsync"}
FIELD_ENV = {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}


@pytest.fixture(scope="module")
def marker_secret() -> str:
    return secrets.token_hex(32)


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory, marker_secret: str) -> Path:
    return stage_kustomization(tmp_path_factory.mktemp("k8s"), marker_secret)


@pytest.fixture(scope="module")
def rendered(staged: Path) -> list[Manifest]:
    return render_kustomization(staged)


@pytest.fixture(scope="module")
def statefulset(rendered: list[Manifest]) -> Manifest:
    return find_manifest(rendered, "StatefulSet", "raftmq")


@pytest.fixture(scope="module")
def pod_spec(statefulset: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = statefulset["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    [only] = pod_spec["containers"]
    assert only["name"] == "raftmq"
    return dict(only)


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container["env"]}


def _identity(manifest: Manifest) -> tuple[str, str]:
    return manifest["kind"], manifest["metadata"]["name"]


# --- schemas and rendering ---------------------------------------------------------------------

@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_rendered_object_validates_against_the_kubernetes_schemas(
        rendered: list[Manifest], version: str) -> None:
    kinds = sorted(_identity(manifest) for manifest in rendered)
    assert kinds == sorted([
        ("Namespace", "raftmq"), ("ServiceAccount", "raftmq"), ("ConfigMap", "raftmq-config"),
        ("Secret", "raftmq-secret"), ("Service", "raftmq-headless"), ("Service", "raftmq"),
        ("StatefulSet", "raftmq"), ("PodDisruptionBudget", "raftmq"),
    ])
    for manifest in rendered:
        # strict: an unknown or misspelt field is an error, not silently dropped.
        kubernetes_validate.validate(manifest, version, strict=True)


def test_every_manifest_file_is_a_resource_of_the_kustomization() -> None:
    [kustomization] = load_yaml_documents(K8S_DIR / "kustomization.yaml")
    files = sorted(path.name for path in K8S_DIR.glob("*.yaml") if path.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files


def test_the_schema_check_rejects_a_broken_object(statefulset: Manifest) -> None:
    misspelt = copy.deepcopy(statefulset)
    misspelt["spec"]["replica"] = 3
    wrong_type = copy.deepcopy(statefulset)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "7000"
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, SCHEMA_VERSIONS[-1], strict=True)


# What an operator edits in kustomization.yaml: the namespace and the image.
OVERLAY_EDITS = {
    "as shipped": {},
    "namespace and image changed": {
        "namespace: raftmq": "namespace: messaging",
        "newTag: latest": "newName: registry.example.com:5000/team/raftmq\n    newTag: 0.1.0",
    },
}


@pytest.mark.parametrize("edits", OVERLAY_EDITS.values(), ids=OVERLAY_EDITS.keys())
def test_kubectl_kustomize_renders_what_the_loader_renders(tmp_path: Path, edits: dict[str, str]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the schema checks use the built-in loader instead")
    staged = stage_kustomization(tmp_path, secrets.token_hex(32))
    kustomization = staged / "kustomization.yaml"
    text = kustomization.read_text(encoding="utf-8")
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    kustomization.write_text(text, encoding="utf-8")
    rendered = render_kustomization(staged)
    result = subprocess.run([kubectl, "kustomize", str(staged)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    by_kubectl = sorted((doc for doc in yaml.safe_load_all(result.stdout) if doc), key=_identity)
    for manifest in by_kubectl:
        if manifest["kind"] == "Secret":
            # kustomize wraps long base64 values over lines, which decoders ignore.
            manifest["data"] = {key: "".join(value.split()) for key, value in manifest["data"].items()}
    assert by_kubectl == sorted(rendered, key=_identity)


def test_the_loader_refuses_kustomize_features_it_does_not_reproduce(tmp_path: Path) -> None:
    stage_kustomization(tmp_path, "not-a-real-secret")
    path = tmp_path / "kustomization.yaml"
    original = path.read_text(encoding="utf-8")
    path.write_text(original + "patches:\n  - path: extra.yaml\n", encoding="utf-8")
    with pytest.raises(UnsupportedKustomizationError, match="patches"):
        render_kustomization(tmp_path)
    path.write_text(original.replace("disableNameSuffixHash: true", "disableNameSuffixHash: false"),
                    encoding="utf-8")
    with pytest.raises(UnsupportedKustomizationError, match="disableNameSuffixHash"):
        render_kustomization(tmp_path)


# --- the contract's invariants -----------------------------------------------------------------

def test_statefulset_starts_pods_in_parallel_and_rolls_one_at_a_time(statefulset: Manifest) -> None:
    spec = statefulset["spec"]
    assert statefulset["metadata"]["namespace"] == "raftmq"
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"]["type"] == "RollingUpdate"
    assert spec["serviceName"] == "raftmq-headless"
    assert spec["selector"]["matchLabels"] == POD_LABELS
    assert POD_LABELS.items() <= spec["template"]["metadata"]["labels"].items()
    # Scaling to 0 for maintenance must not delete every volume (scale.sh deletes a removed
    # member's own volume explicitly).
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain",
                                                            "whenScaled": "Retain"}


def test_services_and_disruption_budget(rendered: list[Manifest], container: dict[str, Any]) -> None:
    container_ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert container_ports == {"raft": 7000, "http": 8080}
    headless = find_manifest(rendered, "Service", "raftmq-headless")["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is True
    client = find_manifest(rendered, "Service", "raftmq")["spec"]
    for spec, names in ((headless, {"raft", "http"}), (client, {"http"})):
        assert spec["selector"] == POD_LABELS
        assert {port["name"] for port in spec["ports"]} == names
        for port in spec["ports"]:
            assert port["port"] == container_ports[port["targetPort"]]
    budget = find_manifest(rendered, "PodDisruptionBudget", "raftmq")["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"] == POD_LABELS


def test_container_runs_the_server_command_with_no_arguments(container: dict[str, Any]) -> None:
    assert container["command"] == ["raftmq", "server"]
    assert "args" not in container
    assert container["image"] == "raftmq:latest"
    assert build_parser().parse_args(container["command"][1:]).command == "server"


def test_probes_use_the_health_endpoints_on_the_http_port(container: dict[str, Any]) -> None:
    expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe_name, path in expected.items():
        probe = container[probe_name]
        assert probe["httpGet"] == {"path": path, "port": 8080}, probe_name
    startup = container["startupProbe"]
    # Slow replays: at least 10 minutes before the liveness probe may restart the pod.
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 600


def test_prestop_drains_within_the_grace_period(container: dict[str, Any],
                                                pod_spec: dict[str, Any]) -> None:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command == DRAIN_COMMAND
    drain_timeout_s = float(command[command.index("--timeout") + 1])
    assert pod_spec["terminationGracePeriodSeconds"] > drain_timeout_s
    try:
        build_parser().parse_args(command[1:])
    except SystemExit:
        pytest.skip("`raftmq drain` is not registered in this tree yet (issue 6, broker/cli.py)")


def test_environment_is_the_contracts(container: dict[str, Any], rendered: list[Manifest],
                                      statefulset: Manifest) -> None:
    env = _env(container)
    for name, value in PLAIN_ENV.items():
        assert env[name] == {"name": name, "value": value}
    for name, field_path in FIELD_ENV.items():
        assert env[name]["valueFrom"] == {"fieldRef": {"fieldPath": field_path}}
    config = find_manifest(rendered, "ConfigMap", "raftmq-config")["data"]
    config_refs = {name: item["valueFrom"]["configMapKeyRef"] for name, item in env.items()
                   if "configMapKeyRef" in item.get("valueFrom", {})}
    for name, key in CONFIGMAP_ENV.items():
        assert config_refs[name]["key"] == key
    for ref in config_refs.values():
        assert ref["name"] == "raftmq-config" and ref["key"] in config
    assert int(config["initial-cluster-size"]) == statefulset["spec"]["replicas"]
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    assert mounts["data"]["mountPath"] == PLAIN_ENV["RAFTMQ_DATA_DIR"]
    secret_dir, secret_key = os.path.split(PLAIN_ENV["RAFTMQ_SECRET_FILE"])
    assert mounts["secret"]["mountPath"] == secret_dir and mounts["secret"]["readOnly"] is True
    volumes = {volume["name"]: volume for volume in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["secret"]["secret"]["secretName"] == "raftmq-secret"
    assert volumes["secret"]["secret"]["defaultMode"] == 0o440
    assert secret_key in find_manifest(rendered, "Secret", "raftmq-secret")["data"]
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"


def test_every_raftmq_variable_is_a_server_option(container: dict[str, Any]) -> None:
    options = {env_name(action.dest) for action in build_server_parser()._actions
               if action.dest != "help"}
    if "RAFTMQ_STATEFULSET" not in options:
        pytest.skip("the Kubernetes options of `raftmq server` are not in this tree yet (issue 6)")
    manifest_names = {name for name in _env(container) if name.startswith("RAFTMQ_")}
    assert manifest_names <= options, sorted(manifest_names - options)


def test_memory_budgets_fit_the_memory_limit(rendered: list[Manifest],
                                             container: dict[str, Any]) -> None:
    config = find_manifest(rendered, "ConfigMap", "raftmq-config")["data"]
    limit_bytes = parse_size_bytes(container["resources"]["limits"]["memory"])
    held_bytes = parse_size_bytes(config["max-total-body-bytes"]) + parse_size_bytes(
        config["max-log-bytes"])
    # Room for the interpreter and a snapshot's copy-on-write pages beside the data.
    assert 2 * held_bytes <= limit_bytes


def test_pods_run_unprivileged(pod_spec: dict[str, Any], container: dict[str, Any],
                               rendered: list[Manifest]) -> None:
    pod_security = pod_spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == pod_security["fsGroup"] == 10001
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod_spec["serviceAccountName"] == "raftmq"
    assert pod_spec["automountServiceAccountToken"] is False
    assert find_manifest(rendered, "ServiceAccount", "raftmq")["automountServiceAccountToken"] is False
    # The client Service `raftmq` would inject RAFTMQ_* service-link variables otherwise.
    assert pod_spec["enableServiceLinks"] is False


def test_resources_and_spreading(container: dict[str, Any], pod_spec: dict[str, Any]) -> None:
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"},
                                      "limits": {"memory": "1Gi"}}
    [term] = pod_spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == POD_LABELS
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in pod_spec["affinity"]["podAntiAffinity"]


# --- the cluster secret ------------------------------------------------------------------------

def _strings(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    else:
        yield str(value)


def test_no_secret_value_in_the_repository_manifests(rendered: list[Manifest], marker_secret: str) -> None:
    for path in K8S_DIR.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        # A key (hex or base64) is a long run of letters AND digits; long words are not.
        blobs = re.findall(r"[A-Za-z0-9+/]{32,}={0,2}", text)
        assert not [blob for blob in blobs if re.search(r"\d", blob)], path
        for manifest in load_yaml_documents(path):
            assert manifest["kind"] != "Secret", f"{path}: a Secret in clear"
    # The generated secret is in the Secret's data and nowhere else.
    for manifest in rendered:
        if _identity(manifest) != ("Secret", "raftmq-secret"):
            assert not any(marker_secret in text for text in _strings(manifest)), _identity(manifest)
    ignored = (REPO_ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "/deploy/k8s/cluster.secret" in ignored


def test_make_secret_writes_a_private_random_secret_once(tmp_path: Path) -> None:
    script = shutil.copy2(K8S_DIR / "make-secret.sh", tmp_path / "make-secret.sh")
    first = subprocess.run([script], capture_output=True, text=True, timeout=30, check=False)
    assert first.returncode == 0, first.stderr
    target = tmp_path / "cluster.secret"
    secret = target.read_text(encoding="ascii")
    assert re.fullmatch(r"[0-9a-f]{64}\n", secret)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    again = subprocess.run([script], capture_output=True, text=True, timeout=30, check=False)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert target.read_text(encoding="ascii") == secret
    forced = subprocess.run([script, "--force"], capture_output=True, text=True, timeout=30, check=False)
    assert forced.returncode == 0, forced.stderr
    assert target.read_text(encoding="ascii") != secret
