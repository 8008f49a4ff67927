"""Every option of one broker node, from flags and ``RAFTMQ_*`` environment variables.

Each option is a flag (``--max-message-bytes``) and an environment variable
(``RAFTMQ_MAX_MESSAGE_BYTES``); the flag wins. Environment variables exist because containers
(the Kubernetes StatefulSet) configure processes through their environment. Values are
validated here, once, so the rest of the node can trust them; a bad value exits with code 2
and a message naming the flag or variable, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_HTTP_BIND",
    "ENV_PREFIX",
    "ConfigError",
    "NodeSettings",
    "TestFault",
    "add_server_arguments",
    "build_server_parser",
    "env_name",
    "parse_host_port",
    "parse_node_id",
    "parse_node_settings",
    "parse_peers",
    "parse_size_bytes",
    "parse_test_fault",
    "settings_from_namespace",
    "split_host_port",
]

ENV_PREFIX = "RAFTMQ_"
DEFAULT_HTTP_BIND = "127.0.0.1:8080"
_NODE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SIZE_RE = re.compile(r"^(\d+)\s*([KMG]i?B?|B)?$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_FSYNC_POLICIES = ("always", "never")
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the flag or variable."""


@dataclass(frozen=True)
class TestFault:
    """A deliberate bug, to prove that the chaos checker catches one. Never for real use."""

    __test__ = False  # not a pytest test class, despite its name

    drop_publish_every: int

    def describe(self) -> str:
        return f"drop-publish-every={self.drop_publish_every}"


@dataclass(frozen=True)
class NodeSettings:
    """The validated configuration of one node. Build it with `parse_node_settings`."""

    node_id: str
    raft_bind: str
    raft_advertise: str
    peers: dict[str, str]
    http_bind: str
    http_advertise_url: str
    data_dir: Path
    secret: str = field(repr=False)
    fsync: str = "always"
    max_message_bytes: int = 1_048_576
    max_batch_messages: int = 1_000
    max_request_bytes: int = 8_388_608
    max_claim_messages: int = 1_000
    max_wait_ms: int = 30_000
    max_total_body_bytes: int = 1 << 30
    propose_timeout_s: float = 10.0
    log_level: str = "info"
    switch_interval_ms: float = 0.5
    election_timeout_min_ms: int = 1000
    election_timeout_max_ms: int = 2000
    heartbeat_ms: int = 50
    max_log_bytes: int = 128 << 20
    raft_tick_mode: str = "thread"
    test_fault: TestFault | None = None
    sync_marker: bool = False


# ---------------------------------------------------------------------------------------------
# Value parsers: each takes the raw text and raises ValueError with a short reason.


def split_host_port(text: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> (host, port); port must be 1..65535."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port, got {text!r}")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    if not host or (":" in host and not bracketed):
        raise ValueError(f"expected host:port (IPv6 hosts in brackets), got {text!r}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be 1..65535, got {port_text!r}")
    return host, int(port_text)


def parse_host_port(text: str) -> str:
    """``host:port`` normalised (IPv6 hosts in brackets); ValueError if malformed."""
    host, port = split_host_port(text)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_node_id(text: str) -> str:
    """A node id: 1..64 letters, digits, '_', '.', '-', starting with a letter or digit."""
    if not _NODE_ID_RE.match(text):
        raise ValueError(
            f"node id must be 1..64 chars of letters, digits, '_', '.', '-' "
            f"(starting with a letter or digit), got {text!r}"
        )
    return text


def parse_peers(text: str) -> dict[str, str]:
    """``"n2=host:7002,n3=host:7003"`` -> ``{"n2": "host:7002", "n3": "host:7003"}``."""
    peers: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        node_id, sep, address = item.partition("=")
        if not sep:
            raise ValueError(f"expected id=host:port, got {item!r}")
        node_id = parse_node_id(node_id.strip())
        if node_id in peers:
            raise ValueError(f"peer {node_id!r} listed twice")
        peers[node_id] = parse_host_port(address)
    return peers


