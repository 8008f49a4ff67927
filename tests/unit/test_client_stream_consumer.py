"""The stream consumer against a real single-node broker: by offset, by time, as a group."""

from __future__ import annotations

import time

import pytest

from raftmq.client.client import Client
from raftmq.client.stream_consumer import Assignment, StreamConsumer
from raftmq.client.stream_wire import StreamRecord
from tests.unit.test_api_fixtures import Broker, broker, unique, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")
__all__ = ["broker"]


async def publish(broker: Broker, stream: str, bodies: list[bytes], key: str | None = None) -> None:
    messages = [{"body": body, **({"key": key} if key else {})} for body in bodies]
    for start in range(0, len(messages), 50):
        response, answer = await broker.call("POST", f"/v1/streams/{stream}/publish",
                                             {"messages": messages[start:start + 50]}, fmt="msgpack")
        assert response.status == 200, answer


async def read(consumer: StreamConsumer, count: int, timeout_s: float = 10.0) -> list[StreamRecord]:
    records: list[StreamRecord] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < count:
        assert time.monotonic() < deadline, f"read {len(records)} of {count}"
        records += await consumer.next_batch(timeout_s=0.5)
    return records


async def test_reads_every_partition_from_the_earliest(broker: Broker) -> None:
    stream = unique("s")
    async with await Client.connect(broker.url) as client:
        await client.declare_stream(stream, partitions=3)
        await publish(broker, stream, [b"%d" % i for i in range(150)])  # round-robin
        async with StreamConsumer(client, stream, wait_ms=200) as consumer:
            records = await read(consumer, 150)
    assert sorted(r.body for r in records) == sorted(b"%d" % i for i in range(150))
    for partition in range(3):
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == list(range(50))


async def test_latest_reads_only_what_comes_after_the_start(broker: Broker) -> None:
    stream = unique("s")
    async with await Client.connect(broker.url) as client:
        await client.declare_stream(stream, partitions=1)
        await publish(broker, stream, [b"old"] * 5)
        async with StreamConsumer(client, stream, start="latest", wait_ms=200) as consumer:
            await publish(broker, stream, [b"new"])
            records = await read(consumer, 1)
            assert await consumer.next_batch(timeout_s=0.3) == []
    assert [(r.offset, r.body) for r in records] == [(5, b"new")]


async def test_a_timestamp_start_skips_older_records(broker: Broker) -> None:
    stream = unique("s")
    async with await Client.connect(broker.url) as client:
        await client.declare_stream(stream, partitions=1)
        await publish(broker, stream, [b"before"] * 3)
        info = await client.stream_info(stream)
        cutoff_ms = int(info["partitions"][0]["first_timestamp_ms"]) + 1
        # The next publish is stamped with the node's wall clock, past the cutoff by then.
        await wait_for(lambda: time.time() * 1000 >= cutoff_ms + 1, 5.0, "the clock to pass")
        await publish(broker, stream, [b"after"])
        async with StreamConsumer(client, stream, start_timestamp_ms=cutoff_ms,
                                  wait_ms=200) as consumer:
            records = await read(consumer, 1)
    assert [r.body for r in records] == [b"after"]


async def test_group_members_split_partitions_and_take_over_after_commit(broker: Broker) -> None:
    stream, group = unique("s"), unique("g")
    rebalances: list[Assignment] = []
    async with await Client.connect(broker.url) as client:
        await client.declare_stream(stream, partitions=4)
        await publish(broker, stream, [b"%d" % i for i in range(40)])  # 10 per partition
        first = await StreamConsumer(client, stream, group=group, member="a", wait_ms=200,
                                     session_timeout_ms=2_000,
                                     on_rebalance=rebalances.append).start()
        second = await StreamConsumer(client, stream, group=group, member="b", wait_ms=200,
                                      session_timeout_ms=2_000).start()
        try:
            # a learns of b's arrival on its next heartbeat.
            await wait_for(lambda: first.assignment is not None
                           and first.assignment.generation == 2, 5.0, "a's rebalance")
            assert first.assignment is not None and second.assignment is not None
            assert set(first.assignment.partitions) | set(second.assignment.partitions) == {0, 1, 2, 3}
            assert not set(first.assignment.partitions) & set(second.assignment.partitions)
            taken = await read(second, 20)
            await second.commit()
        finally:
            await second.close()  # leaves: its partitions move to a at once
        await wait_for(lambda: first.assignment is not None
                       and len(first.assignment.partitions) == 4, 5.0, "a takes everything")
        rest = await read(first, 20)
        await first.close()
    assert [a.generation for a in rebalances][-1] == 3
    # Nothing b committed is read again by a; together they read every record once.
    seen = {(r.partition, r.offset) for r in taken} | {(r.partition, r.offset) for r in rest}
    assert len(seen) == 40 == len(taken) + len(rest)


async def test_next_batch_times_out_empty(broker: Broker) -> None:
    stream = unique("s")
    async with await Client.connect(broker.url) as client:
        await client.declare_stream(stream, partitions=1)
        async with StreamConsumer(client, stream, wait_ms=100) as consumer:
            started = time.monotonic()
            assert await consumer.next_batch(timeout_s=0.2) == []
            assert time.monotonic() - started < 2.0


async def test_a_deleted_stream_surfaces_as_an_error(broker: Broker) -> None:
    stream = unique("s")
    async with await Client.connect(broker.url) as client:
        await client.declare_stream(stream, partitions=1)
        consumer = await StreamConsumer(client, stream, wait_ms=100).start()
        try:
            await client.delete_stream(stream)
            with pytest.raises(Exception, match="stream"):
                for _ in range(50):
                    await consumer.next_batch(timeout_s=0.2)
        finally:
            await consumer.close()
