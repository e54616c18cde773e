"""What every bus implementation offers: durable publish and at-least-once consumption."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from prometheus_client import Counter, Gauge

from postmesh.common.logging import get_logger, kv

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


# Pipelined consumption (ADR 66). Per partition, at most WINDOW records fetched and not yet
# in the committed prefix (plus one fetch): a record that keeps failing holds its partition's
# commit point, and this bounds both what waits behind it and what a crash redelivers.
WINDOW = 512
# Finished records are committed together: at most COMMIT_INTERVAL after the first of them,
# at once when COMMIT_EVERY are waiting, and always at stop and at a partition's revocation.
COMMIT_INTERVAL = 0.02
COMMIT_EVERY = 100
# A revoked partition's in-flight records get this long to finish before they are cancelled
# (and redone by the new owner): the whole group's rebalance waits for the revocation.
REVOKE_WAIT = 10.0


class Bus(ABC):
    """``publish`` returns only once the record is durable (Kafka: acks=all from an idempotent
    producer; SQLite: committed). ``consume`` hands each record to ``handler`` and commits its
    offset only after the handler returned, so a crash redelivers (at-least-once)."""

    # The pipelined consumers' window per partition (WINDOW); a test may set a small one.
    pipeline_window: int = WINDOW

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

        ``concurrency`` 1 handles a fetched batch in order and commits after it (ordered
        streams: mailbox events). ``concurrency`` > 1, for handlers whose records are
        independent (delivery), pipelines (:class:`Pipeline`, ADR 66): up to that many records
        in flight, a new one started as soon as one finishes, and each partition committed up
        to its contiguous prefix of finished records."""

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


async def handle_in_order(
    handler: Handler, records: Sequence[BusRecord], stopping: asyncio.Event
) -> bool:
    """Handle ``records`` one after the other (each until done), for ordered streams; True when
    all were handled, False if stopping."""
    for rec in records:
        if not await handle_until_done(handler, rec, stopping):
            return False
    return True


P = TypeVar("P", bound=Hashable)


@dataclass(slots=True)
class _Partition:
    pending: deque[int] = field(default_factory=deque)  # started, not in the prefix: in order
    finished: set[int] = field(default_factory=set)  # finished out of order
    point: int | None = None  # last offset of the finished prefix, not yet taken


class CommitTracker(Generic[P]):
    """Per partition, the offsets started and not yet committed, in fetch order, and the end
    of the contiguous prefix of finished ones: the only position that may be committed, since
    everything before it was handled (at-least-once). Offsets need not be consecutive (the
    embedded bus's sequence numbers are shared between topics): order is the fetch order."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self._parts: dict[P, _Partition] = {}

    def add(self, part: P, offset: int) -> None:
        self._parts.setdefault(part, _Partition()).pending.append(offset)

    def finish(self, part: P, offset: int) -> bool:
        """Marks a started offset handled; True if its partition's commit point moved."""
        p = self._parts.get(part)
        if p is None:  # dropped (revoked) meanwhile
            return False
        p.finished.add(offset)
        moved = False
        while p.pending and p.pending[0] in p.finished:
            p.finished.discard(p.pending[0])
            p.point = p.pending.popleft()
            moved = True
        return moved

    def full(self, part: P) -> bool:
        """The partition may not be fetched from until its oldest pending record finishes."""
        p = self._parts.get(part)
        return p is not None and len(p.pending) >= self.window

    def pending(self, part: P) -> int:
        p = self._parts.get(part)
        return 0 if p is None else len(p.pending)

    def first_pending(self, part: P) -> int | None:
        """The oldest started offset not yet handled (what a restart would begin with)."""
        p = self._parts.get(part)
        return p.pending[0] if p is not None and p.pending else None

    def take(self, parts: Collection[P] | None = None) -> dict[P, int]:
        """The commit points that moved since the last take (of ``parts``, or all)."""
        points: dict[P, int] = {}
        for part, p in self._parts.items():
            if p.point is not None and (parts is None or part in parts):
                points[part] = p.point
                p.point = None
        return points

    def restore(self, points: dict[P, int]) -> None:
        """Puts back points whose commit failed, unless a later one was found meanwhile."""
        for part, offset in points.items():
            p = self._parts.get(part)
            if p is not None and p.point is None:
                p.point = offset

    def drop(self, parts: Collection[P]) -> None:
        for part in parts:
            self._parts.pop(part, None)


Commit = Callable[[dict[P, int]], Awaitable[None]]


