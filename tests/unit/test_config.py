"""Node configuration: flags, RAFTMQ_* variables, defaults, validation (exit code 2)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from raftmq.broker.config import (
    NodeSettings,
    parse_host_port,
    parse_node_settings,
    parse_peers,
    parse_size_bytes,
)

BASE_FLAGS = ["--node-id", "n1", "--raft-bind", "127.0.0.1:7001", "--secret", "s3cret"]


def parse(argv: list[str], environ: dict[str, str] | None = None) -> NodeSettings:
    return parse_node_settings(argv, environ or {})


def parse_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], environ: dict[str, str] | None = None
) -> str:
    with pytest.raises(SystemExit) as exited:
        parse(argv, environ)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_defaults_and_derived_values() -> None:
    settings = parse(BASE_FLAGS)
    assert settings.node_id == "n1"
    assert settings.raft_advertise == "127.0.0.1:7001"
    assert settings.peers == {}
    assert settings.http_bind == "127.0.0.1:8080"
    assert settings.http_advertise_url == "http://127.0.0.1:8080"
    assert settings.data_dir == Path("data/n1")
    assert settings.fsync == "always"
    assert settings.max_total_body_bytes == 1 << 30
    assert settings.switch_interval_ms == 0.5
    assert settings.log_level == "info"


def test_limit_defaults_match_the_api() -> None:
    from raftmq.broker.api.limits import ApiLimits

    settings = parse(BASE_FLAGS)
    for field in dataclasses.fields(ApiLimits):
        assert getattr(settings, field.name) == getattr(ApiLimits(), field.name), field.name


def test_every_option_from_the_environment() -> None:
    environ = {
        "RAFTMQ_NODE_ID": "n2",
        "RAFTMQ_RAFT_BIND": "0.0.0.0:7002",
        "RAFTMQ_RAFT_ADVERTISE": "node-2.svc:7002",
        "RAFTMQ_PEERS": "n1=node-1.svc:7001, n3=node-3.svc:7003",
        "RAFTMQ_HTTP_BIND": "0.0.0.0:8002",
        "RAFTMQ_HTTP_ADVERTISE_URL": "http://node-2.svc:8002/",
        "RAFTMQ_DATA_DIR": "/var/lib/raftmq",
        "RAFTMQ_FSYNC": "never",
        "RAFTMQ_SECRET": "from-env",
        "RAFTMQ_MAX_MESSAGE_BYTES": "64KiB",
        "RAFTMQ_MAX_BATCH_MESSAGES": "10",
        "RAFTMQ_MAX_REQUEST_BYTES": "1MiB",
        "RAFTMQ_MAX_CLAIM_MESSAGES": "7",
        "RAFTMQ_MAX_WAIT_MS": "500",
        "RAFTMQ_MAX_TOTAL_BODY_BYTES": "2G",
        "RAFTMQ_PROPOSE_TIMEOUT_S": "2.5",
        "RAFTMQ_LOG_LEVEL": "DEBUG",
        "RAFTMQ_SWITCH_INTERVAL_MS": "1",
    }
    settings = parse([], environ)
    assert settings == NodeSettings(
        node_id="n2", raft_bind="0.0.0.0:7002", raft_advertise="node-2.svc:7002",
        peers={"n1": "node-1.svc:7001", "n3": "node-3.svc:7003"},
        http_bind="0.0.0.0:8002", http_advertise_url="http://node-2.svc:8002",
        data_dir=Path("/var/lib/raftmq"), secret="from-env", fsync="never",
        max_message_bytes=65536, max_batch_messages=10, max_request_bytes=1 << 20,
        max_claim_messages=7, max_wait_ms=500, max_total_body_bytes=2 << 30,
        propose_timeout_s=2.5, log_level="debug", switch_interval_ms=1.0,
    )


def test_flag_wins_over_environment() -> None:
    environ = {"RAFTMQ_NODE_ID": "from-env", "RAFTMQ_FSYNC": "never",
               "RAFTMQ_MAX_WAIT_MS": "100", "RAFTMQ_SECRET": "env-secret"}
    settings = parse([*BASE_FLAGS, "--fsync", "always"], environ)
    assert settings.node_id == "n1"
    assert settings.fsync == "always"
    assert settings.secret == "s3cret"
    assert settings.max_wait_ms == 100  # no flag given: the variable applies


def test_empty_environment_variable_counts_as_unset() -> None:
    assert parse(BASE_FLAGS, {"RAFTMQ_HTTP_BIND": ""}).http_bind == "127.0.0.1:8080"


def test_secret_file_flag_and_env(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("file-secret\n", encoding="utf-8")
    argv = BASE_FLAGS[:4]
    assert parse([*argv, "--secret-file", str(secret_file)]).secret == "file-secret"
    assert parse(argv, {"RAFTMQ_SECRET_FILE": str(secret_file)}).secret == "file-secret"
    # A flag of either kind overrides both variables.
    environ = {"RAFTMQ_SECRET_FILE": str(secret_file)}
    assert parse([*argv, "--secret", "flag-secret"], environ).secret == "flag-secret"


def test_secret_is_not_in_repr() -> None:
    assert "s3cret" not in repr(parse(BASE_FLAGS))


def test_missing_secret_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    err = parse_error(capsys, BASE_FLAGS[:4])
    assert "secret is required" in err


@pytest.mark.parametrize("content", ["", "\n", "   \n"])
def test_empty_secret_file_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(content, encoding="utf-8")
    err = parse_error(capsys, [*BASE_FLAGS[:4], "--secret-file", str(secret_file)])
    assert "is empty" in err


def test_missing_secret_file_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    err = parse_error(capsys, BASE_FLAGS[:4], {"RAFTMQ_SECRET_FILE": str(tmp_path / "nope")})
    assert "RAFTMQ_SECRET_FILE: cannot read secret file" in err


def test_secret_and_secret_file_together_are_ambiguous(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    err = parse_error(capsys, [*BASE_FLAGS, "--secret-file", str(tmp_path / "x")])
    assert "only one of --secret and --secret-file" in err


@pytest.mark.parametrize(
    ("extra", "environ", "expected"),
    [
        (["--raft-bind", "nohost"], {}, "--raft-bind: expected host:port"),
        (["--raft-bind", "127.0.0.1:0"], {}, "port must be 1..65535"),
        (["--http-bind", "127.0.0.1:99999"], {}, "--http-bind: port must be 1..65535"),
        ([], {"RAFTMQ_HTTP_BIND": "::1:80"}, "RAFTMQ_HTTP_BIND: expected host:port (IPv6"),
        (["--fsync", "sometimes"], {}, "fsync must be one of always, never"),
        ([], {"RAFTMQ_MAX_MESSAGE_BYTES": "-5"}, "RAFTMQ_MAX_MESSAGE_BYTES: expected a byte"),
        (["--max-batch-messages", "0"], {}, "expected a positive integer"),
        (["--propose-timeout-s", "nan"], {}, "expected a positive number"),
        (["--switch-interval-ms", "5000"], {}, "at most 1000 ms"),
        (["--log-level", "loud"], {}, "log level must be one of"),
        (["--peers", "n2"], {}, "--peers: expected id=host:port"),
        (["--peers", "n2=a:1,n2=b:2"], {}, "listed twice"),
        (["--peers", "bad id=a:1"], {}, "node id must be"),
        (["--peers", "n1=other:7001"], {}, "peers list this node (n1) at other:7001"),
        (["--peers", "n2=127.0.0.1:7001"], {}, "peer n2 has this node's own raft address"),
        (["--http-advertise-url", "ftp://x:1"], {}, "expected http(s)://host:port"),
        (["--max-message-bytes", "16MiB"], {}, "must not exceed max_request_bytes"),
        (["--data-dir", ""], {}, "path must not be empty"),
        (["--raft-bind", "0.0.0.0:7001"], {}, "--raft-advertise (or RAFTMQ_RAFT_ADVERTISE) is "
         "required when binding to the wildcard address 0.0.0.0:7001"),
        (["--http-bind", "[::]:80"], {}, "--http-advertise-url (or RAFTMQ_HTTP_ADVERTISE_URL) is"),
    ],
)
def test_invalid_values_exit_2_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], extra: list[str], environ: dict[str, str], expected: str
) -> None:
    assert expected in parse_error(capsys, BASE_FLAGS + extra, environ)


def test_node_id_and_raft_bind_are_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--node-id (or RAFTMQ_NODE_ID) is required" in parse_error(capsys, ["--secret", "x"])
    err = parse_error(capsys, ["--secret", "x", "--node-id", "n1"])
    assert "--raft-bind (or RAFTMQ_RAFT_BIND) is required" in err


def test_unknown_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert "unrecognized arguments: --nope" in parse_error(capsys, [*BASE_FLAGS, "--nope"])


def test_own_entry_in_peers_is_dropped() -> None:
    settings = parse([*BASE_FLAGS, "--peers", "n1=127.0.0.1:7001,n2=127.0.0.1:7002"])
    assert settings.peers == {"n2": "127.0.0.1:7002"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1024", 1024), ("1KiB", 1024), ("1k", 1024), ("3MiB", 3 << 20), ("2 GiB", 2 << 30),
     ("7B", 7), ("1mb", 1 << 20)],
)
def test_size_units(text: str, expected: int) -> None:
    assert parse_size_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "0", "1.5MiB", "1TiB", "MiB", "-1"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size_bytes(text)


def test_host_port_forms() -> None:
    assert parse_host_port(" 127.0.0.1:7001 ") == "127.0.0.1:7001"
    assert parse_host_port("[::1]:7001") == "[::1]:7001"
    assert parse_host_port("raftmq-0.raftmq.default.svc:7001") == (
        "raftmq-0.raftmq.default.svc:7001"
    )
    assert parse_peers("") == {}
    assert parse_peers("a=h:1,,b=[::1]:2,") == {"a": "h:1", "b": "[::1]:2"}
