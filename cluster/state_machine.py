"""The contract between the replication layer and whatever it replicates (hashicorp/raft's FSM)."""

from __future__ import annotations

from typing import Protocol

__all__ = ["StateMachine"]


class StateMachine(Protocol):
    def apply(self, command: bytes) -> object:
        """Apply one committed command and return its result. Must be deterministic and must not
        raise: the same command is applied on every replica and again on every replay."""

    def snapshot(self) -> bytes:
        """Serialise the whole state. Called in a forked child process, so it may take its time."""

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot; raise ValueError if it is corrupt."""
