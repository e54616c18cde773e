"""BatchedDeletes: concurrent deletes share DeleteMany calls, each caller gets its own outcome."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from postmesh.api.store.v1 import queue_pb2
from postmesh.delivery.deletes import BatchedDeletes, EntryGone


def req(q: str, owner: str = "me") -> queue_pb2.DeleteQueueEntryRequest:
    return queue_pb2.DeleteQueueEntryRequest(queue_id=q, recipient="r@x.test", owner=owner)


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata())


class Store:
    """Entries held by "me"; others' are FAILED_PRECONDITION, missing ones NOT_FOUND."""

    def __init__(self, held: set[str], others: set[str]) -> None:
        self.held, self.others = held, others
        self.calls: list[list[str]] = []
        self.down = False
        self.many = True

    def _delete(self, r: queue_pb2.DeleteQueueEntryRequest) -> queue_pb2.DeleteOutcome.ValueType:
        if r.queue_id in self.others:
            return queue_pb2.DELETE_OUTCOME_LEASE_NOT_HELD
        if r.queue_id not in self.held:
            return queue_pb2.DELETE_OUTCOME_NOT_FOUND
        self.held.discard(r.queue_id)
        return queue_pb2.DELETE_OUTCOME_DELETED

    async def DeleteMany(self, r: queue_pb2.DeleteManyRequest, timeout: float) -> Any:
        if not self.many:
            raise rpc_error(grpc.StatusCode.UNIMPLEMENTED)
        await asyncio.sleep(0.01)  # a round trip: later deletes gather meanwhile
        if self.down:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE)
        self.calls.append([e.queue_id for e in r.entries])
        return queue_pb2.DeleteManyResponse(outcomes=[self._delete(e) for e in r.entries])

    async def Delete(self, r: queue_pb2.DeleteQueueEntryRequest, timeout: float) -> Any:
        self.calls.append([r.queue_id])
        outcome = self._delete(r)
        if outcome == queue_pb2.DELETE_OUTCOME_NOT_FOUND:
            raise rpc_error(grpc.StatusCode.NOT_FOUND)
        if outcome == queue_pb2.DELETE_OUTCOME_LEASE_NOT_HELD:
            raise rpc_error(grpc.StatusCode.FAILED_PRECONDITION)
        return queue_pb2.DeleteQueueEntryResponse()


async def outcomes(deletes: BatchedDeletes, ids: list[str]) -> list[str]:
    async def one(q: str) -> str:
        try:
            await deletes.delete(req(q))
        except EntryGone:
            return "gone"
        except grpc.aio.AioRpcError as e:
            return str(e.code().name)
        return "deleted"

    return list(await asyncio.gather(*(one(q) for q in ids)))


async def test_concurrent_deletes_share_calls_and_get_their_own_outcome() -> None:
    store = Store(held={f"Q{i}" for i in range(10)}, others={"T"})
    deletes = BatchedDeletes(store, 5)  # type: ignore[arg-type]
    ids = [f"Q{i}" for i in range(10)] + ["T", "Q0", "NONE"]
    assert await outcomes(deletes, ids) == ["deleted"] * 10 + ["gone"] * 3
    assert store.held == set()
    assert len(store.calls) < len(ids)  # batched
    assert sorted(q for call in store.calls for q in call) == sorted(ids)


async def test_a_failed_call_fails_each_caller_and_deletes_nothing() -> None:
    store = Store(held={"Q1", "Q2"}, others=set())
    store.down = True
    deletes = BatchedDeletes(store, 5)  # type: ignore[arg-type]
    assert await outcomes(deletes, ["Q1", "Q2"]) == ["UNAVAILABLE"] * 2
    store.down = False
    assert await outcomes(deletes, ["Q1", "Q2"]) == ["deleted"] * 2


async def test_an_older_store_without_delete_many_gets_single_deletes() -> None:
    store = Store(held={"Q1", "Q2"}, others={"T"})
    store.many = False
    deletes = BatchedDeletes(store, 5)  # type: ignore[arg-type]
    assert await outcomes(deletes, ["Q1", "T", "Q2", "NONE"]) == [
        "deleted", "gone", "deleted", "gone",
    ]  # fmt: skip
    assert all(len(call) == 1 for call in store.calls)


async def test_a_cancelled_caller_is_left_out() -> None:
    store = Store(held={"Q1", "Q2", "Q3"}, others=set())
    deletes = BatchedDeletes(store, 5)  # type: ignore[arg-type]
    first = asyncio.create_task(deletes.delete(req("Q1")))
    await asyncio.sleep(0)  # Q1's call is in flight; the next two wait for the next one
    waiting = asyncio.create_task(deletes.delete(req("Q2")))
    kept = asyncio.create_task(deletes.delete(req("Q3")))
    await asyncio.sleep(0)
    waiting.cancel()
    await first
    await kept
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert store.held == {"Q2"}
