"""Stable error codes shared by the server and the client, and the client's error tree.

The server answers every failure with `{"error": {"code", "message", "definite", "leader"}}`;
the code strings below are part of the public API and must never change meaning.
`definite=True` means the operation certainly did not happen (safe to retry as is);
`definite=False` means it may have happened (only an idempotent retry is safe).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "ALREADY_MEMBER",
    "BAD_REQUEST_CODES",
    "BATCH_TOO_LARGE",
    "CANNOT_REMOVE_LEADER",
    "CONNECTION_ERROR",
    "DECODE_ERROR",
    "DRAINING",
    "EXCHANGE_NOT_FOUND",
    "GROUP_NOT_FOUND",
    "INDEFINITE_CODES",
    "INTERNAL_ERROR",
    "INVALID_ARGUMENT",
    "INVALID_NAME",
    "IN_USE",
    "LEADERSHIP_LOST",
    "MALFORMED_REQUEST",
    "MEMBERSHIP_CHANGE_IN_PROGRESS",
    "MEMBER_NOT_FOUND",
    "MESSAGE_TOO_LARGE",
    "METHOD_NOT_ALLOWED",
    "NODE_STOPPED",
    "NOT_CAUGHT_UP",
    "NOT_FOUND",
    "NOT_LEADER",
    "NOT_READY",
    "NO_LEADER",
    "OFFSET_OUT_OF_RANGE",
    "OVERLOADED",
    "PARTITION_NOT_ASSIGNED",
    "PARTITION_NOT_FOUND",
    "PRECONDITION_FAILED",
    "PROPOSAL_REJECTED",
    "QUEUE_NOT_FOUND",
    "REQUEST_TOO_LARGE",
    "RESOURCE_EXHAUSTED",
    "SEQUENCE_TOO_OLD",
    "STALE_GENERATION",
    "STATUS_BY_CODE",
    "STREAM_NOT_FOUND",
    "TIMEOUT",
    "TOO_MANY_WAITERS",
    "TRANSFER_REFUSED",
    "UNEXPECTED_RESPONSE",
    "UNKNOWN_MEMBER",
    "UNSUPPORTED_MEDIA_TYPE",
    "ConflictError",
    "IndefiniteError",
    "InvalidRequestError",
    "NotFoundError",
    "OutOfRangeError",
    "RaftMQError",
    "ServerError",
    "TooLargeError",
    "UnavailableError",
    "error_for",
    "status_for_code",
]

# 400: the request itself is wrong; retrying it unchanged cannot succeed.
MALFORMED_REQUEST = "malformed_request"
INVALID_ARGUMENT = "invalid_argument"
INVALID_NAME = "invalid_name"
# 404
NOT_FOUND = "not_found"
EXCHANGE_NOT_FOUND = "exchange_not_found"
QUEUE_NOT_FOUND = "queue_not_found"
STREAM_NOT_FOUND = "stream_not_found"
PARTITION_NOT_FOUND = "partition_not_found"
GROUP_NOT_FOUND = "group_not_found"
MEMBER_NOT_FOUND = "member_not_found"  # no cluster member has this node id
# 405 / 415
METHOD_NOT_ALLOWED = "method_not_allowed"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
# 409
PRECONDITION_FAILED = "precondition_failed"
IN_USE = "in_use"
SEQUENCE_TOO_OLD = "sequence_too_old"
# A consumer-group member's view is out of date: rejoin or heartbeat, then retry.
UNKNOWN_MEMBER = "unknown_member"
STALE_GENERATION = "stale_generation"
PARTITION_NOT_ASSIGNED = "partition_not_assigned"
# Cluster membership: one change at a time; the id or address is taken; the leader is removed
# only after a leadership transfer; no follower is caught up enough to take the leadership.
MEMBERSHIP_CHANGE_IN_PROGRESS = "membership_change_in_progress"
ALREADY_MEMBER = "already_member"
CANNOT_REMOVE_LEADER = "cannot_remove_leader"
TRANSFER_REFUSED = "transfer_refused"
# 416: a stream offset outside [first_offset, next_offset] (the error carries both).
OFFSET_OUT_OF_RANGE = "offset_out_of_range"
# 413
MESSAGE_TOO_LARGE = "message_too_large"
BATCH_TOO_LARGE = "batch_too_large"
REQUEST_TOO_LARGE = "request_too_large"
# 429
OVERLOADED = "overloaded"
TOO_MANY_WAITERS = "too_many_waiters"
# 507
RESOURCE_EXHAUSTED = "resource_exhausted"
# 503: replication could not confirm the write
NO_LEADER = "no_leader"
PROPOSAL_REJECTED = "proposal_rejected"
NOT_READY = "not_ready"
TIMEOUT = "timeout"
LEADERSHIP_LOST = "leadership_lost"
NODE_STOPPED = "node_stopped"
# A leader-only operation (membership, leadership transfer) sent to another node: `leader` says
# where to send it.
NOT_LEADER = "not_leader"
# The node is shutting down (a Kubernetes preStop drain): send new work to another node.
DRAINING = "draining"
# A read with min_applied_index that this replica did not reach in time (nothing happened).
NOT_CAUGHT_UP = "not_caught_up"
# 500: a server bug
INTERNAL_ERROR = "internal_error"
DECODE_ERROR = "decode_error"
# Client side only: never sent by a server.
CONNECTION_ERROR = "connection_error"
UNEXPECTED_RESPONSE = "unexpected_response"

BAD_REQUEST_CODES = frozenset({MALFORMED_REQUEST, INVALID_ARGUMENT, INVALID_NAME})

STATUS_BY_CODE: dict[str, int] = {
    MALFORMED_REQUEST: 400,
    INVALID_ARGUMENT: 400,
    INVALID_NAME: 400,
    NOT_FOUND: 404,
    EXCHANGE_NOT_FOUND: 404,
    QUEUE_NOT_FOUND: 404,
    STREAM_NOT_FOUND: 404,
    PARTITION_NOT_FOUND: 404,
    GROUP_NOT_FOUND: 404,
    MEMBER_NOT_FOUND: 404,
    METHOD_NOT_ALLOWED: 405,
    UNSUPPORTED_MEDIA_TYPE: 415,
    PRECONDITION_FAILED: 409,
    IN_USE: 409,
    SEQUENCE_TOO_OLD: 409,
    UNKNOWN_MEMBER: 409,
    STALE_GENERATION: 409,
    PARTITION_NOT_ASSIGNED: 409,
    MEMBERSHIP_CHANGE_IN_PROGRESS: 409,
    ALREADY_MEMBER: 409,
    CANNOT_REMOVE_LEADER: 409,
    TRANSFER_REFUSED: 409,
    OFFSET_OUT_OF_RANGE: 416,
    MESSAGE_TOO_LARGE: 413,
    BATCH_TOO_LARGE: 413,
    REQUEST_TOO_LARGE: 413,
    OVERLOADED: 429,
    TOO_MANY_WAITERS: 429,
    RESOURCE_EXHAUSTED: 507,
    NO_LEADER: 503,
    PROPOSAL_REJECTED: 503,
    NOT_READY: 503,
    TIMEOUT: 503,
    LEADERSHIP_LOST: 503,
    NODE_STOPPED: 503,
    NOT_LEADER: 503,
    DRAINING: 503,
    NOT_CAUGHT_UP: 503,
    INTERNAL_ERROR: 500,
    DECODE_ERROR: 500,
}

# Codes whose operation may have happened despite the error.
INDEFINITE_CODES = frozenset({TIMEOUT, LEADERSHIP_LOST, NODE_STOPPED, INTERNAL_ERROR})


def status_for_code(code: str) -> int:
    """HTTP status for a stable code; unknown codes are treated as server errors."""
    return STATUS_BY_CODE.get(code, 500)


class RaftMQError(Exception):
    """Base of every error the client raises."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        definite: bool,
        leader: str | None = None,
        status: int | None = None,
        details: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.definite = definite
        self.leader = leader
        self.status = status
        # Fields the server's error carried beyond code, message, definite and leader (a
        # 416's `first_offset` and `next_offset`).
        self.details: Mapping[str, object] = dict(details or {})


