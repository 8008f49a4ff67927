"""Content negotiation: reading request documents and writing responses in JSON or msgpack."""

from __future__ import annotations

import functools

from aiohttp import web

from raftmq.broker.api.errors import ApiError, bad_request
from raftmq.client import errors as codes
from raftmq.client.wire import (
    WireFormat,
    WireValueError,
    decode_document,
    encode_document,
    format_for_content_type,
)

__all__ = ["read_document", "request_format", "respond"]


# Every request and its response look the format up; clients send the same few header values.
# Bounded, since the header text is the client's.
@functools.lru_cache(maxsize=64)
def _format_of(content_type: str) -> WireFormat | None:
    return format_for_content_type(content_type)


@functools.lru_cache(maxsize=64)
def _accepted_format(accept: str) -> WireFormat | None:
    # q-values are ignored: clients of this API name one of two formats, in preference order.
    for media_range in accept.split(","):
        wire_format = _format_of(media_range)
        if wire_format is not None:
            return wire_format
    return None


def request_format(request: web.Request) -> WireFormat:
    """The response format: the request's Content-Type, else its Accept header, else JSON."""
    content_type = request.headers.get("Content-Type")
    if content_type:
        wire_format = _format_of(content_type)
        if wire_format is not None:
            return wire_format
    return _accepted_format(request.headers.get("Accept", "")) or WireFormat.JSON


async def read_document(request: web.Request, max_request_bytes: int) -> object:
    """The request body as a document; an empty body is an empty map."""
    declared_length = request.content_length
    if declared_length is not None and declared_length > max_request_bytes:
        raise _too_large(max_request_bytes)
    try:
        data = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(max_request_bytes) from None
    if not data:
        return {}
    content_type = request.headers.get("Content-Type")
    # A body without a Content-Type is taken as JSON so that a bare `curl --data-binary`
    # works; a body with any other declared type is refused, never guessed at.
    if not content_type:
        content_type = WireFormat.JSON.content_type
    wire_format = _format_of(content_type)
    if wire_format is None:
        raise ApiError(
            codes.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type {content_type[:100]!r} is not supported; use application/json "
            "or application/msgpack",
        )
    try:
        return decode_document(data, wire_format)
    except WireValueError as exc:
        raise bad_request(str(exc)[:300], codes.MALFORMED_REQUEST) from None


def _too_large(max_request_bytes: int) -> ApiError:
    return ApiError(
        codes.REQUEST_TOO_LARGE, f"request body exceeds the limit of {max_request_bytes} bytes"
    )


def respond(request: web.Request, document: object, status: int = 200) -> web.Response:
    wire_format = request_format(request)
    return web.Response(
        body=encode_document(document, wire_format),
        status=status,
        content_type=wire_format.content_type,
    )
