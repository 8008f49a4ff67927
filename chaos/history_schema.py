"""The value schema of each history operation (`f`), as the checker needs it.

Fields the checker relies on are required; fields it only displays are optional but typed
when present. Completions carry their invoke's fields (contract), so they are checked against
the same schema. An `f` not listed here is accepted as it is: recorders may add their own
events, and the checker ignores them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["value_problem"]


@dataclass(frozen=True)
class _Kind:
    """A JSON value kind: the exact Python types json.loads gives for it (so a bool is not an
    int), and a finer test for the few kinds that need one."""

    types: frozenset[type]
    description: str
    refine: Callable[[Any], bool] | None = None


_NONE = type(None)
_STR = _Kind(frozenset({str}), "a string")
_STR_OR_NULL = _Kind(frozenset({str, _NONE}), "a string or null")
_NAT = _Kind(frozenset({int}), "a non-negative integer", lambda value: value >= 0)
_NAT_OR_NULL = _Kind(frozenset({int, _NONE}), "a non-negative integer or null",
                     lambda value: value is None or value >= 0)
_BOOL = _Kind(frozenset({bool}), "a boolean")
_OBJECT = _Kind(frozenset({dict}), "an object")
_STR_LIST = _Kind(frozenset({list}), "a list of strings",
                  lambda value: all(isinstance(item, str) for item in value))
_PUBLISH_STATUS = _Kind(frozenset({str}), "accepted, unroutable or rejected",
                        lambda value: value in ("accepted", "unroutable", "rejected"))
# "observe" records what a fault led to (who leads after a paused node wakes) without
# opening or closing a window.
_NEMESIS_ACTION = _Kind(frozenset({str}), "start, stop or observe",
                        lambda value: value in ("start", "stop", "observe"))

_ACTION_TYPES = frozenset({"invoke", "ok", "fail", "unknown"})
_EVENT_TYPES = frozenset({"event"})
_Fields = tuple[tuple[str, _Kind, bool], ...]  # (name, kind, required)


def _fields(required: Mapping[str, _Kind], optional: Mapping[str, _Kind] | None = None) -> _Fields:
    return (*((name, kind, True) for name, kind in required.items()),
            *((name, kind, False) for name, kind in (optional or {}).items()))


_ERROR = {"error": _STR}
_SCHEMAS: Mapping[str, tuple[frozenset[str], _Fields]] = {
    "workload": (_EVENT_TYPES, _fields({"queues": _OBJECT, "streams": _OBJECT},
                                       {"exchanges": _OBJECT, "idempotent": _BOOL, "nodes": _STR_LIST})),
    "publish": (_ACTION_TYPES, _fields(
        {"id": _STR, "producer": _STR, "seq": _NAT, "targets": _STR_LIST},
        {"exchange": _STR, "routing_key": _STR, "key": _STR_OR_NULL, "partition": _NAT, "offset": _NAT,
         "status": _PUBLISH_STATUS, "duplicate": _BOOL, **_ERROR})),
    "deliver": (_EVENT_TYPES, _fields(
        {"queue": _STR, "id": _STR, "message_id": _NAT, "delivery_count": _NAT},
        {"consumer": _STR, "death_reason": _STR_OR_NULL, "death_queue": _STR_OR_NULL,
         "lease_expires_ms": _NAT, "observed_wall_ms": _NAT})),
    "ack": (_ACTION_TYPES, _fields({"queue": _STR, "id": _STR, "message_id": _NAT}, _ERROR)),
    "nack": (_ACTION_TYPES, _fields({"queue": _STR, "id": _STR, "message_id": _NAT, "requeue": _BOOL},
                                    _ERROR)),
    "read": (_EVENT_TYPES, _fields({"stream": _STR, "partition": _NAT, "offset": _NAT, "id": _STR},
                                   {"key": _STR_OR_NULL, "consumer": _STR, "group": _STR_OR_NULL})),
    "commit": (_ACTION_TYPES, _fields({"stream": _STR, "partition": _NAT, "offset": _NAT},
                                      {"group": _STR_OR_NULL, **_ERROR})),
    "nemesis": (_EVENT_TYPES, _fields({"action": _NEMESIS_ACTION, "fault": _STR},
                                      {"nodes": _STR_LIST, "detail": _OBJECT})),
    "final": (_EVENT_TYPES, _fields({"kind": _STR})),
}
_FINAL_FIELDS: Mapping[str, _Fields] = {
    "replica_digest": _fields({"node": _STR, "digest": _STR}),
    "drain": _fields({"complete": _BOOL}),
}
_WORKLOAD_SECTIONS: Mapping[str, _Fields] = {
    "queues": _fields({}, {"dead_letter_queue": _STR_OR_NULL, "delivery_limit": _NAT_OR_NULL,
                           "message_ttl_ms": _NAT_OR_NULL}),
    "streams": _fields({}, {"partitions": _NAT}),
    "exchanges": _fields({}, {"type": _STR, "queues": _STR_LIST}),
}
_MISSING = object()


def value_problem(f: str, op_type: str, value: Mapping[str, Any]) -> str | None:
    """What is wrong with this operation's value, or None when it follows the schema."""
    schema = _SCHEMAS.get(f)
    if schema is None:
        return None
    types, fields = schema
    if op_type not in types:
        return f"the type of a {f} must be {' or '.join(sorted(types))}"
    problem = _fields_problem(value, fields, "value")
    if problem is None and f == "final":
        problem = _final_problem(value)
    if problem is None and f == "workload":
        problem = _workload_problem(value)
    return problem


def _fields_problem(value: Mapping[str, Any], fields: _Fields, where: str) -> str | None:
    for name, kind, required in fields:
        item = value.get(name, _MISSING)
        if item is _MISSING:
            if required:
                return f"{where}.{name} is missing"
        elif type(item) not in kind.types or (kind.refine is not None and not kind.refine(item)):
            return f"{where}.{name} must be {kind.description}, got {item!r}"
    return None


def _final_problem(value: Mapping[str, Any]) -> str | None:
    fields = _FINAL_FIELDS.get(value["kind"])
    if fields is None:
        return None
    problem = _fields_problem(value, fields, "value")
    if problem is None and value["kind"] == "drain":
        names = [name for name in ("queue", "stream") if name in value]
        if len(names) != 1:
            return "a drain names exactly one of value.queue and value.stream"
        problem = _fields_problem(value, _fields({names[0]: _STR}), "value")
    return problem


def _workload_problem(value: Mapping[str, Any]) -> str | None:
    for section, fields in _WORKLOAD_SECTIONS.items():
        for name, entry in value.get(section, {}).items():
            where = f"value.{section}.{name}"
            if not isinstance(entry, dict):
                return f"{where} must be an object"
            problem = _fields_problem(entry, fields, where)
            if problem is not None:
                return problem
    return None
