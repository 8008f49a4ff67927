"""The topology and inspection calls of `Client` (and, through it, `SyncClient`): each a thin
call of the one failover path, `request`. Declares and binds are idempotent by nature (a repeat
answers `created: false`); so are deletes, although a repeat after an unknown outcome can only
answer "not found", which the client then reports as unknown, not as a plain failure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from raftmq.client import errors

__all__ = ["AdminMethods"]


def _segment(name: str) -> str:
    return quote(name, safe="")


def _without_none(**values: object) -> dict[str, object]:
    return {key: value for key, value in values.items() if value is not None}


class AdminMethods:
    """Mixed into `Client`, which provides `request`."""

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, object] | None = None,
        params: Mapping[str, str] | None = None,
        write: bool,
        idempotent: bool,
        content_encoding: str | None = None,
        raw_body: bytes | None = None,
        deadline_s: float | None = None,
        attempt_timeout_s: float | None = None,
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def declare_exchange(
        self, name: str, exchange_type: str = "direct", *, alternate_exchange: str | None = None
    ) -> bool:
        """True if the exchange was created, False if it already existed as declared."""
        body = _without_none(type=exchange_type, alternate_exchange=alternate_exchange)
        result = await self.request("PUT", f"/v1/exchanges/{_segment(name)}", body=body,
                                    write=True, idempotent=True)
        return bool(result.get("created"))

    async def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        params = {"if_unused": "true"} if if_unused else None
        await self.request("DELETE", f"/v1/exchanges/{_segment(name)}", params=params,
                           write=True, idempotent=True)

    async def exchange_info(self, name: str) -> dict[str, Any]:
        return await self._read(f"/v1/exchanges/{_segment(name)}")

    async def list_exchanges(self) -> list[dict[str, Any]]:
        return _list_field(await self._read("/v1/exchanges"), "exchanges")

    async def declare_queue(
        self,
        name: str,
        *,
        max_length: int | None = None,
        max_length_bytes: int | None = None,
        overflow: str | None = None,
        message_ttl_ms: int | None = None,
        delivery_limit: int | None = None,
        dead_letter_exchange: str | None = None,
        dead_letter_routing_key: str | None = None,
    ) -> bool:
        """True if the queue was created, False if it already existed as declared."""
        body = _without_none(
            max_length=max_length, max_length_bytes=max_length_bytes, overflow=overflow,
            message_ttl_ms=message_ttl_ms, delivery_limit=delivery_limit,
            dead_letter_exchange=dead_letter_exchange,
            dead_letter_routing_key=dead_letter_routing_key,
        )
        result = await self.request("PUT", f"/v1/queues/{_segment(name)}", body=body,
                                    write=True, idempotent=True)
        return bool(result.get("created"))

    async def delete_queue(self, name: str, *, if_empty: bool = False) -> None:
        params = {"if_empty": "true"} if if_empty else None
        await self.request("DELETE", f"/v1/queues/{_segment(name)}", params=params,
                           write=True, idempotent=True)

    async def purge_queue(self, name: str) -> int:
        """Remove every ready message; how many were removed. Not retried once its outcome is
        unknown: a repeat would also remove messages published in between."""
        result = await self.request("POST", f"/v1/queues/{_segment(name)}/purge",
                                    write=True, idempotent=False)
        return _int_field(result, "purged")

    async def queue_info(self, name: str) -> dict[str, Any]:
        return await self._read(f"/v1/queues/{_segment(name)}")

    async def list_queues(self) -> list[dict[str, Any]]:
        return _list_field(await self._read("/v1/queues"), "queues")

    async def bind(self, exchange: str, queue: str, binding_key: str = "") -> bool:
        """True if the binding was created, False if it already existed."""
        body = {"exchange": exchange, "queue": queue, "binding_key": binding_key}
        result = await self.request("POST", "/v1/bindings", body=body, write=True, idempotent=True)
        return bool(result.get("created"))

    async def unbind(self, exchange: str, queue: str, binding_key: str = "") -> None:
        body = {"exchange": exchange, "queue": queue, "binding_key": binding_key}
        await self.request("DELETE", "/v1/bindings", body=body, write=True, idempotent=True)

    async def list_bindings(
        self, *, exchange: str | None = None, queue: str | None = None
    ) -> list[dict[str, Any]]:
        params = {key: value for key, value in (("exchange", exchange), ("queue", queue))
                  if value is not None}
        return _list_field(await self._read("/v1/bindings", params=params or None), "bindings")

    async def declare_stream(
        self,
        name: str,
        *,
        partitions: int = 1,
        max_age_ms: int | None = None,
        max_bytes: int | None = None,
        max_messages: int | None = None,
        max_message_bytes: int | None = None,
    ) -> bool:
        """True if the stream was created, False if it already existed as declared."""
        body = _without_none(partitions=partitions, max_age_ms=max_age_ms, max_bytes=max_bytes,
                             max_messages=max_messages, max_message_bytes=max_message_bytes)
        result = await self.request("PUT", f"/v1/streams/{_segment(name)}", body=body,
                                    write=True, idempotent=True)
        return bool(result.get("created"))

    async def delete_stream(self, name: str) -> None:
        await self.request("DELETE", f"/v1/streams/{_segment(name)}", write=True, idempotent=True)

    async def stream_info(self, name: str) -> dict[str, Any]:
        return await self._read(f"/v1/streams/{_segment(name)}")

    async def list_streams(self) -> list[dict[str, Any]]:
        return _list_field(await self._read("/v1/streams"), "streams")

    async def _read(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        return await self.request("GET", path, params=params, write=False, idempotent=True)


def _unexpected(message: str) -> errors.RaftMQError:
    return errors.error_for(errors.UNEXPECTED_RESPONSE, message, definite=True)


def _list_field(document: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    values = document.get(name)
    if not isinstance(values, list) or not all(isinstance(value, dict) for value in values):
        raise _unexpected(f"'{name}' missing from the response")
    return values


def _int_field(document: Mapping[str, Any], name: str) -> int:
    value = document.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        # The purge itself succeeded; only its count is unreadable.
        raise errors.error_for(errors.UNEXPECTED_RESPONSE, f"'{name}' missing from the response",
                               definite=False)
    return value
