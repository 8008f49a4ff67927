"""raftmq.client: the asyncio `Client` with failover (and its synchronous twin `SyncClient`),
the retry policy, the wire format shared with the broker, the minimal single-node `RaftMQ`
client and a WebSocket publisher with pipelined confirms."""

from raftmq.client.client import Client, Connecting
from raftmq.client.cluster import ClusterMap
from raftmq.client.errors import (
    ConflictError,
    IndefiniteError,
    InvalidRequestError,
    NotFoundError,
    OutOfRangeError,
    RaftMQError,
    ServerError,
    TooLargeError,
    UnavailableError,
)
from raftmq.client.http import RaftMQ
from raftmq.client.producer import AppendedRecord, Producer, ProducerSettings, PublishedMessage
from raftmq.client.queue_consumer import QueueConsumer
from raftmq.client.retry import GiveUp, Retry, RetryPolicy, backoff_s, next_step
from raftmq.client.stream_consumer import Assignment, StreamConsumer
from raftmq.client.stream_wire import OutgoingRecord, StreamPublishReceipt, StreamRecord
from raftmq.client.sync import SyncClient
from raftmq.client.sync_pubsub import SyncProducer, SyncQueueConsumer, SyncStreamConsumer
from raftmq.client.transport import AiohttpTransport, RawResponse, Transport
from raftmq.client.wire import Message, OutgoingMessage, PublishReceipt, SettleReceipt
from raftmq.client.ws import WsPublisher

__all__ = [
    "AiohttpTransport",
    "AppendedRecord",
    "Assignment",
    "Client",
    "ClusterMap",
    "ConflictError",
    "Connecting",
    "GiveUp",
    "IndefiniteError",
    "InvalidRequestError",
    "Message",
    "NotFoundError",
    "OutOfRangeError",
    "OutgoingMessage",
    "OutgoingRecord",
    "Producer",
    "ProducerSettings",
    "PublishReceipt",
    "PublishedMessage",
    "QueueConsumer",
    "RaftMQ",
    "RaftMQError",
    "RawResponse",
    "Retry",
    "RetryPolicy",
    "ServerError",
    "SettleReceipt",
    "StreamConsumer",
    "StreamPublishReceipt",
    "StreamRecord",
    "SyncClient",
    "SyncProducer",
    "SyncQueueConsumer",
    "SyncStreamConsumer",
    "TooLargeError",
    "Transport",
    "UnavailableError",
    "WsPublisher",
    "backoff_s",
    "next_step",
]
