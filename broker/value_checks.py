"""Field checks shared by every command validator: each returns why a value is wrong, or None.

They check types as well as ranges, because commands built from decoded JSON may carry a float,
a bool or a list where an integer or a name belongs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from raftmq.broker import names

__all__ = [
    "MAX_COUNT",
    "MAX_DURATION_MS",
    "MAX_TIME_MS",
    "count_problem",
    "declare_name_problem",
    "encodable_problem",
    "first_problem",
    "flag_problem",
    "key_problem",
    "name_problem",
    "opt_count_problem",
]

# Bounds that keep every sum of a time and a duration far inside msgpack's 64-bit integers.
MAX_TIME_MS = 2**53
MAX_DURATION_MS = 2**40  # ~35 years: any TTL, delay or retention beyond it is a mistake
MAX_COUNT = 2**62


def name_problem(kind: str, value: object) -> str | None:
    if type(value) is not str:
        return f"{kind} name must be a string"
    return names.validate_name(kind, value)


def declare_name_problem(kind: str, value: object) -> str | None:
    if type(value) is not str:
        return f"{kind} name must be a string"
    return names.validate_declare_name(kind, value)


def key_problem(what: str, value: object) -> str | None:
    if type(value) is not str:
        return f"{what} must be a string"
    return names.validate_routing_key(what, value)


def count_problem(value: object, what: str, low: int = 0, high: int = MAX_COUNT) -> str | None:
    # `type(...) is int` on purpose: bool is an int subclass but never a valid number here.
    if type(value) is not int or not low <= value <= high:
        return f"{what} must be an integer in {low}..{high}"
    return None


def opt_count_problem(
    value: object, what: str, low: int = 0, high: int = MAX_COUNT
) -> str | None:
    return None if value is None else count_problem(value, what, low, high)


def flag_problem(value: object, what: str) -> str | None:
    return None if type(value) is bool else f"{what} must be a boolean"


def first_problem(*errors: str | None) -> str | None:
    for error in errors:
        if error is not None:
            return error
    return None


def encodable_problem(
    what: str, texts: Iterable[str], headers: Mapping[str, object]
) -> str | None:
    """What only a command built in-process can get wrong (decoded ones never do): text that
    msgpack cannot encode (lone surrogates) and integers beyond 64 bits. `texts` are the
    message's own strings (keys); header names and string values are checked here."""
    header_texts = [*headers, *(value for value in headers.values() if type(value) is str)]
    if not all(names.is_utf8_text(text) for text in (*texts, *header_texts)):
        return f"{what} and headers must be valid Unicode text"
    for value in headers.values():
        if type(value) is int and not -(2**63) <= value < 2**64:
            return "header integers must fit in 64 bits"
    return None
