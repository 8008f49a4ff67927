"""lz4-compressed request bodies (`Content-Encoding: lz4`) on a real single-node broker: every
document-taking route accepts them, decompression is bounded by `max_request_bytes` (413 without
holding more than the limit), corrupt frames are 400 and other encodings 415."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from typing import Any

import lz4.frame
import msgpack
import pytest

from raftmq.broker.api.content import DECOMPRESS_CHUNK_BYTES, decompress_lz4_frame
from raftmq.broker.api.errors import ApiError
from tests.unit.test_api_fixtures import MODULE_LOOP, TEST_LIMITS, Broker, broker, unique

__all__ = ["broker"]

pytestmark = MODULE_LOOP

LIMIT = TEST_LIMITS.max_request_bytes


def packed(document: object, fmt: str) -> tuple[bytes, str]:
    if fmt == "json":
        return json.dumps(document).encode(), "application/json"
    return msgpack.packb(document, use_bin_type=True), "application/msgpack"


async def compressed_call(
    broker: Broker, method: str, path: str, document: object, fmt: str = "msgpack",
    encoding: str = "lz4",
) -> tuple[int, Any]:
    data, content_type = packed(document, fmt)
    response, body = await broker.call(
        method, path, data=lz4.frame.compress(data),
        headers={"Content-Type": content_type, "Content-Encoding": encoding},
    )
    return response.status, body


async def raw_call(broker: Broker, path: str, data: bytes, encoding: str) -> tuple[int, Any]:
    response, body = await broker.call(
        "POST", path, data=data,
        headers={"Content-Type": "application/json", "Content-Encoding": encoding},
    )
    return response.status, body


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_every_document_route_takes_an_lz4_body(broker: Broker, fmt: str) -> None:
    queue = unique("q")
    status, _ = await compressed_call(broker, "PUT", f"/v1/queues/{queue}", {"max_length": 5}, fmt)
    assert status == 201
    _, info = await broker.call("GET", f"/v1/queues/{queue}")
    assert info["args"]["max_length"] == 5
    # Repetitive bodies, as a producer's batch would have: they compress well.
    messages = [{"routing_key": queue, "body": "order " * 40 + str(i)} for i in range(3)]
    status, receipt = await compressed_call(broker, "POST", "/v1/publish", {"messages": messages},
                                            fmt)
    assert status == 200 and receipt["accepted"] == 3, receipt
    status, claimed = await compressed_call(broker, "POST", f"/v1/queues/{queue}/claim",
                                            {"max_messages": 3}, fmt)
    assert status == 200, claimed
    bodies = [m["body"] if fmt == "json" else m["body"].decode() for m in claimed["messages"]]
    assert bodies == [m["body"] for m in messages]
    leases = [[m["message_id"], m["lease_id"]] for m in claimed["messages"]]
    status, settled = await compressed_call(broker, "POST", f"/v1/queues/{queue}/ack",
                                            {"leases": leases}, fmt)
    assert status == 200 and settled == {"settled": 3, "failures": []}, settled


@pytest.mark.parametrize("encoding", ["LZ4", " lz4 "])
async def test_the_encoding_name_is_case_insensitive(broker: Broker, encoding: str) -> None:
    status, _ = await compressed_call(broker, "PUT", f"/v1/queues/{unique('q')}", {},
                                      encoding=encoding)
    assert status == 201


async def test_identity_is_a_plain_body(broker: Broker) -> None:
    response, _ = await broker.call("PUT", f"/v1/queues/{unique('q')}", {},
                                    headers={"Content-Encoding": "identity"})
    assert response.status == 201


async def test_a_body_at_the_limit_is_taken_and_one_byte_more_is_413(broker: Broker) -> None:
    document = b"{}" + b" " * (LIMIT - 2)  # JSON allows the trailing whitespace
    path = f"/v1/queues/{unique('q')}"
    headers = {"Content-Type": "application/json", "Content-Encoding": "lz4"}
    response, body = await broker.call("PUT", path, data=lz4.frame.compress(document),
                                       headers=headers)
    assert response.status == 201, body
    response, body = await broker.call("PUT", path, data=lz4.frame.compress(document + b" "),
                                       headers=headers)
    assert response.status == 413 and body["error"]["code"] == "request_too_large", body


async def test_a_small_frame_that_inflates_far_beyond_the_limit_is_413(broker: Broker) -> None:
    bomb = lz4.frame.compress(b" " * (LIMIT * 100))  # 6.4 MiB of spaces
    # Within the compressed-body limit, so it is the decompressed size that is refused.
    assert len(bomb) < LIMIT
    status, body = await raw_call(broker, "/v1/publish", bomb, "lz4")
    assert status == 413 and body["error"]["code"] == "request_too_large", body
    assert body["error"]["definite"] is True


def _corrupt_frames() -> list[bytes]:
    good = lz4.frame.compress(json.dumps({"messages": [{"routing_key": "k", "body": "x" * 500}]})
                              .encode(), block_checksum=True)
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF
    return [
        b"not an lz4 frame at all",
        good[:4] + b"\x00" * 3 + good[7:],  # frame descriptor broken (its checksum fails)
        good[: len(good) // 2],              # truncated
        bytes(flipped),                      # a block's checksum fails
        good + b"trailing",                  # data after the frame
    ]


@pytest.mark.parametrize("case", range(len(_corrupt_frames())))
async def test_a_corrupt_frame_is_400_malformed_request(broker: Broker, case: int) -> None:
    status, body = await raw_call(broker, "/v1/publish", _corrupt_frames()[case], "lz4")
    assert status == 400 and body["error"]["code"] == "malformed_request", body


# Not "br"/"zstd": without their optional libraries aiohttp's parser refuses those itself (400).
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "lz4, gzip", "x-custom", "lz4frame"])
async def test_other_encodings_are_415(broker: Broker, encoding: str) -> None:
    # A valid gzip body: refused for its encoding, not for being undecodable.
    data = gzip.compress(b'{"messages": [{"routing_key": "k", "body": "b"}]}')
    status, body = await raw_call(broker, "/v1/publish", data, encoding)
    assert status == 415 and body["error"]["code"] == "unsupported_media_type", body


async def test_decompression_never_holds_more_than_the_limit() -> None:
    limit = 1_048_576
    # The frame header even declares the real content size (32 MiB); it is not trusted.
    bomb = lz4.frame.compress(b"\0" * (32 * 1024 * 1024), store_size=True)
    tracemalloc.start()
    try:
        with pytest.raises(ApiError) as raised:
            decompress_lz4_frame(bomb, limit)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert raised.value.code == "request_too_large" and raised.value.status == 413
    # The chunks held (the limit) plus one step in flight, and lz4's copies of the compressed
    # input it has not consumed yet (itself bounded as a request body): far from 32 MiB.
    assert peak_bytes < limit + 2 * len(bomb) + 2 * DECOMPRESS_CHUNK_BYTES, peak_bytes


async def test_decompression_returns_the_exact_content() -> None:
    content = bytes(range(256)) * 5000  # several steps' worth
    assert decompress_lz4_frame(lz4.frame.compress(content), len(content)) == content
    assert decompress_lz4_frame(lz4.frame.compress(b""), 0) == b""
    with pytest.raises(ApiError) as raised:
        decompress_lz4_frame(lz4.frame.compress(content), len(content) - 1)
    assert raised.value.code == "request_too_large"
