"""The chaos history: one JSON object per line, each an invoke, a completion or an event.

Workloads write it through `HistoryWriter` while the run goes on (line-buffered, so a crashed
run keeps everything up to the crash); the checker and the report read it with
`load_history`. The value of each operation is validated against the schema of its `f`
(chaos/history_schema.py), so the checker can trust field types and a malformed file fails
with the line that is wrong instead of deep inside a check.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from raftmq.chaos.history_schema import value_problem

__all__ = [
    "COMPLETION_TYPES",
    "OP_TYPES",
    "HistoryError",
    "HistoryWriter",
    "Op",
    "load_history",
    "pairing_key",
    "run_clock_ms",
    "validate_history",
]

OP_TYPES = ("invoke", "ok", "fail", "unknown", "event")
COMPLETION_TYPES = frozenset({"ok", "fail", "unknown"})
_FIELDS = ("index", "time_ms", "process", "type", "f", "value")


class HistoryError(ValueError):
    """A history that does not follow the format (the message says where and what)."""


@dataclass(frozen=True, slots=True)
class Op:
    index: int
    time_ms: float
    process: str
    type: str
    f: str
    value: dict[str, Any]

    def to_json(self) -> str:
        document = {"index": self.index, "time_ms": self.time_ms, "process": self.process,
                    "type": self.type, "f": self.f, "value": self.value}
        try:
            return json.dumps(document, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise HistoryError(f"op {self.index} ({self.f} {self.type}) is not JSON: {exc}") from None

    @classmethod
    def from_json(cls, line: str) -> Op:
        """Parse and validate one line; errors say which field is wrong (not which line)."""
        try:
            document = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HistoryError(f"not JSON: {exc.msg} at column {exc.colno}") from None
        if not isinstance(document, dict):
            raise HistoryError(f"expected a JSON object, got {type(document).__name__}")
        return op_from_document(document)


def op_from_document(document: Mapping[str, Any]) -> Op:
    missing = [name for name in _FIELDS if name not in document]
    if missing:
        raise HistoryError(f"missing field(s): {', '.join(missing)}")
    extra = sorted(set(document) - set(_FIELDS))
    if extra:
        raise HistoryError(f"unexpected field(s): {', '.join(extra)}")
    index, time_ms = document["index"], document["time_ms"]
    if type(index) is not int or index < 0:
        raise HistoryError(f"index must be a non-negative integer, got {index!r}")
    if type(time_ms) not in (int, float) or not math.isfinite(time_ms):
        raise HistoryError(f"time_ms must be a finite number, got {time_ms!r}")
    for name in ("process", "f"):
        if not isinstance(document[name], str) or not document[name]:
            raise HistoryError(f"{name} must be a non-empty string, got {document[name]!r}")
    op_type, value = document["type"], document["value"]
    if op_type not in OP_TYPES:
        raise HistoryError(f"type must be one of {', '.join(OP_TYPES)}, got {op_type!r}")
    if not isinstance(value, dict):
        raise HistoryError(f"value must be an object, got {type(value).__name__}")
    op = Op(index, float(time_ms), document["process"], op_type, document["f"], value)
    problem = value_problem(op.f, op.type, value)
    if problem is not None:
        raise HistoryError(f"{op.f} {op.type}: {problem}")
    return op


def pairing_key(op: Op) -> tuple[str, str, object]:
    """Invocations and their completions pair on (process, f, value["id"]) (contract)."""
    return op.process, op.f, op.value.get("id")


class _Sequencer:
    """Checks, op by op, the file-level rules: indices 0,1,2..., time never going back,
    every completion closing an open invocation of its process."""

    def __init__(self) -> None:
        self.count = 0
        self.last_time_ms = -math.inf
        self.open: dict[tuple[str, str, object], deque[int]] = {}

    def feed(self, op: Op) -> None:
        if op.index != self.count:
            raise HistoryError(f"index {op.index} out of sequence (expected {self.count})")
        if op.time_ms < self.last_time_ms:
            raise HistoryError(f"time_ms {op.time_ms} goes back (previous op at {self.last_time_ms})")
        self.count += 1
        self.last_time_ms = op.time_ms
        if op.type == "invoke":
            self.open.setdefault((op.process, op.f, op.value.get("id")), deque()).append(op.index)
        elif op.type != "event":
            key = (op.process, op.f, op.value.get("id"))
            waiting = self.open.get(key)
            if not waiting:
                raise HistoryError(f"{op.f} {op.type} of {op.process} (id {key[2]!r}) has no open invoke")
            waiting.popleft()
            if not waiting:
                del self.open[key]


def validate_history(ops: Iterable[Op]) -> None:
    """Raise HistoryError unless the ops follow the file-level and value rules of the format."""
    sequencer = _Sequencer()
    for op in ops:
        problem = value_problem(op.f, op.type, op.value) if op.type in OP_TYPES else f"bad type {op.type!r}"
        if problem is not None:
            raise HistoryError(f"op {op.index} ({op.f} {op.type}): {problem}")
        try:
            sequencer.feed(op)
        except HistoryError as exc:
            raise HistoryError(f"op {op.index}: {exc}") from None


def load_history(path: str | Path, *, tolerate_torn_tail: bool = False) -> list[Op]:
    """Read and validate a history file. `tolerate_torn_tail` drops a malformed last line
    without its newline: what a writer killed in the middle of a line leaves."""
    with open(path, encoding="utf-8") as stream:
        lines = stream.read().split("\n")
    torn_tail = lines[-1] if lines[-1] else None
    body = lines[:-1]
    ops: list[Op] = []
    sequencer = _Sequencer()
    for number, line in enumerate(body, start=1):
        ops.append(_parse_line(line, number, sequencer))
    if torn_tail is not None:
        try:
            ops.append(_parse_line(torn_tail, len(body) + 1, sequencer))
        except HistoryError:
            if not tolerate_torn_tail:
                raise
    return ops


def _parse_line(line: str, number: int, sequencer: _Sequencer) -> Op:
    try:
        op = Op.from_json(line)
        sequencer.feed(op)
    except HistoryError as exc:
        raise HistoryError(f"line {number}: {exc}") from None
    return op


def run_clock_ms() -> Callable[[], float]:
    """A monotonic clock in milliseconds that reads 0 when created (the run's start)."""
    start_ns = time.monotonic_ns()
    return lambda: (time.monotonic_ns() - start_ns) / 1e6


class HistoryWriter:
    """Appends operations to a history file. Safe to call from one event loop and threads:
    the index, the clock reading and the line are taken under one lock, so file order, index
    order and time order agree."""

    def __init__(self, path: str | Path, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._next_index = 0
        self._last_time_ms = 0.0
        # Line buffering: each op reaches the OS as soon as it is written.
        self._stream: TextIO | None = open(path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115

    def invoke(self, process: str, f: str, value: Mapping[str, Any]) -> Op:
        return self._append(process, "invoke", f, value)

    def ok(self, process: str, f: str, value: Mapping[str, Any]) -> Op:
        return self._append(process, "ok", f, value)

    def fail(self, process: str, f: str, value: Mapping[str, Any]) -> Op:
        return self._append(process, "fail", f, value)

    def unknown(self, process: str, f: str, value: Mapping[str, Any]) -> Op:
        return self._append(process, "unknown", f, value)

    def event(self, process: str, f: str, value: Mapping[str, Any]) -> Op:
        return self._append(process, "event", f, value)

    def _append(self, process: str, op_type: str, f: str, value: Mapping[str, Any]) -> Op:
        with self._lock:
            if self._stream is None:
                raise HistoryError("the history writer is closed")
            # A clock that steps back (it should not) must not break the time order of the file.
            time_ms = max(self._last_time_ms, float(self._clock()))
            op = Op(self._next_index, time_ms, process, op_type, f, dict(value))
            # Caught here, a recorder bug names its call site instead of spoiling the run's check.
            problem = value_problem(f, op_type, op.value) if op_type in OP_TYPES else "bad type"
            if problem is not None:
                raise HistoryError(f"{f} {op_type}: {problem}")
            line = op.to_json()
            self._stream.write(line + "\n")
            self._next_index += 1
            self._last_time_ms = time_ms
            return op

    def close(self) -> None:
        with self._lock:
            if self._stream is not None:
                self._stream.close()
                self._stream = None

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
