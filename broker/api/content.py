"""Content negotiation: reading request documents (plain or lz4-compressed) and writing
responses in JSON or msgpack.

A request body may come as one lz4 frame (`Content-Encoding: lz4`, what `lz4.frame.compress`
makes): producers batch many similar messages, which compress well. The compressed body is
bounded like any body (`max_request_bytes`, by aiohttp while reading), and so is what it
decompresses to: it is inflated a chunk at a time and refused (413) as soon as it passes the
limit, so a small frame that claims or expands to gigabytes costs about the limit (plus the
compressed body) in memory.
"""

from __future__ import annotations

import functools

import lz4.frame
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

__all__ = ["DECOMPRESS_CHUNK_BYTES", "decompress_lz4_frame", "read_document", "request_format",
           "respond"]

# Output of one decompression step. lz4 allocates the whole `max_length` it is given up front, so
# the bound is applied in steps of this size rather than passed in one call.
DECOMPRESS_CHUNK_BYTES = 256 * 1024
_LZ4 = "lz4"


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
    # Before reading: a body in an encoding we do not take is refused unread.
    encoding = _content_encoding(request)
    declared_length = request.content_length
    if declared_length is not None and declared_length > max_request_bytes:
        raise _too_large(max_request_bytes)
    try:
        data = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(max_request_bytes) from None
    if not data:
        return {}
    if encoding == _LZ4:
        data = decompress_lz4_frame(data, max_request_bytes)
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


def _content_encoding(request: web.Request) -> str | None:
    """None for a plain body, "lz4" for an lz4 frame; any other encoding is a 415."""
    declared = request.headers.get("Content-Encoding", "")
    encoding = declared.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding == _LZ4:
        return _LZ4
    # gzip and friends too: aiohttp would inflate them itself, outside our bound.
    raise ApiError(
        codes.UNSUPPORTED_MEDIA_TYPE,
        f"Content-Encoding {declared[:100]!r} is not supported; send the body as is, or as "
        "one lz4 frame with Content-Encoding: lz4",
    )


def decompress_lz4_frame(data: bytes, max_bytes: int) -> bytes:
    """The content of exactly one lz4 frame; ApiError request_too_large once it would exceed
    `max_bytes` (never holding more than that plus one step), malformed_request if the data
    is not one complete, valid frame."""
    decompressor = lz4.frame.LZ4FrameDecompressor()
    chunks: list[bytes] = []
    total_bytes = 0
    pending = data
    while True:
        # One byte beyond the limit tells "exactly at the limit" from "over it".
        step_bytes = min(DECOMPRESS_CHUNK_BYTES, max_bytes - total_bytes + 1)
        try:
            chunk: bytes = decompressor.decompress(pending, max_length=step_bytes)
        except RuntimeError as exc:  # what lz4 raises for every kind of corrupt input
            raise bad_request(f"corrupt lz4 frame: {str(exc)[:200]}",
                              codes.MALFORMED_REQUEST) from None
        pending = b""
        total_bytes += len(chunk)
        if total_bytes > max_bytes:
            raise ApiError(
                codes.REQUEST_TOO_LARGE,
                f"the lz4 body decompresses to more than the limit of {max_bytes} bytes",
            )
        chunks.append(chunk)
        if decompressor.eof:
            break
        if decompressor.needs_input or not chunk:
            # Every byte was consumed (or nothing moved) and the frame has not ended.
            raise bad_request("truncated lz4 frame", codes.MALFORMED_REQUEST)
    if decompressor.unused_data:
        raise bad_request("data after the end of the lz4 frame", codes.MALFORMED_REQUEST)
    return b"".join(chunks)


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
