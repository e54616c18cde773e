"""Pipelined consumption on a real Kafka broker (ADR 66): records finishing out of order, the
committed position held by a slow record, and a rebalance's hand-over of in-flight records."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from postmesh.common import topics
from postmesh.common.bus.base import BusRecord
from postmesh.common.bus.kafka import KafkaBus
from tests.integration.infra import KafkaBroker

pytestmark = pytest.mark.asyncio


async def committed(servers: str, group: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: o.offset for tp, o in offsets.items() if o.offset >= 0}


async def until_count(records: list[str], n: int, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while len(records) < n:  # noqa: ASYNC110 (polling the handler's list)
            await asyncio.sleep(0.02)


async def test_slow_record_holds_its_partition_while_later_ones_are_handled(
    kafka_broker: KafkaBroker,
) -> None:
    tag = uuid.uuid4().hex[:8]
    servers = kafka_broker.bootstrap_servers
    bus = KafkaBus(servers, "t", create_topics=topics.ALL, topic_prefix=f"pipe-{tag}.")
    await bus.start()
    group = f"g-{tag}"
    slow, started = asyncio.Event(), asyncio.Event()
    got: list[str] = []
    partitions: set[int] = set()

    async def handler(r: BusRecord) -> None:
        partitions.add(r.partition)
        if r.value == b"slow":
            started.set()
            await slow.wait()
        got.append(r.value.decode())

    # One key: one partition, in publish order.
    await bus.publish(topics.INBOUND, "k", b"slow")
    task = asyncio.create_task(bus.consume([topics.INBOUND], group, handler, concurrency=4))
    try:
        await asyncio.wait_for(started.wait(), 60)
        for i in range(5):
            await bus.publish(topics.INBOUND, "k", f"r{i}".encode())
        await until_count(got, 5)
        assert got == [f"r{i}" for i in range(5)]
        await asyncio.sleep(0.5)  # past the commit interval
        assert await committed(servers, group) == {}  # nothing before "slow" to commit
        slow.set()
        await until_count(got, 6)
        [partition] = partitions
        async with asyncio.timeout(30):
            while (await committed(servers, group)).get(partition) != 6:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    finally:
        slow.set()
        await bus.stop()
        await asyncio.gather(task, return_exceptions=True)


async def test_rebalance_hands_over_in_flight_records_without_redoing_them(
    kafka_broker: KafkaBroker,
) -> None:
    """A second consumer joins while the first has records in flight: the revocation waits
    for them and commits them, so no record is handled twice, and none is lost."""
    tag = uuid.uuid4().hex[:8]
    servers = kafka_broker.bootstrap_servers
    prefix = f"hand-{tag}."
    first = KafkaBus(servers, "a", create_topics=topics.ALL, topic_prefix=prefix)
    second = KafkaBus(servers, "b", topic_prefix=prefix)
    await first.start()
    await second.start()
    group = f"g-{tag}"
    handled: list[str] = []
    by: dict[str, list[str]] = {"a": [], "b": []}

    def handler(name: str) -> Callable[[BusRecord], Awaitable[None]]:
        async def handle(r: BusRecord) -> None:
            await asyncio.sleep(0.4)  # in flight when the rebalance comes
            handled.append(r.value.decode())
            by[name].append(r.value.decode())

        return handle

    n = 90
    for i in range(n):
        await first.publish(topics.INBOUND, f"k{i}", f"r{i}".encode())
    tasks = [
        asyncio.create_task(first.consume([topics.INBOUND], group, handler("a"), concurrency=4))
    ]
    try:
        await until_count(handled, 8)
        tasks.append(
            asyncio.create_task(
                second.consume([topics.INBOUND], group, handler("b"), concurrency=4)
            )
        )
        await until_count(handled, n, timeout=120)
        await asyncio.sleep(1)
    finally:
        await first.stop()
        await second.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
    twice = [v for v, c in Counter(handled).items() if c > 1]
    assert twice == [] and len(handled) == n
    assert by["a"] and by["b"]  # the second consumer did take partitions over
    ends = await committed(servers, group)
    assert sum(ends.values()) == n  # every partition committed to its end


async def test_a_full_window_pauses_its_partition(kafka_broker: KafkaBroker) -> None:
    """Behind a record that does not finish, its partition is paused once the window (plus
    the fetch in hand) is started; it resumes when the record is handled."""
    tag = uuid.uuid4().hex[:8]
    servers = kafka_broker.bootstrap_servers
    bus = KafkaBus(servers, "t", create_topics=topics.ALL, topic_prefix=f"win-{tag}.")
    bus.pipeline_window = 3
    await bus.start()
    stuck, started = asyncio.Event(), asyncio.Event()
    got: list[str] = []

    async def handler(r: BusRecord) -> None:
        if r.value == b"stuck":
            started.set()
            await stuck.wait()
        got.append(r.value.decode())

    await bus.publish(topics.INBOUND, "k", b"stuck")
    task = asyncio.create_task(bus.consume([topics.INBOUND], f"g-{tag}", handler, concurrency=8))
    try:
        await asyncio.wait_for(started.wait(), 60)
        n = 250  # more than a fetch (100) plus the window
        for i in range(n):
            await bus.publish(topics.INBOUND, "k", f"r{i}".encode())
        await asyncio.sleep(3)
        held = len(got)
        assert 0 < held <= 3 + 100  # the window and at most one fetch; not all 250
        stuck.set()
        await until_count(got, n + 1)
        assert sorted(got) == sorted(["stuck"] + [f"r{i}" for i in range(n)])
    finally:
        stuck.set()
        await bus.stop()
        await asyncio.gather(task, return_exceptions=True)