def parse_size_bytes(text: str) -> int:
    """A positive byte count: ``1048576``, ``512KiB``, ``1MiB``, ``1G`` (binary units)."""
    match = _SIZE_RE.match(text.strip())
    if not match:
        raise ValueError(f"expected a byte count like 1048576 or 1MiB, got {text!r}")
    unit = (match.group(2) or "").upper()[:1]
    value = int(match.group(1)) * _SIZE_FACTORS[unit]
    if value <= 0:
        raise ValueError(f"must be positive, got {text!r}")
    return value


def _parse_positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) <= 0:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return int(text)


def _parse_positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a positive number, got {text!r}")
    return value


def _parse_switch_interval_ms(text: str) -> float:
    value = _parse_positive_float(text)
    if value > 1000:
        raise ValueError(f"must be at most 1000 ms, got {text!r}")
    return value


_TEST_FAULTS = ("drop-publish-every",)


def parse_test_fault(text: str) -> TestFault:
    """``drop-publish-every=N``: the state machine silently drops every message whose id is a
    multiple of N from its queues, while still confirming the publish."""
    name, sep, value = text.strip().partition("=")
    if name not in _TEST_FAULTS or not sep:
        raise ValueError(f"unknown test fault {text!r}; known: "
                         + ", ".join(f"{fault}=N" for fault in _TEST_FAULTS))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name} needs a positive integer, got {value!r}")
    return TestFault(drop_publish_every=int(value))


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1/0, true/false, yes/no or on/off, got {text!r}")


def _parse_http_url(text: str) -> str:
    url = text.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
        raise ValueError(f"expected http(s)://host:port without a path, got {text!r}")
    return url


