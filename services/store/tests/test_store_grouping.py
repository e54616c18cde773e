"""The queue of deliveries waiting for a mailbox's lock (mongodb/grouping.py); the grouped
writes themselves run against FerretDB in tests/integration/test_store_contract.py."""

from __future__ import annotations

import asyncio
import gc

import pytest

from postmesh.store.errors import Unavailable
from postmesh.store.mongodb.grouping import Groups


async def test_take_hands_out_the_oldest_waiters_up_to_the_limit() -> None:
    groups = Groups(limit=3)
    waiters = [groups.join("box", i) for i in range(5)]
    other = groups.join("other", "x")
    first = groups.take("box")
    assert [w.item for w in first] == [0, 1, 2] and all(w.taken for w in first)
    assert not waiters[3].taken
    assert [w.item for w in groups.take("box")] == [3, 4]
    assert groups.take("box") == []
    assert [w.item for w in groups.take("other")] == ["x"] and other.taken


async def test_a_waiter_that_leaves_is_not_taken() -> None:
    groups = Groups()
    gone, stays = groups.join("box", "gone"), groups.join("box", "stays")
    groups.leave("box", gone)
    assert groups.take("box") == [stays]
    groups.leave("box", gone)  # gone already: nothing to do
    assert groups.take("box") == []


async def test_settled_and_failed_waiters() -> None:
    groups = Groups()
    ok, failed, interrupted = (groups.join("box", i) for i in range(3))
    ok.settle("uid 7")
    ok.settle("again")  # a waiter is answered once
    failed.fail(ValueError("boom"))
    # The writer of the group was cancelled, not this waiter: it must fail, retryably.
    interrupted.fail(asyncio.CancelledError())
    assert await ok.future == "uid 7"
    with pytest.raises(ValueError):
        await failed.future
    with pytest.raises(Unavailable):
        await interrupted.future


async def test_a_failure_nobody_awaits_is_not_reported_as_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))
    try:
        Groups().join("box", 1).fail(ValueError("caller gone"))
        await asyncio.sleep(0)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert reported == []


async def test_one_writer_per_key_until_it_finds_the_queue_empty() -> None:
    groups = Groups(limit=2)
    written: list[list[int]] = []
    started = 0

    async def writer() -> None:
        nonlocal started
        started += 1
        while group := groups.next_group("box"):
            await asyncio.sleep(0)
            written.append([w.item for w in group])
            for w in group:
                w.settle(w.item)

    waiters = [groups.join("box", i) for i in range(5)]
    for _ in range(3):
        groups.ensure_writer("box", writer)  # one is running: no second
    assert [await w.future for w in waiters] == [0, 1, 2, 3, 4]
    assert written == [[0, 1], [2, 3], [4]] and started == 1
    # It stopped when the queue was empty: a delivery queued now starts a new one.
    late = groups.join("box", 5)
    groups.ensure_writer("box", writer)
    assert await late.future == 5 and started == 2


async def test_a_cancelled_writer_fails_what_is_still_queued_retryably() -> None:
    groups = Groups()
    gate = asyncio.Event()

    async def writer() -> None:
        group = groups.next_group("box")
        try:
            await gate.wait()
        except asyncio.CancelledError as e:
            for w in group + groups.writer_gone("box"):
                w.fail(e)
            raise

    first = groups.join("box", 1)
    groups.ensure_writer("box", writer)
    await asyncio.sleep(0)  # the writer took the first
    second = groups.join("box", 2)
    await groups.stop()
    for w in (first, second):
        with pytest.raises(Unavailable):
            await w.future
    assert groups.take("box") == []
