"""The deferred-queue depth gauge, refreshed by a background task (the count is a database
query, which a synchronous Prometheus collector cannot await)."""

from __future__ import annotations

import asyncio

from prometheus_client import Gauge

from postmesh.common.logging import get_logger
from postmesh.common.tasks import cancel_and_wait
from postmesh.store.queue.repository import QueueRepository

log = get_logger(__name__)

QUEUE_DEPTH = Gauge(
    "postmesh_store_deferred_queue_depth",
    "Entries (one per recipient) in the deferred delivery queue. Every store replica reports "
    "the same shared queue: aggregate with max, not sum.",
)
REFRESH_SECONDS = 15.0  # Prometheus' default scrape interval


class DepthMonitor:
    def __init__(self, repo: QueueRepository, interval: float = REFRESH_SECONDS) -> None:
        self.repo = repo
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        try:
            stats = await self.repo.stats()
        except Exception:  # a metric must never take the service down; the next tick retries
            log.warning("could not read the deferred queue depth", exc_info=True)
            return
        QUEUE_DEPTH.set(stats.entries)

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="queue-depth")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