def _choice(name: str, allowed: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {text!r}")
        return value

    return parse


def _parse_path(text: str) -> Path:
    if not text.strip():
        raise ValueError("path must not be empty")
    return Path(text)


# ---------------------------------------------------------------------------------------------
# The option table. `default=None` means "required" or "derived from another option".


@dataclass(frozen=True)
class _Option:
    name: str
    parse: Callable[[str], object]
    default: str | None
    help: str
    metavar: str = ""


_OPTIONS: tuple[_Option, ...] = (
    _Option("node_id", parse_node_id, None, "this node's id, unique in the cluster (required)"),
    _Option("raft_bind", parse_host_port, None, "host:port the Raft port binds to (required)"),
    _Option("raft_advertise", parse_host_port, None, "host:port peers dial (default: raft bind)"),
    _Option("peers", parse_peers, "", "other nodes as id=host:port,id=host:port; an entry for "
            "this node itself is ignored, so every node can get the same list"),
    _Option("http_bind", parse_host_port, DEFAULT_HTTP_BIND, "host:port of the HTTP API"),
    _Option("http_advertise_url", _parse_http_url, None,
            "URL other nodes and clients use for this node (default: http://<http bind>)"),
    _Option("data_dir", _parse_path, None, "directory for the Raft journal and snapshots "
            "(default: ./data/<node id>)"),
    _Option("fsync", _choice("fsync", _FSYNC_POLICIES), "always",
            "'always': fsync the journal before acknowledging; 'never': rely on replication"),
    _Option("max_message_bytes", parse_size_bytes, "1MiB", "largest message body"),
    _Option("max_batch_messages", _parse_positive_int, "1000", "most messages in one publish"),
    _Option("max_request_bytes", parse_size_bytes, "8MiB", "largest HTTP request body"),
    _Option("max_claim_messages", _parse_positive_int, "1000", "most messages in one claim"),
    _Option("max_wait_ms", _parse_positive_int, "30000", "longest long-poll wait"),
    _Option("max_total_body_bytes", parse_size_bytes, "1GiB",
            "body bytes the broker stores in total before refusing publishes"),
    _Option("propose_timeout_s", _parse_positive_float, "10.0",
            "deadline of one Raft proposal made for an HTTP request"),
    _Option("log_level", _choice("log level", _LOG_LEVELS), "info", "logging level"),
    _Option("election_timeout_min_ms", _parse_positive_int, "1000",
            "shortest Raft election timeout (a follower that hears no leader this long stands)"),
    _Option("election_timeout_max_ms", _parse_positive_int, "2000", "longest Raft election timeout"),
    _Option("heartbeat_ms", _parse_positive_int, "50", "Raft heartbeat period of the leader"),
    _Option("max_log_bytes", parse_size_bytes, "128MiB",
            "Raft log size (on disk and in memory) that triggers a snapshot and compaction"),
    _Option("raft_tick_mode", _choice("raft tick mode", ("thread", "loop")), "thread",
            "'thread': Raft runs on its own thread (GIL shared with the loop; heartbeats keep "
            "flowing while a handler is busy); 'loop': on the event loop thread"),
    _Option("switch_interval_ms", _parse_switch_interval_ms, "0.5",
            "GIL switch interval: short, so the Raft thread is not starved by the event loop"),
    _Option("test_fault", parse_test_fault, None,
            "TESTING ONLY: a deliberate bug to prove the chaos checker catches it; "
            "'drop-publish-every=N' silently loses every message whose id is a multiple of N "
            "(publishes are still confirmed)"),
)
# Switches: `--sync-marker` alone turns it on; the variable takes 1/0, true/false, yes/no.
_SWITCHES: tuple[_Option, ...] = (
    _Option("sync_marker", _parse_bool, "false",
            "record the journal's durable length after every sync in a sidecar file, for "
            "`raftmq debug lose-unsynced` (power-loss simulation in tests)"),
)

_SECRET_HELP = "cluster secret shared by every node (required; prefer --secret-file)"
_SECRET_FILE_HELP = "file holding the cluster secret (its first line)"


def env_name(option_name: str) -> str:
    return ENV_PREFIX + option_name.upper()


def _flag(option_name: str) -> str:
    return "--" + option_name.replace("_", "-")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare every node option on `parser`; values stay raw strings (None = not given)."""
    for option in _OPTIONS:
        default = f", default {option.default}" if option.default else ""
        parser.add_argument(
            _flag(option.name), dest=option.name, default=None,
            metavar=option.name.upper(),
            help=f"{option.help} [env {env_name(option.name)}{default}]",
        )
    for option in _SWITCHES:
        parser.add_argument(_flag(option.name), dest=option.name, action="store_const",
                            const="true", default=None,
                            help=f"{option.help} [env {env_name(option.name)}=1]")
    parser.add_argument("--secret", dest="secret", default=None, metavar="SECRET",
                        help=f"{_SECRET_HELP} [env {env_name('secret')}]")
    parser.add_argument("--secret-file", dest="secret_file", default=None, metavar="PATH",
                        help=f"{_SECRET_FILE_HELP} [env {env_name('secret_file')}]")


def _raw_value(name: str, namespace: argparse.Namespace,
               environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(source label, raw text) from the flag, else the environment, else None."""
    flag_value = getattr(namespace, name, None)
    if flag_value is not None:
        return _flag(name), str(flag_value)
    env_value = environ.get(env_name(name), "")
    if env_value != "":
        return env_name(name), env_value
    return None


def _resolve(option: _Option, namespace: argparse.Namespace,
             environ: Mapping[str, str]) -> object | None:
    raw = _raw_value(option.name, namespace, environ)
    if raw is None:
        if option.default is None:
            return None
        raw = ("default of " + _flag(option.name), option.default)
    source, text = raw
    try:
        return option.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _read_secret_file(source: str, path_text: str) -> str:
    try:
        with open(path_text, encoding="utf-8") as handle:
            secret = handle.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read secret file {path_text!r}: {exc}") from None
    if not secret:
        raise ConfigError(f"{source}: secret file {path_text!r} is empty")
    return secret


def _resolve_secret(namespace: argparse.Namespace, environ: Mapping[str, str]) -> str:
    # Look at flags first, then the environment, so a flag overrides either variable.
    for from_flags in (True, False):
        scope = namespace if from_flags else argparse.Namespace()
        env = {} if from_flags else environ
        inline = _raw_value("secret", scope, env)
        from_file = _raw_value("secret_file", scope, env)
        if inline and from_file:
            raise ConfigError(f"give only one of {inline[0]} and {from_file[0]}")
        if from_file:
            return _read_secret_file(*from_file)
        if inline:
            if not inline[1].strip():
                raise ConfigError(f"{inline[0]}: the secret must not be blank")
            return inline[1].strip()
    raise ConfigError(
        "a cluster secret is required: pass --secret-file PATH (or RAFTMQ_SECRET_FILE), "
        "or --secret / RAFTMQ_SECRET"
    )


def _own_peers_removed(node_id: str, advertise: str, peers: dict[str, str]) -> dict[str, str]:
    own_address = peers.get(node_id)
    if own_address is not None and own_address != advertise:
        raise ConfigError(
            f"peers list this node ({node_id}) at {own_address}, but its raft advertise "
            f"address is {advertise}"
        )
    others = {peer: address for peer, address in peers.items() if peer != node_id}
    for peer, address in others.items():
        if address == advertise:
            raise ConfigError(f"peer {peer} has this node's own raft address {address}")
    return others


def _derived_address(option_name: str, bind_address: str) -> str:
    """The bind address as the advertised one, unless it is a wildcard nobody can dial."""
    if split_host_port(bind_address)[0] in _WILDCARD_HOSTS:
        raise ConfigError(
            f"{_flag(option_name)} (or {env_name(option_name)}) is required when binding to "
            f"the wildcard address {bind_address}: other nodes and clients cannot dial it"
        )
    return bind_address


def _check_limits(values: Mapping[str, object]) -> None:
    message_bytes = values["max_message_bytes"]
    assert isinstance(message_bytes, int)
    for bigger in ("max_request_bytes", "max_total_body_bytes"):
        limit = values[bigger]
        assert isinstance(limit, int)
        if message_bytes > limit:
            raise ConfigError(
                f"max_message_bytes ({message_bytes}) must not exceed {bigger} ({limit})"
            )


def _check_raft_timing(values: Mapping[str, object]) -> None:
    low, high, heartbeat = (values["election_timeout_min_ms"], values["election_timeout_max_ms"],
                            values["heartbeat_ms"])
    assert isinstance(low, int) and isinstance(high, int) and isinstance(heartbeat, int)
    if not low < high:
        raise ConfigError(f"election_timeout_min_ms ({low}) must be below election_timeout_max_ms ({high})")
    if not 3 * heartbeat < low:
        raise ConfigError(f"election_timeout_min_ms ({low}) must exceed 3 heartbeats ({heartbeat} ms)")
    if high > 3500:
        raise ConfigError(f"election_timeout_max_ms ({high}) must be at most the 3500 ms connection timeout")


def settings_from_namespace(
    namespace: argparse.Namespace, environ: Mapping[str, str]
) -> NodeSettings:
    """Resolve flags over environment over defaults, validate, and build the settings."""
    values = {option.name: _resolve(option, namespace, environ)
              for option in (*_OPTIONS, *_SWITCHES)}
    for required in ("node_id", "raft_bind"):
        if values[required] is None:
            raise ConfigError(f"{_flag(required)} (or {env_name(required)}) is required")
    node_id = str(values["node_id"])
    values["raft_advertise"] = values["raft_advertise"] or _derived_address(
        "raft_advertise", str(values["raft_bind"]))
    values["http_advertise_url"] = values["http_advertise_url"] or "http://" + _derived_address(
        "http_advertise_url", str(values["http_bind"]))
    values["data_dir"] = values["data_dir"] or Path("data") / node_id
    peers = values["peers"]
    assert isinstance(peers, dict)
    values["peers"] = _own_peers_removed(node_id, str(values["raft_advertise"]), peers)
    _check_limits(values)
    _check_raft_timing(values)
    secret = _resolve_secret(namespace, environ)
    return NodeSettings(secret=secret, **values)  # type: ignore[arg-type]


def build_server_parser(prog: str = "raftmq server") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run one raftmq broker node. Every flag can also be set through the "
        "environment variable shown beside it; a flag wins over its variable.",
    )
    add_server_arguments(parser)
    return parser


def parse_node_settings(
    argv: Sequence[str], environ: Mapping[str, str] | None = None
) -> NodeSettings:
    """Parse `argv` (without the program name); on any error print it and exit with code 2."""
    parser = build_server_parser()
    namespace = parser.parse_args(list(argv))
    try:
        return settings_from_namespace(namespace, os.environ if environ is None else environ)
    except ConfigError as exc:
        parser.error(str(exc))