class InvalidRequestError(RaftMQError):
    """400/405/415: the request is wrong; it was not executed."""


class NotFoundError(RaftMQError):
    """404: no such queue, exchange, stream, partition, group or route."""


class ConflictError(RaftMQError):
    """409: a precondition failed (different args, in use, sequence too old, or a consumer
    group's member, generation or assignment that is no longer current)."""


class OutOfRangeError(RaftMQError):
    """416: a stream offset before the first readable one (trimmed by retention) or past
    the next one; the client decides where to resume."""


class TooLargeError(RaftMQError):
    """413: a message, batch or request exceeds a configured limit."""


class UnavailableError(RaftMQError):
    """429/503/507 with definite=True: nothing happened; retry later (maybe elsewhere)."""


class IndefiniteError(RaftMQError):
    """The outcome is unknown: the operation may or may not have happened."""


class ServerError(RaftMQError):
    """500: a server bug."""


_CLASS_BY_STATUS: dict[int, type[RaftMQError]] = {
    400: InvalidRequestError,
    404: NotFoundError,
    405: InvalidRequestError,
    409: ConflictError,
    413: TooLargeError,
    416: OutOfRangeError,
    415: InvalidRequestError,
    429: UnavailableError,
    503: UnavailableError,
    507: UnavailableError,
}


def error_for(
    code: str,
    message: str,
    *,
    definite: bool,
    leader: str | None = None,
    status: int | None = None,
    details: Mapping[str, object] | None = None,
) -> RaftMQError:
    """Build the most specific error class for a code; indefinite outcomes always win."""
    effective_status = status if status is not None else STATUS_BY_CODE.get(code)
    cls: type[RaftMQError]
    if not definite:
        cls = IndefiniteError
    elif code == CONNECTION_ERROR:
        cls = UnavailableError
    elif effective_status is not None and effective_status in _CLASS_BY_STATUS:
        cls = _CLASS_BY_STATUS[effective_status]
    elif effective_status is not None and effective_status >= 500:
        cls = ServerError
    else:
        cls = RaftMQError
    return cls(code, message, definite=definite, leader=leader, status=effective_status,
               details=details)
