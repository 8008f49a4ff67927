"""Every option of one broker node, from flags and ``RAFTMQ_*`` environment variables.

Each option is a flag (``--max-message-bytes``) and an environment variable
(``RAFTMQ_MAX_MESSAGE_BYTES``); the flag wins. Environment variables exist because containers
(the Kubernetes StatefulSet) configure processes through their environment. Values are
validated here, once, so the rest of the node can trust them; a bad value exits with code 2
and a message naming the flag or variable, never a traceback.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from raftmq.broker.config_values import (
    TestFault,
    choice,
    parse_bool,
    parse_host_port,
    parse_http_url,
    parse_node_id,
    parse_path,
    parse_peers,
    parse_port,
    parse_positive_float,
    parse_positive_int,
    parse_size_bytes,
    parse_switch_interval_ms,
    parse_test_fault,
    split_host_port,
)
from raftmq.broker.k8s_identity import (
    DEFAULT_CLUSTER_DOMAIN,
    StatefulSetNames,
    derive_identity,
    parse_dns_label,
    parse_domain,
)

__all__ = [
    "DEFAULT_HTTP_BIND",
    "ENV_PREFIX",
    "POD_NAMESPACE_ENV",
    "POD_NAME_ENV",
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
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_FSYNC_POLICIES = ("always", "never")
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
# What the downward API gives every pod (Kubernetes' names, not ours: no RAFTMQ_ prefix).
POD_NAME_ENV = "POD_NAME"
POD_NAMESPACE_ENV = "POD_NAMESPACE"
# Options that only describe the StatefulSet; they configure nothing else.
_STATEFULSET_ONLY = ("headless_service", "cluster_domain", "initial_cluster_size", "raft_port",
                     "http_port")


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the flag or variable."""


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
    # The cluster this node's data dir belongs to (a StatefulSet's); None: not recorded.
    cluster_name: str | None = None
    # A pod added after the bootstrap: ask these nodes for the membership before starting.
    join_via_urls: tuple[str, ...] = ()


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
    _Option("http_advertise_url", parse_http_url, None,
            "URL other nodes and clients use for this node (default: http://<http bind>)"),
    _Option("data_dir", parse_path, None, "directory for the Raft journal and snapshots "
            "(default: ./data/<node id>)"),
    _Option("fsync", choice("fsync", _FSYNC_POLICIES), "always",
            "'always': fsync the journal before acknowledging; 'never': rely on replication"),
    _Option("max_message_bytes", parse_size_bytes, "1MiB", "largest message body"),
    _Option("max_batch_messages", parse_positive_int, "1000", "most messages in one publish"),
    _Option("max_request_bytes", parse_size_bytes, "8MiB", "largest HTTP request body"),
    _Option("max_claim_messages", parse_positive_int, "1000", "most messages in one claim"),
    _Option("max_wait_ms", parse_positive_int, "30000", "longest long-poll wait"),
    _Option("max_total_body_bytes", parse_size_bytes, "1GiB",
            "body bytes the broker stores in total before refusing publishes"),
    _Option("propose_timeout_s", parse_positive_float, "10.0",
            "deadline of one Raft proposal made for an HTTP request"),
    _Option("log_level", choice("log level", _LOG_LEVELS), "info", "logging level"),
    _Option("election_timeout_min_ms", parse_positive_int, "1000",
            "shortest Raft election timeout (a follower that hears no leader this long stands)"),
    _Option("election_timeout_max_ms", parse_positive_int, "2000", "longest Raft election timeout"),
    _Option("heartbeat_ms", parse_positive_int, "50", "Raft heartbeat period of the leader"),
    _Option("max_log_bytes", parse_size_bytes, "128MiB",
            "Raft log size (on disk and in memory) that triggers a snapshot and compaction"),
    _Option("raft_tick_mode", choice("raft tick mode", ("thread", "loop")), "thread",
            "'thread': Raft runs on its own thread (GIL shared with the loop; heartbeats keep "
            "flowing while a handler is busy); 'loop': on the event loop thread"),
    _Option("switch_interval_ms", parse_switch_interval_ms, "0.5",
            "GIL switch interval: short, so the Raft thread is not starved by the event loop"),
    _Option("statefulset", parse_dns_label, None,
            "Kubernetes: the StatefulSet this pod belongs to; the node id, addresses and peers "
            f"are then derived from {POD_NAME_ENV} and {POD_NAMESPACE_ENV} (options given "
            "explicitly still win)"),
    _Option("headless_service", parse_dns_label, None,
            "with --statefulset: the headless Service giving each pod its DNS name (required)"),
    _Option("cluster_domain", parse_domain, DEFAULT_CLUSTER_DOMAIN,
            "with --statefulset: the cluster's DNS domain"),
    _Option("initial_cluster_size", parse_positive_int, None,
            "with --statefulset: the replicas the cluster was first created with; pods 0..n-1 "
            "bootstrap it, higher ordinals join an existing membership (required)"),
    _Option("raft_port", parse_port, "7000", "with --statefulset: the Raft port of every pod"),
    _Option("http_port", parse_port, "8080", "with --statefulset: the HTTP port of every pod"),
    _Option("test_fault", parse_test_fault, None,
            "TESTING ONLY: a deliberate bug to prove the chaos checker catches it; "
            "'drop-publish-every=N' silently loses every message whose id is a multiple of N "
            "(publishes are still confirmed)"),
)
# Switches: `--sync-marker` alone turns it on; the variable takes 1/0, true/false, yes/no.
_SWITCHES: tuple[_Option, ...] = (
    _Option("sync_marker", parse_bool, "false",
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


def _environ_label(environ: Mapping[str, str], name: str) -> str | None:
    text = environ.get(name, "").strip()
    if not text:
        return None
    try:
        return parse_dns_label(text)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _apply_statefulset(values: dict[str, object], explicit: set[str],
                       environ: Mapping[str, str]) -> None:
    """Fill what the pod's name determines, except the options given explicitly."""
    for required in ("headless_service", "initial_cluster_size"):
        if values[required] is None:
            raise ConfigError(f"--statefulset needs {_flag(required)} (or {env_name(required)})")
    explicit_id = str(values["node_id"]) if "node_id" in explicit else None
    pod_name = _environ_label(environ, POD_NAME_ENV) or explicit_id
    pod_namespace = _environ_label(environ, POD_NAMESPACE_ENV)
    if pod_name is None or pod_namespace is None:
        raise ConfigError(f"--statefulset needs the pod's {POD_NAME_ENV} and {POD_NAMESPACE_ENV} "
                          "(the downward API's metadata.name and metadata.namespace)")
    try:
        names = StatefulSetNames(
            statefulset=str(values["statefulset"]), headless_service=str(values["headless_service"]),
            namespace=pod_namespace, cluster_domain=str(values["cluster_domain"]),
            initial_cluster_size=int(str(values["initial_cluster_size"])),
            raft_port=int(str(values["raft_port"])), http_port=int(str(values["http_port"])))
        identity = derive_identity(pod_name, names)
    except ValueError as exc:
        raise ConfigError(f"--statefulset: {exc}") from None
    derived: dict[str, object] = {
        "node_id": identity.node_id, "raft_bind": identity.raft_bind,
        "raft_advertise": identity.raft_advertise, "http_bind": identity.http_bind,
        "http_advertise_url": identity.http_advertise_url, "peers": identity.seed_peers,
    }
    for name, value in derived.items():
        if name not in explicit:
            values[name] = value
    values["cluster_name"] = names.cluster_name
    if "peers" not in explicit:
        values["join_via_urls"] = identity.join_via_urls


def _settle_statefulset(values: dict[str, object], explicit: set[str],
                        environ: Mapping[str, str]) -> None:
    if values["statefulset"] is not None:
        _apply_statefulset(values, explicit, environ)
    else:
        stray = [name for name in _STATEFULSET_ONLY if name in explicit]
        if stray:
            raise ConfigError(f"{_flag(stray[0])} (or {env_name(stray[0])}) only applies with "
                              f"--statefulset (or {env_name('statefulset')})")
    for name in ("statefulset", *_STATEFULSET_ONLY):
        del values[name]


def settings_from_namespace(
    namespace: argparse.Namespace, environ: Mapping[str, str]
) -> NodeSettings:
    """Resolve flags over environment over defaults, validate, and build the settings."""
    options = (*_OPTIONS, *_SWITCHES)
    values = {option.name: _resolve(option, namespace, environ) for option in options}
    explicit = {option.name for option in options
                if _raw_value(option.name, namespace, environ) is not None}
    _settle_statefulset(values, explicit, environ)
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
