"""Apache Kafka bus (aiokafka): idempotent producer (acks=all), manual commits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from postmesh.common.bus.base import (
    CONSUMER_LAG,
    Bus,
    BusRecord,
    Handler,
    Pipeline,
    handle_in_order,
)
from postmesh.common.bus.kafka_security import KafkaSecurity
from postmesh.common.logging import get_logger
from postmesh.common.service import StartupError

log = get_logger(__name__)

# Records stay small: large bodies go to the store first (claim check, see smtp-edge).
MAX_RECORD_BYTES = 1024 * 1024


class _Recorder(logging.Handler):
    """Keeps aiokafka's warnings while the bus starts: its bootstrap logs the broker's reason
    (SaslAuthenticationFailed, a TLS error) and raises only "Unable to bootstrap"."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _aiokafka_warnings() -> Iterator[_Recorder]:
    recorder = _Recorder()
    logger = logging.getLogger("aiokafka")
    logger.addHandler(recorder)
    try:
        yield recorder
    finally:
        logger.removeHandler(recorder)


class KafkaBus(Bus):
    def __init__(
        self,
        bootstrap_servers: str,
        client_id: str,
        *,
        create_topics: Sequence[str] = (),
        security: KafkaSecurity | None = None,
        topic_prefix: str = "",
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.security = security or KafkaSecurity()
        # Callers name topics logically (postmesh.common.topics); on the brokers each carries
        # the installation's prefix, and records come back under their logical name.
        self.topic_prefix = topic_prefix
        self._create_topics = [self.physical(t) for t in create_topics]
        self._producer: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        with _aiokafka_warnings() as warnings:
            await self._start(warnings)

    async def _start(self, warnings: _Recorder) -> None:
        try:
            if self._create_topics:
                await self._ensure_topics(self._create_topics)
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap_servers,
                client_id=self.client_id,
                enable_idempotence=True,  # implies acks=all: the 250 waits for every ISR
                acks="all",
                linger_ms=2,
                max_request_size=MAX_RECORD_BYTES + 64 * 1024,
                **self.security.client_kwargs(),
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
        except (KafkaError, OSError, TimeoutError) as exc:
            # aiokafka logs the broker's reason (refused TLS, failed SASL) on the line before;
            # this one says which bus and which settings, and the service exits without a
            # traceback (postmesh.common.service.main).
            reason = str(exc) if str(exc).startswith(type(exc).__name__) else repr(exc)
            if warnings.messages:
                reason = f"{warnings.messages[-1]} ({reason})"
            raise StartupError(
                f"the Kafka bus at {self.bootstrap_servers} refused or failed the connection "
                f"({self.security.describe()}): {reason}; check "
                "POSTMESH_KAFKA_BOOTSTRAP_SERVERS, POSTMESH_KAFKA_SECURITY_PROTOCOL, "
                "POSTMESH_KAFKA_SASL_MECHANISM, POSTMESH_KAFKA_USERNAME and the password"
            ) from exc
        self._producer = producer
        log.info(
            "kafka bus connected",
            extra={
                "fields": {
                    "bootstrap_servers": self.bootstrap_servers,
                    "security": self.security.describe(),
                }
            },
        )

    async def _ensure_topics(self, topics: Sequence[str], partitions: int = 3) -> None:
        """Development convenience; in production the chart's topic resources create them."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, **self.security.client_kwargs()
        )
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t not in existing]
            if missing:
                try:
                    await admin.create_topics(
                        [
                            NewTopic(t, num_partitions=partitions, replication_factor=1)
                            for t in missing
                        ]
                    )
                except TopicAlreadyExistsError:
                    pass
        finally:
            await admin.close()

    def physical(self, topic: str) -> str:
        """The broker's name of a logical topic."""
        return self.topic_prefix + topic

    def _logical(self, topic: str) -> str:
        return topic[len(self.topic_prefix) :]

    def _record(
        self, r: ConsumerRecord[bytes, bytes], new_from: dict[TopicPartition, int] | None = None
    ) -> BusRecord:
        """A consumed record, under its logical topic name. ``new_from``: per partition, the
        first offset this consumer knows no one of its group was handed before."""
        start = (new_from or {}).get(TopicPartition(r.topic, r.partition))
        return BusRecord(
            self._logical(r.topic), (r.key or b"").decode(), r.value or b"", r.partition,
            r.offset, maybe_seen=start is None or r.offset < start,
        )  # fmt: skip

    async def stop(self) -> None:
        self._stopping.set()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        if self._producer is None:
            raise RuntimeError("KafkaBus.publish before start")
        await self._producer.send_and_wait(self.physical(topic), value, key=key.encode())

    async def consume(
        self,
        topics: Sequence[str],
        group: str | None,
        handler: Handler,
        *,
        from_latest: bool = False,
        concurrency: int = 1,
    ) -> None:
        names = [self.physical(t) for t in topics]
        consumer = AIOKafkaConsumer(
            *([] if group is not None else names),
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="latest" if from_latest else "earliest",
            max_partition_fetch_bytes=MAX_RECORD_BYTES + 64 * 1024,
            **self.security.client_kwargs(),
        )
        assigned = _NewFrom(consumer)
        if group is not None:
            consumer.subscribe(names, listener=assigned)
        await consumer.start()
        try:
            if concurrency > 1:
                await self._pipelined(consumer, group, handler, concurrency, assigned)
            else:
                await self._in_order(consumer, group, handler, assigned)
        finally:
            await consumer.stop()

    async def _in_order(
        self,
        consumer: AIOKafkaConsumer,
        group: str | None,
        handler: Handler,
        assigned: _NewFrom,
    ) -> None:
        """Ordered streams: each partition's batch in order, committed after it."""
        while not self._stopping.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=100)
            for tp, rs in batches.items():
                recs = [self._record(r, assigned.new_from) for r in rs]
                if not recs:
                    continue
                if not await handle_in_order(handler, recs, self._stopping):
                    return
                if group is not None:
                    await consumer.commit({tp: recs[-1].offset + 1})
            await self._report_lag(consumer, group, None)

    async def _pipelined(
        self,
        consumer: AIOKafkaConsumer,
        group: str | None,
        handler: Handler,
        concurrency: int,
        assigned: _NewFrom,
    ) -> None:
        """Independent records (ADR 66): started as fetched while slots are free; each
        partition committed up to its contiguous prefix of handled records."""

        async def commit(points: dict[TopicPartition, int]) -> None:
            if group is None:
                return
            # A partition that left meanwhile was committed by its revocation.
            owned = consumer.assignment()
            offsets = {tp: off + 1 for tp, off in points.items() if tp in owned}
            if offsets:
                await consumer.commit(offsets)

        pipe: Pipeline[TopicPartition] = Pipeline(
            handler, self._stopping, concurrency, commit, window=self.pipeline_window
        )
        assigned.release = pipe.release
        lag_reported = 0.0
        stopped = False
        try:
            while await pipe.hungry():
                self._pause_full(consumer, pipe, assigned.reading)
                batches = await consumer.getmany(timeout_ms=500, max_records=100)
                for tp, rs in batches.items():
                    # Records of a partition being revoked (their fetch raced the revocation)
                    # are not started: the new owner reads them from the committed position.
                    if rs and (group is None or tp in assigned.owned):
                        pipe.feed(tp, [self._record(r, assigned.new_from) for r in rs])
                now = asyncio.get_running_loop().time()
                if now - lag_reported >= 1.0:
                    await self._report_lag(consumer, group, pipe)
                    lag_reported = now
            stopped = True
        finally:
            assigned.release = None
            # Cancelled or failed: the records in hand are cancelled, not awaited.
            await pipe.close(cancel=not stopped)

    @staticmethod
    def _pause_full(
        consumer: AIOKafkaConsumer,
        pipe: Pipeline[TopicPartition],
        held: Collection[TopicPartition],
    ) -> None:
        """A partition whose uncommitted window is full (a record keeps failing) is not
        fetched from until the record is handled; the others go on. ``held``: partitions the
        rebalance listener keeps paused, left to it."""
        paused = consumer.paused()
        for tp in consumer.assignment():
            if tp in held:
                continue
            if pipe.full(tp):
                if tp not in paused:
                    consumer.pause(tp)
            elif tp in paused:
                consumer.resume(tp)

    @staticmethod
    async def _report_lag(
        consumer: AIOKafkaConsumer, group: str | None, pipe: Pipeline[TopicPartition] | None
    ) -> None:
        """Records published and not yet handled: from the oldest one in hand, or else the
        fetch position."""
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            oldest = pipe.first_pending(tp) if pipe is not None else None
            handled = oldest if oldest is not None else await consumer.position(tp)
            CONSUMER_LAG.labels(group or "", tp.topic, str(tp.partition)).set(
                max(0, highwater - handled)
            )

    async def ready(self) -> bool:
        if self._producer is None:
            return False
        try:
            async with asyncio.timeout(3):
                await self._producer.client.fetch_all_metadata()
        except (KafkaError, TimeoutError):
            return False
        return True


