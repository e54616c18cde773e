"""Mailbox events on the bus, published after the change is durable in the repository.

A failed publish is logged and counted, never returned to the caller: the store is the source
of truth, and imap-gw sessions resynchronise from MODSEQ rather than trust the event stream.

So the call that made the change does not wait for its event either: events go into a queue
that one task publishes from, in the order they were made (one user's events stay in order,
as the bus keys them by user). A STORE or APPEND then costs one durable write, not two (the embedded bus is an
fsync'ed SQLite file, Kafka an acknowledged produce); ADR 0025. The queue is bounded (a full
queue makes the callers wait) and drained when the store stops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from postmesh.api.events.v1 import events_pb2
from postmesh.common import topics
from postmesh.common.bus import Bus
from postmesh.common.logging import get_logger, kv
from postmesh.store.metrics import EVENT_PUBLISH_FAILURES

log = get_logger(__name__)
Kind = events_pb2.MailboxEvent.Kind


class EventPublisher:
    def __init__(self, bus: Bus | None, timeout: float = 5.0, queue_size: int = 10_000) -> None:
        self.bus = bus
        self.timeout = timeout
        self._queue_size = queue_size
        self._queue: asyncio.Queue[tuple[str, str, Kind.ValueType, bytes]] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def publish(
        self,
        user: str,
        mailbox: str,
        kind: Kind.ValueType,
        uids: Iterable[int] = (),
        modseq: int = 0,
        flags: Iterable[str] = (),
        new_name: str = "",
    ) -> None:
        """Queue the event for publishing, in the order events are queued."""
        event = events_pb2.MailboxEvent(
            new_name=new_name,
            user=user,
            mailbox=mailbox,
            kind=kind,
            uids=list(uids),
            modseq=modseq,
            flags=list(flags),
            at_ms=int(time.time() * 1000),
        )
        if self.bus is None:
            return
        if self._queue is None:
            # Made on first use: the queue and its task belong to the running event loop.
            self._queue = asyncio.Queue(self._queue_size)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(self._queue))
        await self._queue.put((user, mailbox, kind, event.SerializeToString()))

    async def _run(self, queue: asyncio.Queue[tuple[str, str, Kind.ValueType, bytes]]) -> None:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            try:
                # Everything queued meanwhile at once, so the bus can batch it (one group
                # commit, one Kafka produce request) as it did when each call published its
                # own. Started in queue order: each publish takes its place in the bus before
                # it first waits. A failure is logged by _send and never stops this task.
                await asyncio.gather(*(self._send(*item) for item in batch), return_exceptions=True)
            finally:
                for _ in batch:
                    queue.task_done()

    async def _send(self, user: str, mailbox: str, kind: Kind.ValueType, value: bytes) -> None:
        assert self.bus is not None
        try:
            # Key = user: one user's events stay in order on one partition.
            # Not wait_for: on Python 3.11 it can drop the cancellation close() sends the
            # worker when it meets the publish's completion, and close() would wait forever.
            async with asyncio.timeout(self.timeout):
                await self.bus.publish(topics.MAILBOX_EVENTS, user, value)
        except asyncio.CancelledError:
            raise
        except Exception:
            EVENT_PUBLISH_FAILURES.inc()
            log.exception(
                "mailbox event not published",
                extra=kv(user=user, mailbox=mailbox, kind=Kind.Name(kind)),
            )

    async def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued (for at most ``timeout`` seconds), then stop."""
        queue, worker = self._queue, self._worker
        self._queue = self._worker = None
        if queue is None or worker is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await queue.join()
        except TimeoutError:
            log.warning("mailbox events dropped at shutdown", extra=kv(queued=queue.qsize()))
        worker.cancel()
        try:
            await worker
        except asyncio.CancelledError:
            pass
