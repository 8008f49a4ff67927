"""Validation of exchange, queue, consumer and producer names and of routing keys.

Names end up in URL paths, metrics labels and log lines, so they are restricted to a small,
path-safe alphabet. Routing keys are free text (topic keys are dotted words) but bounded.
"""

from __future__ import annotations

import functools
import re

__all__ = [
    "DEFAULT_EXCHANGE",
    "MAX_NAME_LEN",
    "MAX_ROUTING_KEY_LEN",
    "RESERVED_PREFIX",
    "is_utf8_text",
    "validate_declare_name",
    "validate_name",
    "validate_routing_key",
]

MAX_NAME_LEN = 200
MAX_ROUTING_KEY_LEN = 255
DEFAULT_EXCHANGE = ""
RESERVED_PREFIX = "amq."

_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:-]+")


# Cached: the same few names come with every command, and the regex dominates the check.
@functools.lru_cache(maxsize=4096)
def validate_name(kind: str, name: str) -> str | None:
    """Return why `name` is not a valid `kind` name, or None when it is.

    `kind` is "exchange", "queue", "consumer" or "producer"; only "exchange" accepts ""
    (the default exchange), which is valid wherever an existing exchange is referred to.
    """
    if name == "":
        if kind == "exchange":
            return None
        return f"{kind} name must not be empty"
    if len(name) > MAX_NAME_LEN:
        return f"{kind} name is longer than {MAX_NAME_LEN} characters"
    if _NAME_PATTERN.fullmatch(name) is None:
        return f"{kind} name {name!r} may only contain letters, digits and _ . : -"
    return None


def validate_declare_name(kind: str, name: str) -> str | None:
    """Like `validate_name`, for a name being declared or deleted: the default exchange and
    names under the reserved `amq.` prefix are not the user's to create or remove."""
    if name == "":
        return f"the default {kind} cannot be declared or deleted" if kind == "exchange" else (
            f"{kind} name must not be empty"
        )
    if name.startswith(RESERVED_PREFIX):
        return f"{kind} names starting with {RESERVED_PREFIX!r} are reserved"
    return validate_name(kind, name)


def validate_routing_key(what: str, key: str) -> str | None:
    """Routing and binding keys: any text up to MAX_ROUTING_KEY_LEN characters."""
    if len(key) > MAX_ROUTING_KEY_LEN:
        return f"{what} is longer than {MAX_ROUTING_KEY_LEN} characters"
    return None if is_utf8_text(key) else f"{what} is not valid Unicode text"


def is_utf8_text(text: str) -> bool:
    """False for strings msgpack cannot encode (lone surrogates, e.g. from JSON "\\ud800")."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