class _NewFrom(ConsumerRebalanceListener):  # type: ignore[misc]
    """Per partition assigned to this consumer, the end offset at the assignment: a record
    below it may have been handed to the group before (to the replica that had the partition,
    or to this one before a rebalance) without its offset being committed; one at or above it
    was published while this consumer held the partition, so only this consumer has seen it
    (ADR 58). A partition whose end offset could not be read has no entry: all maybe seen."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.new_from: dict[TopicPartition, int] = {}
        # The partitions held between an assignment and its revocation.
        self.owned: set[TopicPartition] = set()
        # Assigned partitions not fetched from until their end offsets are read.
        self.reading: set[TopicPartition] = set()
        # A pipelined consumer's hand-over (ADR 66): records not started are dropped, the
        # in-flight ones finish and their prefix is committed before the partitions go, so
        # the new owner does not redo handled records. aiokafka awaits this callback before
        # rejoining the group.
        self.release: Callable[[Collection[TopicPartition]], Awaitable[None]] | None = None

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self.owned.difference_update(revoked)
        for tp in revoked:
            self.new_from.pop(tp, None)
        if self.release is not None and revoked:
            await self.release(revoked)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self.owned.update(assigned)
        for tp in assigned:
            self.new_from.pop(tp, None)
        if not assigned:
            return
        # aiokafka sets the assignment before it calls this listener and goes on fetching
        # while the end offsets are read (a new partition's leader may take a while). Held
        # paused meanwhile, no record is handed out before its partition's boundary is known,
        # and the boundary is the end at the assignment, not a later one.
        held = set(assigned)
        self.reading |= held
        self.consumer.pause(*held)
        try:
            ends = await self.consumer.end_offsets(list(assigned))
        except KafkaError as e:
            log.warning(
                "end offsets unknown; records taken as maybe seen",
                extra={"fields": {"error": str(e)}},
            )
            return
        finally:
            self.reading -= held
            self.consumer.resume(*(tp for tp in held if tp in self.consumer.assignment()))
        self.new_from.update(ends)
