"""Turning a node's raw HTTP answer into a document or a `RaftMQError`, keeping the error's
extra fields (e.g. `first_offset`/`next_offset` of `offset_out_of_range`)."""

from __future__ import annotations

from typing import Any

from raftmq.client import errors
from raftmq.client.transport import RawResponse
from raftmq.client.wire import (
    WireValueError,
    decode_document,
    format_for_content_type,
    parse_error_document,
)

__all__ = [
    "LEADER_HEADER",
    "NODE_HEADER",
    "decode_response",
    "leader_hint",
]

LEADER_HEADER = "X-Raftmq-Leader"
NODE_HEADER = "X-Raftmq-Node"
_STANDARD_ERROR_FIELDS = frozenset({"code", "message", "definite", "leader"})


def leader_hint(response: RawResponse) -> str | None:
    """The leader URL a node named in its headers; None when the header is absent."""
    return response.header(LEADER_HEADER)


def decode_response(response: RawResponse, *, write: bool) -> dict[str, Any]:
    """The answer's document; raises the matching RaftMQError for an error or garbled answer."""
    wire_format = format_for_content_type(response.header("Content-Type") or "")
    document: object = None
    if wire_format is not None and response.body:
        try:
            document = decode_document(response.body, wire_format)
        except WireValueError:
            document = None
    if response.status >= 400:
        raise _error(response, document, write=write)
    if not (200 <= response.status < 300) or not isinstance(document, dict):
        # Executed (or redirected) but unreadable: a write's outcome is unknown.
        raise errors.error_for(
            errors.UNEXPECTED_RESPONSE,
            f"HTTP {response.status} with an undecodable or unexpected body",
            definite=not write, status=response.status,
        )
    return document


def _error(response: RawResponse, document: object, *, write: bool) -> errors.RaftMQError:
    payload = parse_error_document(document)
    if payload is None:
        # Not a raftmq error (a proxy's page?): a failed write may still have been executed.
        return errors.error_for(
            errors.UNEXPECTED_RESPONSE, f"HTTP {response.status} without a raftmq error body",
            definite=not write or response.status < 500, status=response.status,
            leader=leader_hint(response) or None,
        )
    fields = document.get("error") if isinstance(document, dict) else None
    extra = {key: value for key, value in fields.items()
             if isinstance(key, str) and key not in _STANDARD_ERROR_FIELDS
             } if isinstance(fields, dict) else {}
    return errors.error_for(
        payload.code, payload.message, definite=payload.definite,
        leader=payload.leader or leader_hint(response) or None, status=response.status,
        details=extra,
    )
