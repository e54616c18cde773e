"""The claim loop asks the store only when something may be due that it has not seen: not
after every finished attempt (one empty ClaimDue per message before), but at once after an
entry was left unleased, including while every worker was busy."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from postmesh.api.events.v1 import events_pb2
from postmesh.api.store.v1 import queue_pb2
from postmesh.delivery.queue import QueueWorkers


class ClaimCountingQueue:
    def __init__(self) -> None:
        self.free: list[queue_pb2.QueueEntry] = []
        self.claims = 0
        self.contents: dict[str, bytes] = {}  # what a store sends with a claim
        self.asked_content: list[int] = []

    async def ClaimDue(self, req: queue_pb2.ClaimDueRequest, timeout: float) -> Any:
        self.claims += 1
        self.asked_content.append(req.content_max_bytes)
        got, self.free = self.free[: req.max_items], self.free[req.max_items :]
        contents = {e.message.blob_id: self.contents[e.message.blob_id] for e in got
                    if e.message.blob_id in self.contents}  # fmt: skip
        return queue_pb2.ClaimDueResponse(entries=got, contents=contents)

    async def Stats(self, req: queue_pb2.QueueStatsRequest, timeout: float) -> Any:
        return queue_pb2.QueueStatsResponse()


def entry(n: int) -> queue_pb2.QueueEntry:
    return queue_pb2.QueueEntry(
        queue_id=f"Q{n}", recipient=events_pb2.Recipient(address=f"r{n}@remote.test"),
        message=events_pb2.InboundMessage(queue_id=f"Q{n}", blob_id=f"blob{n}"),
    )  # fmt: skip


async def until(cond: Any) -> None:
    async def wait() -> None:
        while not cond():  # noqa: ASYNC110 (state of fakes, no event to wait on)
            await asyncio.sleep(0.005)

    await asyncio.wait_for(wait(), 5)


async def test_finished_attempts_claim_only_when_something_may_be_due() -> None:
    queue = ClaimCountingQueue()
    attempted: list[str] = []
    gate = asyncio.Event()

    async def attempt(group: Sequence[queue_pb2.QueueEntry], content: bytes | None) -> None:
        await gate.wait()
        attempted.extend(e.queue_id for e in group)

    workers = QueueWorkers(
        queue, attempt, owner="me", concurrency=1, claim_batch=50,  # type: ignore[arg-type]
        lease_seconds=60, poll_seconds=60, deadline=5,
    )  # fmt: skip
    task = asyncio.create_task(workers.run())
    await until(lambda: queue.claims == 1)  # the claim at start
    gate.set()
    for n in range(10):  # born-leased first attempts, as the bus consumer makes them
        assert workers.reserve(1)
        workers.run_now([entry(n)], b"content", reserved=True)
        await until(lambda n=n: len(attempted) == n + 1 and workers._busy == 0)
    await asyncio.sleep(0.05)
    assert queue.claims == 1  # no ClaimDue per finished attempt
    # The only worker busy: the next entry is enqueued unleased (reserve refused) and woken
    # for; the claim waits for the free slot and comes as soon as the attempt ends.
    gate.clear()
    assert workers.reserve(1)
    workers.run_now([entry(10)], b"content", reserved=True)
    assert not workers.reserve(1)
    queue.free.append(entry(11))
    workers.wake()
    await asyncio.sleep(0.05)
    assert attempted == [f"Q{n}" for n in range(10)]
    gate.set()
    await until(lambda: attempted[-2:] == ["Q10", "Q11"])
    assert queue.free == []
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_claimed_entries_get_the_content_that_came_with_the_claim() -> None:
    """Content in ClaimDueResponse.contents goes to its message's attempt (no GetBlob); a
    message without (too large, an older store) gets None and reads it itself."""
    queue = ClaimCountingQueue()
    queue.free = [entry(1), entry(2), entry(1)]
    queue.free[2].recipient.address = "other@remote.test"  # same message, same domain
    queue.contents = {"blob1": b"content one"}
    seen: dict[str, tuple[list[str], bytes | None]] = {}

    async def attempt(group: Sequence[queue_pb2.QueueEntry], content: bytes | None) -> None:
        seen[group[0].queue_id] = ([e.recipient.address for e in group], content)

    workers = QueueWorkers(
        queue, attempt, owner="me", concurrency=10, claim_batch=50,  # type: ignore[arg-type]
        lease_seconds=60, poll_seconds=60, deadline=5,
    )  # fmt: skip
    task = asyncio.create_task(workers.run())
    await until(lambda: len(seen) == 2)
    assert seen == {
        "Q1": (["r1@remote.test", "other@remote.test"], b"content one"),
        "Q2": (["r2@remote.test"], None),
    }
    assert queue.asked_content[0] > 0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_stop_that_meets_a_wake_up_still_stops_the_workers() -> None:
    """The service's stop cancels the claim loop while an enqueue may wake it in the same turn
    of the event loop; Python 3.11's wait_for dropped such a cancellation (the stop hung)."""

    async def attempt(group: Sequence[queue_pb2.QueueEntry], content: bytes | None) -> None:
        pass

    for _ in range(20):
        queue = ClaimCountingQueue()
        workers = QueueWorkers(
            queue, attempt, owner="me", concurrency=4, claim_batch=50,  # type: ignore[arg-type]
            lease_seconds=60, poll_seconds=60, deadline=5,
        )  # fmt: skip
        task = asyncio.create_task(workers.run())
        await until(lambda q=queue, w=workers: q.claims >= 1 and not w._wake.is_set())
        await asyncio.sleep(0)
        workers.wake()  # the waiter is woken ...
        task.cancel()  # ... and cancelled in the same turn
        done, _ = await asyncio.wait({task}, timeout=2)
        assert done, "the claim loop ignored its cancellation"
        assert task.cancelled()
