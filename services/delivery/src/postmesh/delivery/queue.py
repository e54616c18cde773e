"""Deferred-queue workers: lease due entries from the store's DeliveryQueueService and hand them
to an attempt function, without ever waiting for a whole batch, so one slow destination holds
only its own slots. A replica that dies loses its leases when they expire; another one takes
the entries then (the lease pattern of Stalwart, ZoneMTA and Mox)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import grpc
from prometheus_client import Gauge

from postmesh.api.store.v1 import queue_pb2, queue_pb2_grpc
from postmesh.common.logging import get_logger, kv, log_context

log = get_logger(__name__)

QUEUE_DEPTH = Gauge(
    "postmesh_delivery_deferred_queue_entries", "Deferred recipients in the store's queue."
)
QUEUE_DUE = Gauge("postmesh_delivery_deferred_queue_due_entries", "Deferred recipients due now.")
QUEUE_AGE = Gauge(
    "postmesh_delivery_deferred_queue_oldest_age_seconds", "Age of the oldest deferred entry."
)

# An attempt of entries leased to this replica, with the message content when it is at hand
# (the bus consumer's first attempt) and None when the attempt must read it from the store.
Attempt = Callable[[Sequence[queue_pb2.QueueEntry], bytes | None], Awaitable[None]]


# Claimed messages up to this size come with the claim (ClaimDueRequest.content_max_bytes):
# no GetBlob stream per message, the long way under load (workers full at Enqueue) and retries.
CLAIM_CONTENT_BYTES = 1024 * 1024


def worker_owner() -> str:
    """Unique per replica and process start (the lease holder's name)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def next_delay(steps: Sequence[float], attempts: int) -> float:
    """Back-off after ``attempts`` failed attempts: the schedule's step, the last repeating."""
    return steps[min(max(attempts, 1), len(steps)) - 1]


def group_entries(
    entries: Sequence[queue_pb2.QueueEntry],
) -> list[list[queue_pb2.QueueEntry]]:
    """Entries of one message to one domain go in one SMTP transaction."""
    groups: dict[tuple[str, str], list[queue_pb2.QueueEntry]] = {}
    for e in entries:
        domain = e.recipient.address.rpartition("@")[2].lower()
        groups.setdefault((e.queue_id, domain), []).append(e)
    return list(groups.values())


class QueueWorkers:
    def __init__(
        self,
        queue: queue_pb2_grpc.DeliveryQueueServiceStub,
        attempt: Attempt,
        *,
        owner: str,
        concurrency: int,
        claim_batch: int,
        lease_seconds: int,
        poll_seconds: float,
        deadline: float,
    ) -> None:
        self.queue = queue
        self.attempt = attempt
        self.owner = owner
        self.concurrency = concurrency
        self.claim_batch = claim_batch
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.deadline = deadline
        self._running: set[asyncio.Task[None]] = set()
        self._busy = 0  # entries being attempted
        self._wake = asyncio.Event()
        # Entries may be due now that the last claim did not see (enqueued unleased, or the
        # claim was full): a finished attempt's free slot is then worth a ClaimDue at once.
        # Otherwise it is not (the bench measured ~0.2 empty ClaimDue per message), and what
        # becomes due later (a retry's time, an expired lease) is found by the poll.
        self._due = True
        self._stats_at = 0.0
        self._started = False

    def wake(self) -> None:
        """Something was enqueued or retried now: claim without waiting for the poll."""
        self._due = True
        self._wake.set()

    def reserve(self, n: int) -> bool:
        """Take room for ``n`` entries the caller is about to enqueue born leased to this
        replica (``run_now(..., reserved=True)`` uses it, ``release`` returns what it did not).
        False while the workers are not running or are full: enqueue unleased, and the claim
        loop takes the entries when there is room (on any replica)."""
        if not self._started or self._busy + n > self.concurrency:
            return False
        self._busy += n
        return True

    def release(self, n: int) -> None:
        if n:
            self._busy -= n
            if self._due:
                self._wake.set()

    async def run(self) -> None:
        self._started = True
        try:
            while True:
                await self._refresh_stats()
                free = self.concurrency - self._busy
                want = claimed = 0
                if free > 0:
                    want = min(free, self.claim_batch)
                    self._due = False  # before the call: a wake() meanwhile sets it again
                    claimed = await self._claim(want)
                    if claimed == want:
                        self._due = True  # a full claim: more may be due
                if want == 0 or claimed < want:  # full, or nothing more is due
                    if self._due and self._busy < self.concurrency:
                        continue  # woken during the claim: it may not have seen the entry
                    self._wake.clear()
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation
                    # that meets the event's wake-up, and the service's stop would hang here.
                    try:
                        async with asyncio.timeout(self.poll_seconds):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
        finally:
            self._started = False
            for t in list(self._running):
                t.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _claim(self, n: int) -> int:
        try:
            resp = await self.queue.ClaimDue(
                queue_pb2.ClaimDueRequest(
                    owner=self.owner, max_items=n, lease_seconds=self.lease_seconds,
                    content_max_bytes=CLAIM_CONTENT_BYTES,
                ),
                timeout=self.deadline,
            )  # fmt: skip
        except grpc.aio.AioRpcError as e:
            # The store is down: the entries are safe in it; claim again after the poll.
            log.warning("could not claim queue entries", extra=kv(code=e.code().name))
            return 0
        for group in group_entries(resp.entries):
            # None (not in the answer: too large, or an older store): the attempt reads it.
            self.run_now(group, resp.contents.get(group[0].message.blob_id))
        return len(resp.entries)

    def run_now(
        self,
        entries: Sequence[queue_pb2.QueueEntry],
        content: bytes | None = None,
        *,
        reserved: bool = False,
    ) -> None:
        """Attempt entries leased to this replica (claimed due, born leased by the bus
        consumer, or by an operator's retry); ``reserved``: their room was taken by reserve."""
        for group in group_entries(entries):
            if not reserved:
                self._busy += len(group)
            self._start(group, self.attempt(group, content))

    def adopt(self, group: Sequence[queue_pb2.QueueEntry], work: Awaitable[None]) -> None:
        """Entries of one group leased to this replica whose attempt is already under way
        (``work`` finishes it: the bus consumer's first attempt that outlasted its wait, ADR
        58); their room was taken by reserve. Their leases are kept while it runs."""
        self._start(list(group), work)

    def _start(self, group: list[queue_pb2.QueueEntry], work: Awaitable[None]) -> None:
        task = asyncio.create_task(self._one(group, work))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _one(self, group: list[queue_pb2.QueueEntry], work: Awaitable[None]) -> None:
        keeper = asyncio.create_task(self._keep_leased(group))
        try:
            with log_context(queue_id=group[0].queue_id):
                await work
        except asyncio.CancelledError:
            raise
        except Exception:
            # Leases expire: the entries come back after lease_seconds.
            log.exception("deferred attempt failed", extra=kv(entries=len(group)))
        finally:
            keeper.cancel()
            self._busy -= len(group)
            if self._due:
                self._wake.set()

    async def _keep_leased(self, group: list[queue_pb2.QueueEntry]) -> None:
        """Renew the leases while an attempt runs (slow MX hosts and their timeouts may take
        longer than one lease), so no other replica attempts the same entries meanwhile."""
        while True:
            await asyncio.sleep(max(1.0, self.lease_seconds / 3))
            for e in group:
                try:
                    await self.queue.Claim(
                        queue_pb2.ClaimEntryRequest(
                            queue_id=e.queue_id, recipient=e.recipient.address,
                            owner=self.owner, lease_seconds=self.lease_seconds,
                        ),
                        timeout=self.deadline,
                    )  # fmt: skip
                except grpc.aio.AioRpcError as err:
                    # Gone (done meanwhile) or taken (our lease had run out): nothing to keep.
                    log.warning(
                        "lease not renewed",
                        extra=kv(rcpt=e.recipient.address, code=err.code().name),
                    )

    async def _refresh_stats(self) -> None:
        now = time.monotonic()
        if now - self._stats_at < 15:
            return
        self._stats_at = now
        try:
            s = await self.queue.Stats(queue_pb2.QueueStatsRequest(), timeout=self.deadline)
        except grpc.aio.AioRpcError:
            return
        QUEUE_DEPTH.set(s.entries)
        QUEUE_DUE.set(s.due)
        QUEUE_AGE.set(
            max(0.0, time.time() - s.oldest_created_at_ms / 1000) if s.oldest_created_at_ms else 0
        )
