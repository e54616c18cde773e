"""Store replicas seen on one MongoDB-API database, so that several on FerretDB are noticed.

The MongoDB backend is safe with several replicas on MongoDB only: FerretDB 1.24 applies an
update as read-then-write, so two store replicas there can hand out one UID twice (ADR 37).
Nothing in the chart can tell FerretDB from MongoDB, so each replica says it is alive in
``store_replicas`` every ``BEAT_SECONDS``, counts the others, and on FerretDB with more than one
alive logs an error and sets ``postmesh_store_unsafe_replicas`` (an alert of the chart's
PrometheusRule). A detector, not a lock: FerretDB has no primitive that would make a lease
safe (a conditional update is not atomic there either).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from postmesh.common.logging import get_logger, kv
from postmesh.common.tasks import cancel_and_wait
from postmesh.store import metrics

log = get_logger(__name__)

Doc = dict[str, Any]

BEAT_SECONDS = 10.0
# A replica not heard of for this long is gone (three beats missed).
ALIVE_SECONDS = 3 * BEAT_SECONDS
# Its document is removed after this long (kept a while for whoever looks).
FORGET_SECONDS = 3600.0


def is_ferretdb(build_info: Doc) -> bool:
    """FerretDB answers buildInfo with its own version beside the MongoDB one it emulates."""
    return "ferretdbVersion" in build_info


class ReplicaWatch:
    def __init__(
        self,
        collection: AsyncCollection[Doc],
        *,
        replica_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.collection = collection
        self.replica_id = (
            replica_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        )
        self._clock = clock
        self._started_at = clock()
        self._ferretdb: bool | None = None
        self._unsafe = False
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> int:
        """Say this replica is alive; returns how many (this one included) are."""
        if self._ferretdb is None:
            info = await self.collection.database.client.admin.command("buildInfo")
            self._ferretdb = is_ferretdb(info)
        now = self._clock()
        await self.collection.replace_one(
            {"_id": self.replica_id},
            {"seen": now, "started_at": self._started_at, "host": socket.gethostname()},
            upsert=True,
        )
        await self.collection.delete_many({"seen": {"$lt": now - FORGET_SECONDS}})
        alive = await self.collection.count_documents({"seen": {"$gte": now - ALIVE_SECONDS}})
        metrics.REPLICAS_ALIVE.set(alive)
        unsafe = bool(self._ferretdb) and alive > 1
        metrics.UNSAFE_REPLICAS.set(1 if unsafe else 0)
        if unsafe and not self._unsafe:
            log.error(
                "several store replicas on FerretDB: UIDs and quotas are not safe there; "
                "run one store replica (ADR 37)",
                extra=kv(replicas=alive, replica=self.replica_id),
            )
        self._unsafe = unsafe
        return alive

    async def leave(self) -> None:
        """A clean stop: not counted as alive from now on."""
        await self.collection.delete_one({"_id": self.replica_id})

    async def _loop(self) -> None:
        while True:
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except PyMongoError:
                log.warning("replica heartbeat failed", exc_info=True)
            await asyncio.sleep(BEAT_SECONDS)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="store-replica-watch")

    async def stop(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            await cancel_and_wait(task)
            with contextlib.suppress(PyMongoError):
                await self.leave()
