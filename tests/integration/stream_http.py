"""A thin async HTTP caller of the stream API for integration tests (msgpack on the wire).

Deliberately not the client library: these tests check the server's API contract itself,
and the library's failover logic is tested on its own. Every non-2xx answer raises
`CallFailed` with the server's stable error code and `definite` flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import msgpack

__all__ = ["CallFailed", "StreamHttp"]

MSGPACK = "application/msgpack"


@dataclass
class CallFailed(Exception):
    status: int
    code: str
    definite: bool
    document: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.status} {self.code} (definite={self.definite})"


class StreamHttp:
    """Calls against one node's base URL; `timeout_s` bounds each request."""

    def __init__(self, session: aiohttp.ClientSession, url: str, timeout_s: float = 5.0) -> None:
        self.session = session
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None,
                   params: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Accept": MSGPACK}
        data = None
        if body is not None:
            headers["Content-Type"] = MSGPACK
            data = msgpack.packb(body, use_bin_type=True)
        async with self.session.request(method, self.url + path, data=data, headers=headers,
                                        params=params, timeout=self.timeout) as response:
            raw = await response.read()
            document = msgpack.unpackb(raw, raw=False) if raw else {}
            if response.status >= 300:
                error = document.get("error", {}) if isinstance(document, dict) else {}
                raise CallFailed(response.status, str(error.get("code")),
                                 bool(error.get("definite")), error)
            assert isinstance(document, dict)
            return document

    async def declare_stream(self, name: str, **args: Any) -> dict[str, Any]:
        return await self.call("PUT", f"/v1/streams/{name}", args)

    async def stream(self, name: str) -> dict[str, Any]:
        return await self.call("GET", f"/v1/streams/{name}")

    async def publish(self, stream: str, messages: list[dict[str, object]],
                      producer_id: str | None = None, sequence: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": messages}
        if producer_id is not None:
            body |= {"producer_id": producer_id, "sequence": sequence}
        return await self.call("POST", f"/v1/streams/{stream}/publish", body)

    async def fetch(self, stream: str, partition: int, offset: int | str, *,
                    max_messages: int = 1000, wait_ms: int = 0,
                    min_applied_index: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"offset": offset, "max_messages": max_messages,
                                  "wait_ms": wait_ms}
        if min_applied_index is not None:
            params["min_applied_index"] = min_applied_index
        return await self.call("GET", f"/v1/streams/{stream}/partitions/{partition}/messages",
                               params=params)

    async def group_call(self, stream: str, group: str, action: str,
                         body: dict[str, Any]) -> dict[str, Any]:
        return await self.call("POST", f"/v1/streams/{stream}/groups/{group}/{action}", body)
