"""The store janitor on the MongoDB backend against a real FerretDB 1.24: the leftovers only
crashed writers leave there (intents, references, pending deliveries, blobs left writing or
deleting, chunks, queue transitions), a pass that crashes half-way, passes next to live writers
and two janitors (two replicas) at once. The backend-independent contract (expired pins,
tombstones, delivery records, the fill-and-shrink test) runs on FerretDB in
test_store_contract.py."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from postmesh.store import leftovers as lo
from postmesh.store.contract_suite import content_of, message, stream
from postmesh.store.contract_suite.janitor import POLICY, expunge_all
from postmesh.store.janitor import Janitor
from postmesh.store.model import INBOX, Delivery
from postmesh.store.mongodb import MongoStoreRepository
from postmesh.store.mongodb.blobs import COMPLETE, DELETING, WRITING
from postmesh.store.queue.contract_suite import entry
from postmesh.store.queue.mongodb import MongoQueueRepository
from tests.integration.infra import FerretDB
from tests.integration.test_store_contract import Crash, crash_after, crash_before

HOUR, DAY = 3600, 24 * 3600


@pytest.fixture
async def database(ferretdb: FerretDB) -> AsyncIterator[str]:
    name = f"janitor_{uuid.uuid4().hex[:12]}"
    yield name
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(ferretdb.url)
    await client.drop_database(name)
    await client.close()


@pytest.fixture
async def repo(ferretdb: FerretDB, database: str) -> AsyncIterator[MongoStoreRepository]:
    r = MongoStoreRepository(ferretdb.url, database)
    await r.open()
    yield r
    await r.close()


def later(seconds: float) -> float:
    return time.time() + seconds


async def run_pass(repo: MongoStoreRepository, now: float | None = None) -> dict[str, int]:
    return await Janitor([repo], POLICY).run_pass(now)


async def test_expired_intents_are_rolled_forward_live_ones_are_not(
    repo: MongoStoreRepository,
) -> None:
    """Two MOVEs died after copying, before expunging their sources; the one whose lease ran
    out is finished by the janitor (the roll-forward a user's next operation would run), the
    one whose owner may still be working is left alone."""
    for user in ("dead", "busy"):
        await repo.deliver(Delivery(f"q-{user}", user, "", content=message(1)))
    repo.intent_lease_seconds = 0.0
    crash_before(repo, "_tombstone_sources")
    with pytest.raises(Crash):
        await repo.move_messages("dead", INBOX, [1], "Archive")
    repo.intent_lease_seconds = HOUR
    crash_before(repo, "_tombstone_sources")
    with pytest.raises(Crash):
        await repo.move_messages("busy", INBOX, [1], "Archive")

    removed = await run_pass(repo)
    assert removed[lo.INTENTS] == 1
    assert (await repo.get_mailbox("dead", INBOX)).messages == 0
    assert (await repo.get_mailbox("dead", "Archive")).messages == 1
    # The live one: untouched (the copy exists, the source too, the intent is kept).
    assert (await repo.get_mailbox("busy", INBOX)).messages == 1
    assert [i["user"] for i in await repo._intents.find({}).to_list(None)] == ["busy"]


async def test_reference_of_a_dead_append_is_collected_after_the_grace(
    repo: MongoStoreRepository,
) -> None:
    await repo.provision_user("u")
    content = message(1, b"appended")
    blob_id = hashlib.sha256(content).hexdigest()
    crash_before(repo, "_allocate")
    with pytest.raises(Crash):
        await repo.append("u", INBOX, [], 0, len(content), stream(content, 1000))
    assert (await repo.census())["references"] == 1
    # Young: its Append may still be running.
    assert (await run_pass(repo))[lo.REFERENCES] == 0
    assert await repo.blob_refcount(blob_id) == 1
    assert (await run_pass(repo, later(2 * HOUR)))[lo.REFERENCES] == 1
    assert await repo.blob_refcount(blob_id) is None
    census = await repo.census()
    assert (census["references"], census["blobs"], census["chunks"]) == (0, 0, 0)


@pytest.mark.parametrize(
    ("step", "message_kept"),
    [("_step_reference_blob", False), ("_step_insert_messages", True)],
)
async def test_pending_delivery_never_retried_is_collected(
    repo: MongoStoreRepository, step: str, message_kept: bool
) -> None:
    """A Deliver that died and was never retried: after the retention its record goes, and its
    blob reference with it unless its message was written (the reference is the message's)."""
    content = message(1)
    blob_id = hashlib.sha256(content).hexdigest()
    crash_after(repo, step)
    with pytest.raises(Crash):
        await repo.deliver(Delivery("q1", "u", "", content=content))
    assert (await run_pass(repo, later(DAY)))[lo.DELIVERIES] == 0
    assert (await run_pass(repo, later(15 * DAY)))[lo.DELIVERIES] == 1
    census = await repo.census()
    assert census["deliveries"] == 0
    if message_kept:
        assert await repo.blob_refcount(blob_id) == 1
        assert await content_of(repo, "u", INBOX, 1) == content
    else:
        assert await repo.blob_refcount(blob_id) is None
        assert (census["references"], census["chunks"]) == (0, 0)


async def test_blobs_left_by_dead_writers_and_deleters(repo: MongoStoreRepository) -> None:
    now = time.time()
    writing, deleting, complete = (hashlib.sha256(b"%d" % i).hexdigest() for i in range(3))
    docs = [
        {"_id": writing, "size": 1, "state": WRITING, "key": f"{writing}-a", "created_at": now},
        {"_id": deleting, "size": 1, "state": DELETING, "key": f"{deleting}-b",
         "created_at": now, "deleting_at": 0.0},
        {"_id": complete, "size": 1, "state": COMPLETE, "key": f"{complete}-c",
         "created_at": now},
    ]  # fmt: skip
    await repo.blobs.blobs.insert_many(docs)
    for d in docs:
        await repo.blobs.chunks.insert_one(
            {"_id": f"{d['key']}:0", "blob": d["key"], "n": 0, "data": b"x"}
        )
    # Chunks of an incarnation whose document is gone (a deleter that died before a takeover).
    orphan_key = f"{complete}-old"
    await repo.blobs.chunks.insert_one({"_id": f"{orphan_key}:0", "blob": orphan_key, "n": 0,
                                        "data": b"x"})  # fmt: skip
    # A referenced complete blob is never touched.
    kept = message(9)
    await repo.deliver(Delivery("q9", "u", "", content=kept))

    removed = await run_pass(repo)
    # The complete and abandoned "deleting" ones go now, the "writing" one only after the
    # grace (its writer may be alive); the orphan chunks go.
    assert (removed[lo.BLOBS], removed[lo.CHUNKS]) == (2, 1)
    assert await repo.blobs.find(writing) is not None
    assert (await run_pass(repo, later(2 * HOUR)))[lo.BLOBS] == 1
    census = await repo.census()
    # The kept message's blob is one chunk: its bytes are in its document, not in a chunk.
    assert (census["blobs"], census["chunks"]) == (1, 0)
    assert await content_of(repo, "u", INBOX, 1) == kept


async def test_orphan_queue_transitions_are_collected(ferretdb: FerretDB, database: str) -> None:
    queue = MongoQueueRepository(ferretdb.url, database)
    await queue.open()
    try:
        await queue.enqueue(entry("LIVE"))
        await queue.enqueue(entry("GONE"))
        for qid in ("LIVE", "GONE"):
            await queue.claim(qid, "bob@example.net", "w1", 60)
            await queue.reschedule(qid, "bob@example.net", "w1", 0, "try later")
        # GONE's entry deleted under its transitions (a DELETE whose cleanup died).
        await queue._entries.delete_one({"queue_id": "GONE"})
        assert (await queue.census())["transitions"] == 4
        janitor = Janitor([queue], POLICY)
        assert (await janitor.run_pass())[lo.TRANSITIONS] == 0  # within the grace
        assert (await janitor.run_pass(later(2 * HOUR)))[lo.TRANSITIONS] == 2
        assert (await queue.census())["transitions"] == 2
        # The live entry still changes generation by generation.
        claimed = await queue.claim("LIVE", "bob@example.net", "w2", 60)
        assert claimed.lease_owner == "w2" and claimed.attempts == 1
    finally:
        await queue.close()


async def test_a_pass_that_crashes_half_way_is_finished_by_the_next(
    repo: MongoStoreRepository,
) -> None:
    """Crash after raising the vanished floor, before removing the tombstones: GetChanges
    already says "incomplete" (conservative, never wrong); the next pass removes them. Then a
    crash inside a blob deletion (chunks gone, document still "deleting")."""
    for n in range(1, 4):
        await repo.deliver(Delivery(f"q{n}", "u", "", content=message(n)))
    before = (await repo.get_mailbox("u", INBOX)).highestmodseq
    await expunge_all(repo, "u", INBOX)
    crash_before(repo._messages, "delete_many")
    with pytest.raises(Crash):
        await run_pass(repo, later(31 * DAY))
    changes = await repo.get_changes("u", INBOX, before)
    assert changes.expunged_incomplete and changes.expunged == [1, 2, 3]
    assert (await run_pass(repo, later(31 * DAY)))[lo.TOMBSTONES] == 3
    assert (await repo.census())["tombstones"] == 0

    content = message(7, b"z" * 600_000)
    blob_id = hashlib.sha256(content).hexdigest()
    info = await repo.put_blob(stream(content, 100_000))
    assert info.blob_id == blob_id
    original = repo.blobs._remove

    async def die_half_way(doc: dict[str, Any]) -> None:
        await repo.blobs.chunks.delete_one({"blob": doc["key"], "n": 1})
        raise Crash("deleter")

    repo.blobs._remove = die_half_way  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await run_pass(repo, later(8 * DAY))
    repo.blobs._remove = original  # type: ignore[method-assign]
    doc = await repo.blobs.find(blob_id)
    assert doc is not None and doc["state"] == DELETING
    # Within STALE_DELETE_SECONDS its deleter might be alive: left alone.
    assert (await run_pass(repo, later(8 * DAY)))[lo.BLOBS] == 0
    await repo.blobs.blobs.update_one({"_id": blob_id}, {"$set": {"deleting_at": 0.0}})
    assert (await run_pass(repo, later(8 * DAY)))[lo.BLOBS] == 1
    census = await repo.census()
    assert (census["blobs"], census["chunks"], census["references"]) == (0, 0, 0)


async def test_passes_next_to_writers_of_the_same_content(repo: MongoStoreRepository) -> None:
    """Janitor passes (past every retention) run while the same contents are delivered,
    copied and expunged over and over: no live message ever loses its content, and at the end
    the store shrinks back to what it holds."""
    contents = [message(i, b"c" * (i * 100_000)) for i in range(3)]
    stop = asyncio.Event()
    passes = 0

    # Real time (a delivery in flight is never older than the delivery retention), but
    # tombstones go at once, so blobs lose their last reference all the time.
    eager = Janitor([repo], dataclasses.replace(POLICY, tombstone_retention_seconds=0))

    collected = 0

    async def janitor() -> None:
        nonlocal passes, collected
        while not stop.is_set():
            collected += sum((await eager.run_pass()).values())
            passes += 1

    async def writer(user: str) -> None:
        for round_ in range(6):
            for i, content in enumerate(contents):
                await repo.deliver(Delivery(f"{user}-{round_}-{i}", user, "", content=content))
            uids = [m.uid for m in (await repo.list_messages(user, INBOX, 0, 100))[0]]
            await repo.copy_messages(user, INBOX, uids, "Archive")
            for m in (await repo.list_messages(user, INBOX, 0, 100))[0]:
                assert (
                    await content_of(repo, user, INBOX, m.uid)
                    == contents[[hashlib.sha256(c).hexdigest() for c in contents].index(m.blob_id)]
                )
            await expunge_all(repo, user, INBOX)
            await expunge_all(repo, user, "Archive")

    task = asyncio.create_task(janitor())
    try:
        await asyncio.gather(writer("a"), writer("b"))
    finally:
        stop.set()
        await task
    assert passes > 1 and collected > 0  # the janitor worked while the writers did
    await run_pass(repo, later(60 * DAY))
    census = await repo.census()
    assert {k: census[k] for k in ("blobs", "chunks", "references", "messages", "tombstones",
                                   "deliveries", "indexes")} == dict.fromkeys(
        ("blobs", "chunks", "references", "messages", "tombstones", "deliveries", "indexes"), 0
    )  # fmt: skip


async def test_two_janitors_at_once(ferretdb: FerretDB, database: str) -> None:
    """Two store replicas' passes over the same leftovers: together they remove each once."""
    first = MongoStoreRepository(ferretdb.url, database)
    second = MongoStoreRepository(ferretdb.url, database)
    await first.open()
    await second.open()
    try:
        for n in range(20):
            await first.deliver(Delivery(f"q{n}", "u", "", content=message(n)))
        for n in range(10):
            await first.put_blob(stream(message(100 + n), 1000))
        await expunge_all(first, "u", INBOX)
        now = later(60 * DAY)
        a, b = await asyncio.gather(run_pass(first, now), run_pass(second, now))
        assert a[lo.UPLOAD_PINS] + b[lo.UPLOAD_PINS] >= 10
        census = await first.census()
        assert {k: census[k] for k in ("blobs", "chunks", "references", "tombstones")} == {
            "blobs": 0, "chunks": 0, "references": 0, "tombstones": 0,
        }  # fmt: skip
        assert (await first.get_mailbox("u", INBOX)).uidnext == 21
    finally:
        await first.close()
        await second.close()


async def test_collecting_a_pending_delivery_crashing_half_way(repo: MongoStoreRepository) -> None:
    """The janitor dies after dropping a never-retried delivery's blob reference, before its
    record: the next pass removes the record (the release is repeated harmlessly)."""
    content = message(1)
    crash_after(repo, "_step_reference_blob")
    with pytest.raises(Crash):
        await repo.deliver(Delivery("q1", "u", "", content=content))
    crash_after(repo.blobs, "release")
    with pytest.raises(Crash):
        await run_pass(repo, later(15 * DAY))
    census = await repo.census()
    assert (census["deliveries"], census["references"], census["blobs"]) == (1, 0, 0)
    assert (await run_pass(repo, later(15 * DAY)))[lo.DELIVERIES] == 1
    census = await repo.census()
    assert (census["deliveries"], census["chunks"], census["indexes"]) == (0, 0, 0)
