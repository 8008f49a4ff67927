"""The value parsers of the node options: each takes the raw text of a flag or variable and
returns the value or raises ValueError with a short reason (`raftmq.broker.config` names the
flag or variable in front of it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TestFault",
    "choice",
    "parse_bool",
    "parse_host_port",
    "parse_http_url",
    "parse_node_id",
    "parse_path",
    "parse_peers",
    "parse_port",
    "parse_positive_float",
    "parse_positive_int",
    "parse_size_bytes",
    "parse_switch_interval_ms",
    "parse_test_fault",
    "split_host_port",
]

_NODE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SIZE_RE = re.compile(r"^(\d+)\s*([KMG]i?B?|B)?$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


@dataclass(frozen=True)
class TestFault:
    """A deliberate bug, to prove that the chaos checker catches one. Never for real use."""

    __test__ = False  # not a pytest test class, despite its name

    drop_publish_every: int

    def describe(self) -> str:
        return f"drop-publish-every={self.drop_publish_every}"


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


def parse_positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) <= 0:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return int(text)


def parse_port(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port must be 1..65535, got {text!r}")
    return int(text)


def parse_positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a positive number, got {text!r}")
    return value


def parse_switch_interval_ms(text: str) -> float:
    value = parse_positive_float(text)
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


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1/0, true/false, yes/no or on/off, got {text!r}")


def parse_http_url(text: str) -> str:
    url = text.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
        raise ValueError(f"expected http(s)://host:port without a path, got {text!r}")
    return url


def choice(name: str, allowed: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {text!r}")
        return value

    return parse


def parse_path(text: str) -> Path:
    if not text.strip():
        raise ValueError("path must not be empty")
    return Path(text)
