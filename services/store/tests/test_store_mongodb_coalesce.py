"""InsertBatcher (ADR 45): concurrent inserts into one collection share one insert_many, and
each caller still gets its own document's outcome; UpdateBatcher: concurrent update_one calls
share one update command, and a caller is told "matched" only when every statement matched. Against a fake collection that behaves as
MongoDB's unordered insert_many does (a unique _id; one failing document fails alone)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import AutoReconnect, BulkWriteError, WriteError

from postmesh.store.mongodb import coalesce
from postmesh.store.mongodb.coalesce import InsertBatcher, UpdateBatcher, UpdateSlots

Doc = dict[str, Any]


class FakeCollection:
    def __init__(self) -> None:
        self.docs: dict[Any, Doc] = {}
        self.commands: list[int] = []  # documents per insert_many
        self.refuse: set[Any] = set()  # ids answered with a validation error
        self.down = False

    async def insert_many(self, docs: list[Doc], ordered: bool = True) -> None:
        assert not ordered
        await asyncio.sleep(0)  # a round trip: later callers queue meanwhile
        if self.down:
            raise AutoReconnect("connection refused")
        self.commands.append(len(docs))
        errors = []
        for i, d in enumerate(docs):
            if d["_id"] in self.refuse:
                errors.append({"index": i, "code": 121, "errmsg": "Document failed validation"})
            elif d["_id"] in self.docs:
                errors.append({"index": i, "code": 11000, "errmsg": "E11000 duplicate key"})
            else:
                self.docs[d["_id"]] = d
        if errors:
            raise BulkWriteError({"writeErrors": errors, "writeConcernErrors": []})

    async def bulk_write(self, ops: list[UpdateOne], ordered: bool = True) -> Any:
        """Unordered updates of one field by _id and state, as the blob completion sends."""
        assert not ordered
        await asyncio.sleep(0)
        if self.down:
            raise AutoReconnect("connection refused")
        self.commands.append(len(ops))
        matched = 0
        errors = []
        for i, op in enumerate(ops):
            doc = cast(Doc, op._filter)  # pymongo keeps them on the operation
            if doc["_id"] in self.refuse:
                errors.append({"index": i, "code": 121, "errmsg": "Document failed validation"})
                continue
            found = self.docs.get(doc["_id"])
            if found is not None and found.get("state") == doc["state"]:
                update: Doc = cast(Doc, op._doc)
                found.update(update["$set"])
                matched += 1
        if errors:
            raise BulkWriteError({"writeErrors": errors, "writeConcernErrors": []})

        class Result:
            matched_count = matched

        return Result()


def _batcher(fake: FakeCollection) -> InsertBatcher:
    return InsertBatcher(cast(AsyncCollection[Doc], fake))


async def test_concurrent_inserts_share_commands_and_each_gets_its_outcome() -> None:
    fake = FakeCollection()
    fake.docs["taken"] = {"_id": "taken"}
    b = _batcher(fake)
    ids = [f"d{i}" for i in range(50)] + ["taken", "d3"]
    results = await asyncio.gather(*(b.insert({"_id": i}) for i in ids))
    # Queued in the same turn of the event loop: one command.
    assert fake.commands == [52]
    assert results[:50] == [True] * 50
    assert results[50:] == [False, False]  # already there; the same id twice in a batch
    assert set(fake.docs) == {f"d{i}" for i in range(50)} | {"taken"}


async def test_a_lone_insert_is_sent_at_once_and_later_ones_queue_behind_it() -> None:
    fake = FakeCollection()
    b = _batcher(fake)
    assert await b.insert({"_id": 1})
    assert not await b.insert({"_id": 1})
    first = asyncio.create_task(b.insert({"_id": 2}))
    await asyncio.sleep(0)  # its command is in flight now
    later = [asyncio.create_task(b.insert({"_id": i})) for i in (3, 4, 5)]
    assert await asyncio.gather(first, *later) == [True] * 4
    assert fake.commands == [1, 1, 1, 3]


async def test_a_document_error_fails_its_caller_alone() -> None:
    fake = FakeCollection()
    fake.refuse.add("bad")
    b = _batcher(fake)
    results = await asyncio.gather(
        *(b.insert({"_id": i}) for i in ("a", "b", "bad", "c")), return_exceptions=True
    )
    assert results[:2] == [True, True] and results[3] is True
    assert isinstance(results[2], WriteError) and results[2].code == 121


async def test_a_failed_command_fails_every_caller_of_it_and_the_next_batch_still_goes() -> None:
    fake = FakeCollection()
    b = _batcher(fake)
    fake.down = True
    first = await asyncio.gather(*(b.insert({"_id": i}) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, AutoReconnect) for r in first)
    fake.down = False
    assert await asyncio.gather(*(b.insert({"_id": i}) for i in range(3))) == [True] * 3


async def test_commands_are_bounded_in_documents_and_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coalesce, "MAX_DOCUMENTS", 4)
    monkeypatch.setattr(coalesce, "MAX_BYTES", 1000)
    fake = FakeCollection()
    b = _batcher(fake)
    await asyncio.gather(*(b.insert({"_id": i}) for i in range(10)))
    assert fake.commands == [4, 4, 2]
    fake.commands.clear()
    # 400 bytes each: two fit under 1000; one bigger than the bound still goes, alone.
    sizes = [400, 400, 400, 400, 5000, 400]
    await asyncio.gather(*(b.insert({"_id": f"s{i}"}, size) for i, size in enumerate(sizes)))
    assert fake.commands == [2, 2, 1, 1]


async def test_a_cancelled_caller_does_not_stop_the_others() -> None:
    fake = FakeCollection()
    b = _batcher(fake)
    tasks = [asyncio.create_task(b.insert({"_id": i})) for i in range(5)]
    await asyncio.sleep(0)
    tasks[2].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 2] == [True] * 4
    # Its document was already queued: inserted anyway, as a cancelled insert_one might be.
    assert set(fake.docs) == set(range(5))


def _updater(fake: FakeCollection, slots: UpdateSlots | None = None) -> UpdateBatcher:
    return UpdateBatcher(cast(AsyncCollection[Doc], fake), slots or UpdateSlots())


async def test_concurrent_updates_share_one_command_and_all_matched_is_reported() -> None:
    fake = FakeCollection()
    fake.docs.update({i: {"_id": i, "state": "writing"} for i in range(20)})
    u = _updater(fake)
    results = await asyncio.gather(
        *(u.update_one({"_id": i, "state": "writing"}, {"$set": {"state": "complete"}})
          for i in range(20))
    )  # fmt: skip
    assert fake.commands == [20]
    assert results == [True] * 20
    assert all(d["state"] == "complete" for d in fake.docs.values())


async def test_an_unmatched_update_makes_its_whole_command_report_maybe_not() -> None:
    """MongoDB gives one matched count per command: with one statement unmatched, no caller
    can know it was not theirs, so every caller of that command reads False and looks."""
    fake = FakeCollection()
    fake.docs.update({i: {"_id": i, "state": "writing"} for i in range(3)})
    fake.docs[1]["state"] = "complete"  # completed by another writer meanwhile
    u = _updater(fake)
    results = await asyncio.gather(
        *(u.update_one({"_id": i, "state": "writing"}, {"$set": {"state": "complete"}})
          for i in range(3))
    )  # fmt: skip
    assert results == [False, False, False]
    assert [fake.docs[i]["state"] for i in range(3)] == ["complete"] * 3
    # Alone, a matched update is told so.
    fake.docs[9] = {"_id": 9, "state": "writing"}
    assert await u.update_one({"_id": 9, "state": "writing"}, {"$set": {"state": "complete"}})


async def test_an_update_error_fails_its_caller_alone_and_a_failed_command_fails_all() -> None:
    fake = FakeCollection()
    fake.docs.update({i: {"_id": i, "state": "writing"} for i in ("a", "bad", "c")})
    fake.refuse.add("bad")
    u = _updater(fake)
    results = await asyncio.gather(
        *(u.update_one({"_id": i, "state": "writing"}, {"$set": {"state": "complete"}})
          for i in ("a", "bad", "c")),
        return_exceptions=True,
    )  # fmt: skip
    assert results[0] is False and results[2] is False
    assert isinstance(results[1], WriteError) and results[1].code == 121
    fake.down = True
    failed = await asyncio.gather(u.update_one({"_id": "a"}, {"$set": {}}), return_exceptions=True)
    assert isinstance(failed[0], AutoReconnect)


async def test_update_statements_in_flight_stay_within_the_slots() -> None:
    """FerretDB 1.24 holds a PostgreSQL connection per statement of an update command until
    it ends: 50 at once (one command or several) wait forever (ADR 63). Commands are cut at
    the limit, and the statements of all commands sharing the slots never exceed it."""
    fake = FakeCollection()
    fake.docs.update({i: {"_id": i, "state": "writing"} for i in range(100)})
    in_flight = peak = 0
    bulk_write = fake.bulk_write

    async def counted(ops: list[UpdateOne], ordered: bool = True) -> Any:
        nonlocal in_flight, peak
        in_flight += len(ops)
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.001)
            return await bulk_write(ops, ordered)
        finally:
            in_flight -= len(ops)

    fake.bulk_write = counted  # type: ignore[method-assign]
    slots = UpdateSlots(8)
    # Two batchers on one repository's slots, as its blob completions and its groups'
    # mark-done commands are.
    first, second = _updater(fake, slots), _updater(fake, slots)

    async def complete(u: UpdateBatcher, i: int) -> bool:
        return await u.update_one({"_id": i, "state": "writing"}, {"$set": {"state": "complete"}})

    results = await asyncio.gather(
        *(complete(first, i) for i in range(0, 50)), *(complete(second, i) for i in range(50, 100))
    )
    assert all(results) and all(d["state"] == "complete" for d in fake.docs.values())
    assert max(fake.commands) == 8 and peak <= 8 and slots.free == 8


async def test_a_command_larger_than_the_slots_holds_them_all_and_one_holder_waits() -> None:
    slots = UpdateSlots(10)
    order: list[str] = []
    async with slots.hold(6):
        waiting = asyncio.create_task(_hold(slots, 7, order))
        await asyncio.sleep(0.01)
        assert order == [] and slots.free == 4  # 7 do not fit beside 6
    await waiting
    assert order == ["held 7"] and slots.free == 10
    async with slots.hold(25):  # more than the limit: all of them, never more
        assert slots.free == 0
    assert slots.free == 10


async def _hold(slots: UpdateSlots, n: int, order: list[str]) -> None:
    async with slots.hold(n):
        order.append(f"held {n}")