class Pipeline(Generic[P]):
    """Handles independent records as they are fetched (ADR 66): up to ``concurrency`` at
    once, each until done (:func:`handle_until_done`); a new one starts as soon as one
    finishes, instead of the batch waiting for its slowest record. ``commit`` is called, in
    the background and batched, with each partition's last offset of its contiguous prefix of
    finished records (the bus turns it into its own position). The bus fetches when
    :meth:`hungry` returns, skips (pauses) partitions that are :meth:`full`, hands records to
    :meth:`feed`, calls :meth:`release` for revoked partitions and :meth:`close` at the end."""

    def __init__(
        self,
        handler: Handler,
        stopping: asyncio.Event,
        concurrency: int,
        commit: Commit[P],
        *,
        window: int = WINDOW,
        commit_interval: float = COMMIT_INTERVAL,
    ) -> None:
        self.handler = handler
        self.stopping = stopping
        self.concurrency = concurrency
        self.tracker: CommitTracker[P] = CommitTracker(window)
        self._commit_fn = commit
        self._commit_interval = commit_interval
        self._queue: deque[tuple[P, BusRecord]] = deque()  # fetched, not started
        self._running: dict[asyncio.Task[None], P] = {}
        self._wake = asyncio.Event()  # a slot freed
        self._due = asyncio.Event()  # a commit point moved
        self._finished_since_commit = 0
        self._commit_lock = asyncio.Lock()
        self._committer = asyncio.create_task(self._commit_loop())

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def full(self, part: P) -> bool:
        return self.tracker.full(part)

    def first_pending(self, part: P) -> int | None:
        return self.tracker.first_pending(part)

    async def hungry(self) -> bool:
        """Waits until a slot is free and nothing fetched waits for one; False if stopping."""
        while not self.stopping.is_set():
            if self._queue or len(self._running) >= self.concurrency:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    # The bus's stop sets ``stopping`` without waking us: look again soon.
                    await asyncio.wait_for(self._wake.wait(), 0.5)
                continue
            return True
        return False

    def feed(self, part: P, records: Sequence[BusRecord]) -> None:
        """Fetched records of ``part``, in order: started while slots are free, queued else."""
        self._queue.extend((part, r) for r in records)
        self._fill()

    def _fill(self) -> None:
        while self._queue and len(self._running) < self.concurrency:
            part, rec = self._queue.popleft()
            self.tracker.add(part, rec.offset)
            task = asyncio.create_task(self._run(part, rec))
            self._running[task] = part
            task.add_done_callback(self._done)

    async def _run(self, part: P, rec: BusRecord) -> None:
        # A record not handled (the consumer stops while it fails) stays pending: it holds
        # its partition's commit point and comes again after a restart.
        if await handle_until_done(self.handler, rec, self.stopping):
            if self.tracker.finish(part, rec.offset):
                self._due.set()
            self._finished_since_commit += 1

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("bus handler task failed", exc_info=task.exception())
        self._fill()
        self._wake.set()

    async def _commit_loop(self) -> None:
        while True:
            await self._due.wait()
            if self._finished_since_commit < COMMIT_EVERY:
                await asyncio.sleep(self._commit_interval)
            self._due.clear()
            self._finished_since_commit = 0
            if not await self.commit():
                await asyncio.sleep(1.0)  # the bus is unreachable: try again later
                self._due.set()

    async def commit(self, parts: Collection[P] | None = None) -> bool:
        """Commits the moved points (of ``parts``, or all) now; False if the commit failed
        (the points are kept for the next one)."""
        async with self._commit_lock:
            points = self.tracker.take(parts)
            if not points:
                return True
            try:
                await self._commit_fn(points)
            except asyncio.CancelledError:
                self.tracker.restore(points)
                raise
            except Exception:
                self.tracker.restore(points)
                log.warning("bus offset commit failed; records after it may come again",
                            exc_info=True)  # fmt: skip
                return False
            return True

    async def _settle(self, tasks: Collection[asyncio.Task[None]], wait: float | None) -> None:
        """Lets ``tasks`` finish for up to ``wait`` seconds (None: as long as they take; 0:
        cancels them at once)."""
        if not tasks:
            return
        if wait != 0:
            await asyncio.wait(tasks, timeout=wait)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def release(self, parts: Collection[P], wait: float = REVOKE_WAIT) -> None:
        """``parts`` go to another consumer: their queued records are dropped, the in-flight
        ones finish (up to ``wait`` seconds; then they are cancelled and the new owner redoes
        them), their prefix is committed and they are forgotten. The commit gets ``wait``
        seconds too: the whole group's rebalance waits for this, and a commit may wait for the
        periodic one, which the broker may hold until the rebalance is over. Past that, the
        new owner redoes the records after the last committed point (handling is
        idempotent)."""
        parts = set(parts)
        self._queue = deque((p, r) for p, r in self._queue if p not in parts)
        await self._settle([t for t, p in self._running.items() if p in parts], wait)
        try:
            async with asyncio.timeout(wait):
                await self.commit(parts)
        except TimeoutError:
            log.warning("bus offset commit at revocation timed out; the new owner may redo "
                        "records after the last committed point",
                        extra=kv(wait_seconds=wait))  # fmt: skip
        self.tracker.drop(parts)

    async def close(self, *, cancel: bool) -> None:
        """At the consumer's end: records not started are left for the next consumer, the
        in-flight ones finish (``cancel``: are cancelled), and the prefix is committed."""
        self._queue.clear()
        self._committer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._committer
        # Stopping: as the batch-synchronous consumer did, the records in hand finish (one
        # that fails returns at once, since ``stopping`` is set) and are committed.
        await self._settle(list(self._running), 0 if cancel else None)
        await self.commit()
