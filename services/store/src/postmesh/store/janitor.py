"""The store's janitor: a periodic pass that removes what ``leftovers.py`` lists.

Each pass asks every target (the store backend, and the deferred queue on MongoDB) for each of
its kinds in turn, one batch at a time, at most ``max_batches`` batches per kind: bounded work,
and no lock held across batches. Several store replicas may run passes at once (every backend
call is safe against that); their intervals are jittered so they rarely do. A failing batch
ends the pass (logged, counted); the next pass starts over, and whatever a crash left half-done
is finished by it, because every call is idempotent.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from postmesh.common.logging import get_logger, kv
from postmesh.common.tasks import cancel_and_wait
from postmesh.store import metrics
from postmesh.store.leftovers import Cutoffs, Leftovers

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class JanitorPolicy:
    interval_seconds: float
    batch: int
    max_batches: int
    tombstone_retention_seconds: float
    delivery_retention_seconds: float
    orphan_grace_seconds: float

    def cutoffs(self, now: float) -> Cutoffs:
        return Cutoffs(
            now=now,
            tombstones=now - self.tombstone_retention_seconds,
            deliveries=now - self.delivery_retention_seconds,
            orphans=now - self.orphan_grace_seconds,
        )


class Janitor:
    def __init__(
        self,
        targets: Sequence[Leftovers],
        policy: JanitorPolicy,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.targets = list(targets)
        self.policy = policy
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def run_pass(self, now: float | None = None) -> dict[str, int]:
        """One pass over every kind; returns how many items of each kind it removed. Raises
        what a backend raised (after counting what was removed until then)."""
        started = time.monotonic()
        cutoffs = self.policy.cutoffs(self._clock() if now is None else now)
        removed: dict[str, int] = {}
        for target in self.targets:
            for kind in target.kinds:
                removed.setdefault(kind, 0)
                for _ in range(self.policy.max_batches):
                    n = await target.collect(kind, cutoffs, self.policy.batch)
                    removed[kind] += n
                    metrics.JANITOR_REMOVED.labels(kind).inc(n)
                    if n < self.policy.batch:
                        break
        metrics.JANITOR_PASS_SECONDS.observe(time.monotonic() - started)
        metrics.JANITOR_LAST_SUCCESS.set(time.time())
        if any(removed.values()):
            log.info("janitor pass", extra=kv(**{k: v for k, v in removed.items() if v}))
        return removed

    async def _loop(self) -> None:
        while True:
            # Jitter: replicas started together do not run their passes in lockstep.
            await asyncio.sleep(self.policy.interval_seconds * random.uniform(0.8, 1.2))
            try:
                await self.run_pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.JANITOR_FAILURES.inc()
                log.exception("janitor pass failed; the next pass starts over")

    def start(self) -> None:
        if self.policy.interval_seconds > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="store-janitor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
