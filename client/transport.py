"""The one seam for the client's HTTP I/O: `Transport`, and its aiohttp implementation.

A transport sends one request to one node and returns the raw answer, whatever its status.
It raises only `RaftMQError`s, and only for failures below HTTP: `connection_error` with
definite=True when the request cannot have been sent (no connection was made), and `timeout` or
`connection_error` with definite=False once it may have reached the node. Tests wrap a real
transport to inject faults; nothing above this module touches sockets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from raftmq.client import errors

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "AiohttpTransport",
    "RawResponse",
    "Transport",
]

# Large enough for a full claim or fetch answer of the server's default limits.
DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_CONNECTIONS = 100
_READ_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """A header's value by case-insensitive name (a transport may keep any spelling)."""
        value = self.headers.get(name)
        if value is not None:
            return value
        wanted = name.lower()
        for key, found in self.headers.items():
            if key.lower() == wanted:
                return found
        return None


class Transport(Protocol):
    async def request(
        self,
        url: str,
        method: str,
        path: str,
        *,
        body: bytes | None,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
        timeout_s: float,
    ) -> RawResponse: ...

    async def close(self) -> None: ...


class AiohttpTransport(Transport):
    """One pooled aiohttp session for every node; created lazily inside the running loop."""

    def __init__(
        self,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if max_connections < 1 or max_response_bytes < 1:
            raise ValueError("max_connections and max_response_bytes must be >= 1")
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the transport is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def request(
        self,
        url: str,
        method: str,
        path: str,
        *,
        body: bytes | None,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
        timeout_s: float,
    ) -> RawResponse:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self._http().request(
                method, url.rstrip("/") + path, data=body, headers=dict(headers),
                params=None if params is None else dict(params), timeout=timeout,
                allow_redirects=False,
            ) as response:
                payload = await self._read(response)
                return RawResponse(response.status, dict(response.headers), payload)
        except aiohttp.ClientConnectorError as exc:
            # No connection was made, so nothing was sent: definitely not executed.
            raise errors.error_for(errors.CONNECTION_ERROR, f"{url}: {exc}", definite=True) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            # Timed out while connecting (aiohttp tells this apart): nothing was sent either.
            raise errors.error_for(errors.CONNECTION_ERROR, f"{url}: connect timed out",
                                   definite=True) from exc
        except TimeoutError as exc:
            raise errors.error_for(errors.TIMEOUT, f"{url}: no answer within {timeout_s:g} s",
                                   definite=False) from exc
        except aiohttp.ClientError as exc:
            # Reset, disconnected, or a malformed answer: the request may have been executed.
            raise errors.error_for(errors.CONNECTION_ERROR, f"{url}: {exc!r}", definite=False) from exc

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(_READ_CHUNK_BYTES):
            size += len(chunk)
            if size > self._max_response_bytes:
                # The answer arrived, so the request was executed; only its result is lost.
                raise errors.error_for(
                    errors.UNEXPECTED_RESPONSE,
                    f"response larger than {self._max_response_bytes} bytes", definite=False,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def close(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()
