"""Smoke tests of the real-infrastructure fixtures (Kafka KRaft, FerretDB) and fetch scripts."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from tests.integration.infra import POSTMESH_TOPICS, FerretDB, KafkaBroker, free_port
from tests.integration.infra._process import SCRIPTS_DIR, InfraError


@pytest.mark.asyncio
async def test_kafka_idempotent_produce_and_consume(kafka_broker: KafkaBroker) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    assert kafka_broker.bootstrap_servers.startswith("127.0.0.1:")
    topic = "postmesh.inbound"
    key = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap_servers, enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b"hello postmesh", key=key)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_broker.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.key, record.value, record.offset) == (key, b"hello postmesh", meta.offset)


@pytest.mark.asyncio
async def test_kafka_postmesh_topics_exist(kafka_broker: KafkaBroker) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics(list(POSTMESH_TOPICS))
    finally:
        await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in described} == dict(POSTMESH_TOPICS)


@pytest.mark.asyncio
async def test_ferretdb_insert_find_and_unique_index(ferretdb: FerretDB) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(ferretdb.url)
    try:
        coll = client[f"smoke_{uuid.uuid4().hex[:8]}"]["mailboxes"]
        await coll.create_index([("user", ASCENDING), ("name", ASCENDING)], unique=True)
        await coll.insert_one({"user": "alice", "name": "INBOX", "uidnext": 1})
        doc = await coll.find_one_and_update(
            {"user": "alice", "name": "INBOX"}, {"$inc": {"uidnext": 1}}, return_document=True
        )
        assert doc is not None and doc["uidnext"] == 2
        with pytest.raises(DuplicateKeyError):
            await coll.insert_one({"user": "alice", "name": "INBOX", "uidnext": 1})
        assert await coll.count_documents({"user": "alice"}) == 1
    finally:
        await client.close()


def test_ferretdb_stop_ends_its_process_and_removes_its_dir() -> None:
    server = FerretDB().start()
    pid, tmp = server.pid, server.log_path.parent
    assert pid is not None and tmp.is_dir()
    server.stop()
    assert not tmp.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_kafka_without_jars_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match=r"no kafka_2\.13 jar"):
        KafkaBroker(libs_dir=tmp_path).start()


def test_free_port_is_bindable_on_loopback() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize(
    ("script", "tool"), [("fetch-kafka.sh", "java"), ("fetch-ferretdb.sh", "go")]
)
def test_fetch_script_without_toolchain_fails_clearly(
    tmp_path: Path, script: str, tool: str
) -> None:
    # An empty cache and a PATH with no toolchain: the script must say what is missing.
    env = {"POSTMESH_CACHE": str(tmp_path / "cache"), "PATH": str(tmp_path), "HOME": str(tmp_path)}
    done = subprocess.run(
        ["/bin/bash", str(SCRIPTS_DIR / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert f"'{tool}' not found" in done.stderr


@pytest.mark.asyncio
async def test_kafka_topic_prefix_keeps_installations_apart(kafka_broker: KafkaBroker) -> None:
    """Two buses with different POSTMESH_KAFKA_TOPIC_PREFIX on one broker: each creates and
    uses its own topics, and its consumers see its records only, under the logical name."""
    import asyncio

    from postmesh.common import topics
    from postmesh.common.bus.base import BusRecord
    from postmesh.common.bus.kafka import KafkaBus

    tag = uuid.uuid4().hex[:8]
    buses = {p: KafkaBus(kafka_broker.bootstrap_servers, "t", create_topics=topics.ALL,
                         topic_prefix=f"{p}-{tag}.") for p in ("a", "b")}  # fmt: skip
    seen: dict[str, list[BusRecord]] = {"a": [], "b": []}
    got = {p: asyncio.Event() for p in buses}

    def handler(p: str) -> Callable[[BusRecord], Awaitable[None]]:
        async def handle(record: BusRecord) -> None:
            seen[p].append(record)
            if record.key == f"{p}-marker":
                got[p].set()

        return handle

    for bus in buses.values():
        await bus.start()
    tasks = [
        asyncio.create_task(bus.consume([topics.INBOUND], f"g-{p}-{tag}", handler(p)))
        for p, bus in buses.items()
    ]
    try:
        for p, bus in buses.items():
            await bus.publish(topics.INBOUND, f"{p}-marker", p.encode())
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in got.values())), 60)
    finally:
        for bus in buses.values():
            await bus.stop()
        await asyncio.gather(*tasks, return_exceptions=True)

    for p in buses:
        assert [(r.topic, r.key, r.value) for r in seen[p]] == [
            ("postmesh.inbound", f"{p}-marker", p.encode())
        ]
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    await admin.start()
    try:
        names = set(await admin.list_topics())
    finally:
        await admin.close()
    assert {f"a-{tag}.{t}" for t in topics.ALL} | {f"b-{tag}.{t}" for t in topics.ALL} <= names


@pytest.mark.asyncio
async def test_kafka_marks_records_published_before_the_assignment_maybe_seen(
    kafka_broker: KafkaBroker,
) -> None:
    """ADR 58: a group consumer takes a record that was in the partition when it was assigned
    as possibly handled before (maybe_seen), one published while it holds the partition as
    new; a consumer without a group takes every record as possibly seen."""
    import asyncio

    from postmesh.common import topics
    from postmesh.common.bus.base import BusRecord
    from postmesh.common.bus.kafka import KafkaBus

    tag = uuid.uuid4().hex[:8]
    bus = KafkaBus(kafka_broker.bootstrap_servers, "t", create_topics=topics.ALL,
                   topic_prefix=f"seen-{tag}.")  # fmt: skip
    await bus.start()
    grouped: list[BusRecord] = []
    ungrouped: list[BusRecord] = []

    async def waiting(records: list[BusRecord], n: int) -> None:
        while len(records) < n:  # noqa: ASYNC110 (polling the handler's list)
            await asyncio.sleep(0.05)

    async def keep(into: list[BusRecord], r: BusRecord) -> None:
        into.append(r)

    tasks: list[asyncio.Task[None]] = []
    try:
        await bus.publish(topics.INBOUND, "old", b"1")
        tasks = [
            asyncio.create_task(
                bus.consume([topics.INBOUND], f"g-{tag}", lambda r: keep(grouped, r),
                            concurrency=4)
            ),
            asyncio.create_task(bus.consume([topics.INBOUND], None, lambda r: keep(ungrouped, r))),
        ]  # fmt: skip
        await asyncio.wait_for(waiting(grouped, 1), 60)
        await bus.publish(topics.INBOUND, "new", b"2")
        await asyncio.wait_for(asyncio.gather(waiting(grouped, 2), waiting(ungrouped, 2)), 60)
    finally:
        await bus.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert [(r.key, r.maybe_seen) for r in grouped] == [("old", True), ("new", False)]
    # The two keys may hash to different partitions, read in either order.
    assert sorted((r.key, r.maybe_seen) for r in ungrouped) == [("new", True), ("old", True)]
