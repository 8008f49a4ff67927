"""`raftmq dev` configuration: node plan, data dir safety, secret file, leader agreement."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest

from raftmq.broker.cli import main
from raftmq.broker.cli_dev import agreed_leader, leader_from_cluster_doc
from raftmq.broker.devcluster import (
    DEV_MARKER_FILE,
    DevClusterError,
    DevClusterOptions,
    busy_ports,
    ensure_secret_file,
    node_environment,
    plan_nodes,
    prepare_data_dir,
    server_command,
)


def test_plan_assigns_consecutive_ports_and_own_dirs() -> None:
    specs = plan_nodes(DevClusterOptions(nodes=3, base_port=7001, http_base_port=8001,
                                         data_dir=Path("d")))
    assert [spec.node_id for spec in specs] == ["n1", "n2", "n3"]
    assert [spec.raft_address for spec in specs] == [
        "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
    assert specs[2].http_url == "http://127.0.0.1:8003"
    assert specs[1].data_dir == Path("d/n2")
    assert specs[1].log_path == Path("d/n2.log")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (DevClusterOptions(nodes=0), "--nodes must be 1..9"),
        (DevClusterOptions(nodes=10), "--nodes must be 1..9"),
        (DevClusterOptions(base_port=65535), "raft ports 65535..65537 out of range"),
        (DevClusterOptions(base_port=8000, http_base_port=8001), "overlap"),
    ],
)
def test_bad_plans_are_refused(options: DevClusterOptions, expected: str) -> None:
    with pytest.raises(DevClusterError, match=expected):
        plan_nodes(options)


def test_server_command_names_every_other_node_as_peer() -> None:
    specs = plan_nodes(DevClusterOptions(nodes=3))
    command = server_command(specs[1], specs, "never")
    assert command[command.index("--peers") + 1] == "n1=127.0.0.1:7001,n3=127.0.0.1:7003"
    assert command[command.index("--fsync") + 1] == "never"
    assert command[command.index("--node-id") + 1] == "n2"


def test_node_environment_drops_identity_but_keeps_tuning(tmp_path: Path) -> None:
    base = {"PATH": "/bin", "RAFTMQ_NODE_ID": "x", "RAFTMQ_SECRET": "leak",
            "RAFTMQ_PEERS": "a=b:1", "RAFTMQ_LOG_LEVEL": "debug"}
    environment = node_environment(base, tmp_path / "s")
    assert environment == {"PATH": "/bin", "RAFTMQ_LOG_LEVEL": "debug",
                           "RAFTMQ_SECRET_FILE": str(tmp_path / "s")}


def test_secret_file_is_private_and_reused(tmp_path: Path) -> None:
    path = ensure_secret_file(tmp_path)
    secret = path.read_text()
    assert len(secret.strip()) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_secret_file(tmp_path).read_text() == secret


def test_data_dir_is_created_with_a_marker(tmp_path: Path) -> None:
    data_dir = tmp_path / "dev"
    prepare_data_dir(data_dir, fresh=False)
    assert (data_dir / DEV_MARKER_FILE).exists()
    (data_dir / "n1").mkdir()
    prepare_data_dir(data_dir, fresh=False)
    assert (data_dir / "n1").exists()
    prepare_data_dir(data_dir, fresh=True)
    assert not (data_dir / "n1").exists()
    assert (data_dir / DEV_MARKER_FILE).exists()


@pytest.mark.parametrize("fresh", [False, True])
def test_foreign_data_dir_is_never_touched(tmp_path: Path, fresh: bool) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    with pytest.raises(DevClusterError, match="not created by `raftmq dev`"):
        prepare_data_dir(tmp_path, fresh=fresh)
    assert precious.read_text() == "keep me"
    assert not (tmp_path / DEV_MARKER_FILE).exists()


def test_busy_ports_finds_a_listener() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert busy_ports("127.0.0.1", [port]) == [port]
    assert busy_ports("127.0.0.1", [port]) == []


def test_leader_agreement_needs_a_majority() -> None:
    assert agreed_leader(["n1", "n1", None], 3) == "n1"
    assert agreed_leader(["n1", None, None], 3) is None
    assert agreed_leader(["n1", "n2"], 3) is None
    assert agreed_leader(["n1"], 1) == "n1"
    assert agreed_leader(["n2", "n2"], 4) is None


def test_leader_from_cluster_doc_shapes() -> None:
    assert leader_from_cluster_doc({"leader_id": "n2"}) == "n2"
    assert leader_from_cluster_doc({"leader_id": None}) is None
    assert leader_from_cluster_doc({"leader": {"node_id": "n3"}}) == "n3"
    assert leader_from_cluster_doc(["n1"]) is None
    assert leader_from_cluster_doc(None) is None


def test_dev_rejects_a_bad_stop_timeout(capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    assert main(["dev", "--stop-timeout", "0", "--data-dir", str(tmp_path / "d")]) == 1
    assert "--stop-timeout must be positive" in capsys.readouterr().err


def test_help_works_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["server", "--help"], ["dev", "--help"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 0
        assert "usage: raftmq" in capsys.readouterr().out
