"""The HTTP layer's one exception type, and how replication and state errors map onto it."""

from __future__ import annotations

from collections.abc import Mapping

from raftmq.client import errors as codes

__all__ = ["ApiError", "bad_request", "from_proposal_error", "from_state_error"]


class ApiError(Exception):
    """An error answered to the client as `{"error": {...}}` with a stable code."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        definite: bool | None = None,
        leader_id: str | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status if status is not None else codes.status_for_code(code)
        self.definite = definite if definite is not None else code not in codes.INDEFINITE_CODES
        # A leader hint from the failure itself; the response falls back to the node's view.
        self.leader_id = leader_id
        # Fields added to the error object next to code and message (e.g. the readable range
        # of an offset_out_of_range), so a client can act without parsing the message.
        self.extra: dict[str, object] = dict(extra) if extra else {}


def bad_request(message: str, code: str = codes.INVALID_ARGUMENT) -> ApiError:
    return ApiError(code, message)


def from_state_error(code: str, message: str) -> ApiError:
    """An ErrorResult computed by `apply`: the command was applied and changed nothing."""
    return ApiError(code, message, definite=True)


def from_proposal_error(
    code: str, message: str, *, definite: bool, leader_id: str | None
) -> ApiError:
    """A replication failure from the cluster layer (unknown codes are still 503s)."""
    status = codes.STATUS_BY_CODE.get(code, 503)
    return ApiError(code, message, status=status, definite=definite, leader_id=leader_id)
