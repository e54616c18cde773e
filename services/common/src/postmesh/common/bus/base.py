"""What every bus implementation offers: durable publish and at-least-once consumption."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from postmesh.common.logging import get_logger

log = get_logger(__name__)

HANDLER_FAILURES = Counter(
    "postmesh_bus_handler_failures_total",
    "Bus records whose handler raised and will be retried.",
    ["topic"],
)


CONSUMER_LAG = Gauge(
    "postmesh_bus_consumer_lag_records",
    "Records published but not yet handled by this consumer, per topic and partition.",
    ["group", "topic", "partition"],
)


@dataclass(frozen=True, slots=True)
class BusRecord:
    topic: str
    key: str
    value: bytes
    partition: int
    offset: int
    # The record may have been handed to this consumer group before (it comes again after a
    # restart, a handler failure or a partition move). False only where the bus knows it is
    # new: the embedded bus, for records published after the consumer started; Kafka, for
    # records at or above the partition's end offset when it was assigned to this consumer
    # (a group consumer only). Delivery attempts a new record's remote recipients before
    # queueing them (ADR 58), a possibly seen one's only through the queue.
    maybe_seen: bool = True


Handler = Callable[[BusRecord], Awaitable[None]]


class Bus(ABC):
    """``publish`` returns only once the record is durable (Kafka: acks=all from an idempotent
    producer; SQLite: committed). ``consume`` hands each record to ``handler`` and commits its
    offset only after the handler returned, so a crash redelivers (at-least-once)."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def publish(self, topic: str, key: str, value: bytes) -> None: ...

    @abstractmethod
    async def consume(
        self,
        topics: Sequence[str],
        group: str | None,
        handler: Handler,
        *,
        from_latest: bool = False,
        concurrency: int = 1,
    ) -> None:
        """Run until cancelled. ``group=None``: no committed offsets (every reader sees all).

        ``concurrency`` > 1 handles up to that many records of a fetched batch at once and
        commits after the whole batch: for handlers whose records are independent (delivery),
        never for ordered streams (mailbox events)."""

    @abstractmethod
    async def ready(self) -> bool: ...


async def handle_until_done(handler: Handler, record: BusRecord, stopping: asyncio.Event) -> bool:
    """Call ``handler`` until it succeeds; back off between failures. A record is never skipped:
    the handler owns turning permanent failures into bounces. Returns False if stopping."""
    delay = 0.5
    while True:
        try:
            await handler(record)
            return True
        except asyncio.CancelledError:
            raise
        except Exception:
            HANDLER_FAILURES.labels(record.topic).inc()
            log.exception(
                "bus handler failed; will retry",
                extra={"fields": {"topic": record.topic, "key": record.key, "retry_in": delay}},
            )
        if stopping.is_set():
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


async def handle_batch(
    handler: Handler,
    records: Sequence[BusRecord],
    stopping: asyncio.Event,
    concurrency: int,
    slots: asyncio.Semaphore | None = None,
) -> bool:
    """Handle ``records`` (each until done); True when all were handled, False if stopping.
    ``slots``: shared with the batches of other partitions handled at the same time."""
    if concurrency <= 1:
        for rec in records:
            if not await handle_until_done(handler, rec, stopping):
                return False
        return True
    slots = slots or asyncio.Semaphore(concurrency)

    async def one(rec: BusRecord) -> bool:
        async with slots:
            return await handle_until_done(handler, rec, stopping)

    return all(await asyncio.gather(*(one(r) for r in records)))
