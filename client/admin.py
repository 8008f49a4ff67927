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

    # -- cluster operations (run by the leader; the client follows its `not_leader` hint) ----

    async def add_member(self, node_id: str, raft_address: str) -> list[dict[str, Any]]:
        """Add a voting member (one change at a time); the members afterwards, each
        `{"node_id", "raft_address"}`. Then start the new node with --peers = those members.
        Repeating it is harmless: a member already at that address is success."""
        body = {"node_id": node_id, "raft_address": raft_address}
        result = await self.request("POST", "/v1/cluster/members", body=body, write=True,
                                    idempotent=True)
        return _list_field(result, "members")

    async def remove_member(self, node_id: str) -> list[dict[str, Any]]:
        """Remove a voting member (not the leader: transfer the leadership first); the
        members afterwards. A repeat after an unknown outcome answers `member_not_found`,
        which the client then reports as unknown."""
        result = await self.request("DELETE", f"/v1/cluster/members/{_segment(node_id)}",
                                    write=True, idempotent=True)
        return _list_field(result, "members")

    async def transfer_leadership(self, to: str | None = None) -> str:
        """Hand the leadership to node `to` (default: the most caught-up follower); the new
        leader's id. Without a target it is not repeated once its outcome is unknown: a
        repeat would move the leadership again."""
        body = None if to is None else {"to": to}
        result = await self.request("POST", "/v1/cluster/leadership/transfer", body=body,
                                    write=True, idempotent=to is not None)
        leader = result.get("leader_id")
        if not isinstance(leader, str):
            raise errors.error_for(errors.UNEXPECTED_RESPONSE, "'leader_id' missing from the "
                                   "response", definite=False)
        return leader

    async def state_digest(self) -> dict[str, Any]:
        """The answering node's `{"node_id", "applied_index", "digest"}`: replicas at the same
        applied index have the same digest. Use a client with one URL to ask one node."""
        return await self._read("/v1/cluster/digest")

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
