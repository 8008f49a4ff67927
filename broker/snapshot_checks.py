"""Checks for decoding snapshots: each raises SnapshotError naming what is corrupt.

The column checks work on a whole column at once with builtins (`set(map(type, ...))`, `min`,
`max`), because restore runs on the Raft thread and per-field Python code per message would
stall it for seconds on large states.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import chain, islice
from operator import lt
from typing import Any

from raftmq.broker.value_checks import MAX_COUNT

__all__ = [
    "HEADER_TYPES",
    "INT",
    "INT_OR_NONE",
    "SnapshotError",
    "array",
    "check",
    "check_headers",
    "ids_column",
    "opt_text",
    "opt_uint",
    "text",
    "types_of",
    "uint",
    "uint_column",
    "valid",
]

HEADER_TYPES = frozenset((str, int, float, bool, bytes, type(None)))
INT = frozenset((int,))
INT_OR_NONE = frozenset((int, type(None)))


class SnapshotError(ValueError):
    """The bytes are not a valid broker snapshot."""


def check(ok: bool, what: str) -> None:
    if not ok:
        raise SnapshotError(f"corrupt snapshot: {what}")


def uint(value: object, what: str) -> int:
    # Bounded so that no later sum (a time plus a duration) can outgrow msgpack's integers.
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        raise SnapshotError(f"corrupt snapshot: {what} is not an integer in 0..{MAX_COUNT}")
    return value


def opt_uint(value: object, what: str) -> int | None:
    return None if value is None else uint(value, what)


def text(value: object, what: str) -> str:
    if type(value) is not str:
        raise SnapshotError(f"corrupt snapshot: {what} is not a string")
    return value


def opt_text(value: object, what: str) -> str | None:
    return None if value is None else text(value, what)


def array(value: object, what: str, length: int | None = None) -> list[Any]:
    if type(value) is not list or (length is not None and len(value) != length):
        raise SnapshotError(f"corrupt snapshot: {what} is malformed")
    return value


def valid(error: str | None) -> None:
    check(error is None, str(error))


def types_of(items: Iterable[object]) -> set[type]:
    return set(map(type, items))


def uint_column(column: Sequence[Any], what: str, high: int = MAX_COUNT) -> None:
    """`_uint` of every item. `type(...) is int` matters: bools and floats compare as numbers."""
    if not column:
        return
    valid = types_of(column) <= INT
    if valid and column.count(column[0]) == len(column):  # one value throughout is common
        valid = 0 <= column[0] <= high
    elif valid:
        valid = min(column) >= 0 and max(column) <= high
    if not valid:
        raise SnapshotError(f"corrupt snapshot: every {what} must be an integer in 0..{high}")


def ids_column(column: Sequence[Any], what: str, below: int = MAX_COUNT + 1) -> None:
    """Message ids: integers, increasing strictly from 1 up, all below `below`."""
    check(types_of(column) <= INT, f"every {what} must be an integer")
    check(not column or (column[0] > 0 and column[-1] < below
                          and all(map(lt, column, islice(column, 1, None)))),
           f"{what}s out of order or range")


def check_headers(column: Sequence[Any]) -> None:
    check(types_of(column) == {dict}, "headers are not a map")
    filled: list[dict[Any, Any]] = list(filter(None, column))
    check(types_of(chain.from_iterable(filled)) <= {str}, "bad header name")
    check(types_of(chain.from_iterable(map(dict.values, filled))) <= HEADER_TYPES,
           "bad header value")
