"""raftmq.client: the wire format shared with the broker, an asyncio HTTP client, and a
WebSocket publisher with pipelined confirms."""

from raftmq.client.errors import (
    ConflictError,
    IndefiniteError,
    InvalidRequestError,
    NotFoundError,
    RaftMQError,
    ServerError,
    TooLargeError,
    UnavailableError,
)
from raftmq.client.http import RaftMQ
from raftmq.client.wire import Message, OutgoingMessage, PublishReceipt, SettleReceipt
from raftmq.client.ws import WsPublisher

__all__ = [
    "ConflictError",
    "IndefiniteError",
    "InvalidRequestError",
    "Message",
    "NotFoundError",
    "OutgoingMessage",
    "PublishReceipt",
    "RaftMQ",
    "RaftMQError",
    "ServerError",
    "SettleReceipt",
    "TooLargeError",
    "UnavailableError",
    "WsPublisher",
]
