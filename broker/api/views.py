"""How state views and results look on the wire (plain maps, format-aware for bodies)."""

from __future__ import annotations

import dataclasses

from raftmq.broker.api.rates import QueueRates
from raftmq.broker.results import BindingInfo, Delivery, ExchangeInfo, QueueInfo
from raftmq.client.wire import Message, WireFormat
from raftmq.cluster import ClusterStatus

__all__ = [
    "binding_view",
    "cluster_view",
    "delivery_view",
    "exchange_view",
    "queue_view",
]


def exchange_view(info: ExchangeInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "type": info.type,
        "alternate_exchange": info.alternate_exchange,
        "bindings": info.bindings,
    }


def binding_view(info: BindingInfo) -> dict[str, object]:
    return {"exchange": info.exchange, "queue": info.queue, "binding_key": info.binding_key}


def queue_view(info: QueueInfo, rates: QueueRates) -> dict[str, object]:
    return {
        "name": info.name,
        "args": dataclasses.asdict(info.args),
        "ready": info.ready,
        "delayed": info.delayed,
        "leased": info.leased,
        "bytes": info.bytes,
        "consumers": info.consumers,
        "counters": {
            "published": info.published,
            "delivered": info.delivered,
            "redelivered": info.redelivered,
            "acked": info.acked,
            "nacked": info.nacked,
            "expired": info.expired,
            "dead_lettered": info.dead_lettered,
            "dropped": info.dropped,
        },
        "rates": rates.to_wire(),
    }


def delivery_view(delivery: Delivery, wire_format: WireFormat) -> dict[str, object]:
    message = Message(
        message_id=delivery.message_id,
        lease_id=delivery.lease_id,
        body=delivery.body,
        headers=delivery.headers,
        routing_key=delivery.routing_key,
        exchange=delivery.exchange,
        delivery_count=delivery.delivery_count,
        published_ms=delivery.published_ms,
        lease_expires_ms=delivery.lease_expires_ms,
    )
    return message.to_wire(wire_format)


def cluster_view(status: ClusterStatus, metadata: dict[str, dict[str, str]]) -> dict[str, object]:
    def http_url(node_id: str | None) -> str | None:
        return None if node_id is None else metadata.get(node_id, {}).get("http_url")

    peers = [
        {
            "node_id": peer.node_id,
            "address": peer.address,
            "connected": peer.connected,
            "match_index": peer.match_index,
            "http_url": http_url(peer.node_id),
        }
        for peer in status.peers
    ]
    return {
        "node_id": status.node_id,
        "http_url": http_url(status.node_id),
        "role": status.role,
        "term": status.term,
        "leader_id": status.leader_id,
        "leader_url": http_url(status.leader_id),
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
        "log_entries": status.log_entries,
        "has_quorum": status.has_quorum,
        "ready": status.ready,
        "peers": peers,
        "nodes": {node_id: dict(meta) for node_id, meta in sorted(metadata.items())},
    }
