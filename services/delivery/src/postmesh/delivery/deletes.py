"""Deletes of finished queue entries, batched: every attempt that finishes while a DeleteMany is
in flight joins the next one, so N attempts finishing together cost one round trip and one store
transaction instead of N (group commit; nothing waits on a timer). Each caller still learns its
own entry's outcome, and only after the store made it durable."""

from __future__ import annotations

import asyncio

import grpc

from postmesh.api.store.v1 import queue_pb2, queue_pb2_grpc
from postmesh.common.logging import get_logger

log = get_logger(__name__)

MAX_BATCH = 500  # below the store's 1000 per call


class EntryGone(Exception):
    """The entry is no longer this replica's: deleted already, or its lease expired and another
    owner took it (the store's NOT_FOUND / FAILED_PRECONDITION)."""


_Pending = tuple[queue_pb2.DeleteQueueEntryRequest, "asyncio.Future[int]"]


class BatchedDeletes:
    def __init__(self, queue: queue_pb2_grpc.DeliveryQueueServiceStub, deadline: float) -> None:
        self.queue = queue
        self.deadline = deadline
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._many = True  # False once the store answered UNIMPLEMENTED (an older store)

    async def delete(self, req: queue_pb2.DeleteQueueEntryRequest) -> None:
        """Delete one entry by its lease holder. Raises EntryGone when it is not (or no longer)
        the holder's, grpc.aio.AioRpcError when the store could not be asked."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((req, fut))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        outcome = await fut
        if outcome != queue_pb2.DELETE_OUTCOME_DELETED:
            raise EntryGone(queue_pb2.DeleteOutcome.Name(outcome))  # type: ignore[arg-type]

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                live = [(r, f) for r, f in batch if not f.done()]  # cancelled callers
                if not live:
                    continue
                try:
                    outcomes = await self._send([r for r, _ in live])
                except Exception as e:
                    # The whole call failed, deleting nothing: every caller retries its own.
                    for _, f in live:
                        if not f.done():
                            f.set_exception(e)
                    continue
                for (_, f), outcome in zip(live, outcomes, strict=True):
                    if not f.done():
                        f.set_result(outcome)
        finally:
            self._flusher = None
            for _, f in self._pending:  # left behind by a cancelled flush (shutdown)
                if not f.done():
                    f.cancel()
            self._pending = []

    async def _send(self, reqs: list[queue_pb2.DeleteQueueEntryRequest]) -> list[int]:
        if self._many:
            try:
                resp = await self.queue.DeleteMany(
                    queue_pb2.DeleteManyRequest(entries=reqs), timeout=self.deadline
                )
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                log.warning("the store has no DeleteMany; deleting one entry at a time")
                self._many = False
            else:
                return list(resp.outcomes)
        return [await self._one(r) for r in reqs]

    async def _one(self, req: queue_pb2.DeleteQueueEntryRequest) -> int:
        try:
            await self.queue.Delete(req, timeout=self.deadline)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return queue_pb2.DELETE_OUTCOME_NOT_FOUND
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                return queue_pb2.DELETE_OUTCOME_LEASE_NOT_HELD
            raise
        return queue_pb2.DELETE_OUTCOME_DELETED
