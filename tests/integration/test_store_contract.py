"""The store's repository contract on the MongoDB backend against a real FerretDB 1.24, plus
crash-and-retry tests of the transaction-free write sequences that only that backend has."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from postmesh.api.store.v1 import store_pb2
from postmesh.store.contract_suite import StoreContract, content_of, message
from postmesh.store.model import INBOX, DeliverResult, Delivery, FlagsMode
from postmesh.store.mongodb import MongoStoreRepository, pg_indexes, watermark
from postmesh.store.mongodb.blobs import COMPLETE, DELETING
from postmesh.store.mongodb.delivery import delivery_key, delivery_mark
from postmesh.store.search import HEADERS_VERSION
from tests.integration.infra import FerretDB


@pytest.fixture
async def mongo_repo(ferretdb: FerretDB) -> AsyncIterator[MongoStoreRepository]:
    # One database per test: isolation without dropping what other tests use.
    name = f"store_{uuid.uuid4().hex[:12]}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        ferretdb.url, serverSelectionTimeoutMS=5000
    )
    # As deployed: a provisioned user's document kept for Deliveries (ADR 55).
    repo = MongoStoreRepository(ferretdb.url, name, client=client, user_cache_seconds=60.0)
    await repo.open()
    yield repo
    await client.drop_database(name)
    await repo.close()


class TestMongoStoreContractOnFerretDB(StoreContract):
    @pytest.fixture
    async def repo(self, mongo_repo: MongoStoreRepository) -> MongoStoreRepository:
        return mongo_repo


class Crash(Exception):
    """Stands in for the process dying between two writes."""


def crash_after(obj: Any, name: str) -> None:
    """Make ``obj.name`` do its writes once and then 'die'."""
    original: Callable[..., Awaitable[Any]] = getattr(obj, name)

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        setattr(obj, name, original)  # the retry runs normally
        await original(*args, **kwargs)
        raise Crash(name)

    setattr(obj, name, wrapper)


DELIVER_STEPS = [
    "_step_reference_blob",
    "_step_allocate",
    "_step_insert_messages",
    "_step_mark_done",
]


@pytest.mark.parametrize("step", DELIVER_STEPS)
@pytest.mark.parametrize("by_blob_id", [False, True], ids=["inline", "blob_id"])
@pytest.mark.parametrize("size", [300_000, 1_000], ids=["two-chunks", "one-chunk"])
async def test_deliver_retry_after_crash_makes_one_copy(
    mongo_repo: MongoStoreRepository, step: str, by_blob_id: bool, size: int
) -> None:
    repo = mongo_repo
    content = message(1, b"x" * size)  # a blob of two chunks, or one in its own document
    blob_id = hashlib.sha256(content).hexdigest()

    def delivery() -> Delivery:
        if by_blob_id:
            return Delivery("q1", "u", "", blob_id=blob_id)
        return Delivery("q1", "u", "", content=content)

    if by_blob_id:

        async def one() -> AsyncIterator[bytes]:
            yield content

        await repo.put_blob(one())
    crash_after(repo, step)
    with pytest.raises(Crash):
        await repo.deliver(delivery())
    retry = await repo.deliver(delivery())  # Kafka redelivers the record
    assert retry.duplicate
    again = await repo.deliver(delivery())
    assert (again.duplicate, again.created, again.uid) == (True, False, retry.uid)
    msgs, _ = await repo.list_messages("u", INBOX, 0, 10)
    assert [m.uid for m in msgs] == [retry.uid]
    assert await repo.blob_refcount(blob_id) == 1
    assert await content_of(repo, "u", INBOX, retry.uid) == content
    # A UID burned by the crash is fine (RFC 9051 allows gaps); the next one is higher.
    nxt = await repo.deliver(Delivery("q2", "u", "", content=message(2)))
    assert nxt.uid > retry.uid


async def queued_behind_the_lock(
    repo: MongoStoreRepository, deliveries: list[Delivery]
) -> list[asyncio.Task[DeliverResult]]:
    """Start ``deliveries`` into one mailbox while its lock is held, and return once all of
    them wait for it: whoever gets it next writes them as one group (grouping.py)."""
    box = await repo._mailbox_doc("u", INBOX)
    async with repo._locks.hold(box["_id"]):
        tasks = [asyncio.create_task(repo.deliver(d)) for d in deliveries]
        for _ in range(3000):  # 30 s
            if len(repo._groups._queued.get(box["_id"], [])) == len(deliveries):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the deliveries never queued for the mailbox")
    return tasks


async def test_deliveries_waiting_for_a_mailbox_are_written_as_one_group(
    mongo_repo: MongoStoreRepository,
) -> None:
    repo = mongo_repo
    first = await repo.deliver(Delivery("q0", "u", "", content=message(0)))
    before = await repo.get_mailbox("u", INBOX)
    allocations: list[int] = []
    allocate = repo._allocate_each

    async def counted(*args: Any) -> tuple[int, int]:
        allocations.append(args[1])
        return await allocate(*args)

    repo._allocate_each = counted  # type: ignore[method-assign,assignment]
    marked: list[int] = []
    mark_done = repo._step_mark_done

    async def counted_done(records: list[Any]) -> None:
        marked.append(len(records))
        await mark_done(records)

    repo._step_mark_done = counted_done  # type: ignore[method-assign]
    deliveries = [Delivery(f"q{i}", "u", "", content=message(i)) for i in range(1, 9)]
    tasks = await queued_behind_the_lock(repo, deliveries)
    results = await asyncio.gather(*tasks)
    assert allocations == [8] and marked == [8]  # one $inc, one command marking them done
    # Consecutive UIDs and one MODSEQ each, in the same order: as eight deliveries in a row.
    assert sorted((r.uid, r.modseq) for r in results) == [
        (first.uid + i, before.highestmodseq + i) for i in range(1, 9)
    ]
    assert all(r.created and not r.duplicate for r in results)
    after = await repo.get_mailbox("u", INBOX)
    assert (after.uidnext, after.highestmodseq) == (first.uid + 9, before.highestmodseq + 8)
    doc = await repo._mailboxes.find_one({"user": "u", "name": INBOX})
    assert doc is not None and not doc.get("pending")  # every mark of the group cleared
    for r, d in zip(results, deliveries, strict=True):
        assert await content_of(repo, "u", INBOX, r.uid) == d.content
        # Each delivery has its own record: a redelivery answers its own UID.
        again = await repo.deliver(d)
        assert (again.duplicate, again.created, again.uid) == (True, False, r.uid)


class CommandCounter(monitoring.CommandListener):
    """MongoDB commands sent, by (command, collection)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.counts[(event.command_name, str(event.command.get(event.command_name)))] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_a_groups_blob_steps_share_one_command_per_collection(ferretdb: FerretDB) -> None:
    """The delivery records (of a user without a quota limit), blob references, blobs and
    indexes of a mailbox's group are each one ``insert`` command (ADR 67), as its allocation,
    messages and outcomes are; each delivery's record, content, reference, index and outcome
    are still its own documents, and a redelivery of each answers as one."""
    name = f"store_{uuid.uuid4().hex[:12]}"
    counter = CommandCounter()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        ferretdb.url, serverSelectionTimeoutMS=5000, event_listeners=[counter]
    )
    repo = MongoStoreRepository(ferretdb.url, name, client=client, user_cache_seconds=60.0)
    await repo.open()
    try:
        await repo.deliver(Delivery("q0", "u", "", content=message(0)))
        deliveries = [Delivery(f"q{i}", "u", "", content=message(i)) for i in range(1, 9)]
        counter.counts.clear()
        tasks = await queued_behind_the_lock(repo, deliveries)
        results = await asyncio.gather(*tasks)
        inserts = {c: n for (cmd, c), n in counter.counts.items() if cmd == "insert"}
        assert inserts == {
            "store_deliveries": 1, "store_blob_refs": 1, "store_blobs": 1,
            "store_blob_index": 1, "store_messages": 1, "store_delivered": 1,
        }  # fmt: skip
        assert counter.counts[("findAndModify", "store_mailboxes")] == 1
        # Done is an outcome document each (above), not an update statement of each record.
        assert ("update", "store_deliveries") not in counter.counts
        for r, d in zip(results, deliveries, strict=True):
            assert d.content is not None
            assert await content_of(repo, "u", INBOX, r.uid) == d.content
            blob_id = hashlib.sha256(d.content).hexdigest()
            assert await repo.blob_refcount(blob_id) == 1
            assert await repo.blobs.get_index(blob_id) is not None
            again = await repo.deliver(d)
            assert (again.duplicate, again.created, again.uid) == (True, False, r.uid)
    finally:
        await client.drop_database(name)
        await repo.close()


async def test_a_chunked_content_takes_its_blob_step_before_joining_its_group(
    mongo_repo: MongoStoreRepository,
) -> None:
    """A content of several chunks is written by its own Deliver before it queues for the
    mailbox's writer, so its chunk writes never hold back a group of small messages (ADR 67);
    a one-chunk content's blob step is the writer's."""
    repo = mongo_repo
    seen: list[tuple[bool, bool]] = []
    write_grouped = repo._write_grouped

    async def spy(pending: Any) -> Any:
        chunked = pending.source is not None and pending.source.chunks > 1
        seen.append((chunked, pending.referenced))
        return await write_grouped(pending)

    repo._write_grouped = spy  # type: ignore[method-assign]
    await repo.provision_user("u")
    big, small = message(1, b"x" * 300_000), message(2)
    results = await asyncio.gather(
        repo.deliver(Delivery("q1", "u", "", content=big)),
        repo.deliver(Delivery("q2", "u", "", content=small)),
    )
    assert sorted(seen) == [(False, False), (True, True)]
    for r, content in zip(results, (big, small), strict=True):
        assert r.created and await content_of(repo, "u", INBOX, r.uid) == content


async def test_the_outcomes_collection_exists_from_the_start(
    mongo_repo: MongoStoreRepository,
) -> None:
    """Created by ``open`` though nothing was delivered yet: the operator's GIN script, run
    after the store's first start, skips collections that do not exist (pg_indexes.py)."""
    names = await mongo_repo._delivered.database.list_collection_names()
    assert "store_delivered" in names
    # So does every collection the script lists (store_blobs and store_blob_index were made
    # only by their first insert, after the script had run, and missed their GIN indexes).
    assert {c for c, _ in pg_indexes.FIELDS} <= set(names)
    await mongo_repo.open()  # a second start finds them there


async def test_a_record_marked_done_in_place_still_answers(
    mongo_repo: MongoStoreRepository,
) -> None:
    """Before ADR 67 a delivery was marked done in its record, not by an outcome document:
    such a record still answers a redelivery, also once its message is gone."""
    repo = mongo_repo
    d = Delivery("q1", "u", "", content=message(1))
    first = await repo.deliver(d)
    did = delivery_key("q1", "u", INBOX)
    outcome = await repo._delivered.find_one({"_id": did})
    assert outcome is not None and (outcome["uid"], outcome["modseq"]) == (
        first.uid, first.modseq,
    )  # fmt: skip
    await repo._delivered.delete_one({"_id": did})
    await repo._deliveries.update_one(
        {"_id": did}, {"$set": {"state": "done", "uid": first.uid, "modseq": first.modseq}}
    )
    await repo._messages.delete_one({"_id": did})  # gone since (its tombstone collected)
    again = await repo.deliver(d)
    assert (again.duplicate, again.created, again.uid) == (True, False, first.uid)
    assert (await repo.list_messages("u", INBOX, 0, 10))[0] == []


async def test_a_caller_gone_mid_group_leaves_the_group_written(
    mongo_repo: MongoStoreRepository,
) -> None:
    """A delivery's caller cancelled (its deadline) while its group is being written: the
    group is still written by the mailbox's writer, the others are answered, and the
    cancelled delivery's retry finds its message done (ADR 55). A caller gone before its
    delivery was taken leaves the queue and writes nothing."""
    repo = mongo_repo
    await repo.deliver(Delivery("q0", "u", "", content=message(0)))
    entered = asyncio.Event()
    release = asyncio.Event()
    insert = repo._step_insert_messages

    async def slow(records: list[Any]) -> Any:
        entered.set()
        await release.wait()
        return await insert(records)

    repo._step_insert_messages = slow  # type: ignore[method-assign]
    deliveries = [Delivery(f"q{i}", "u", "", content=message(i)) for i in range(1, 6)]
    tasks = await queued_behind_the_lock(repo, deliveries)
    await entered.wait()  # the group of five is being written
    late = asyncio.create_task(repo.deliver(Delivery("q9", "u", "", content=message(9))))
    box = await repo._mailbox_doc("u", INBOX)
    for _ in range(3000):  # queued behind the group being written
        if repo._groups._queued.get(box["_id"]):
            break
        await asyncio.sleep(0.01)
    tasks[0].cancel()  # taken already: its group goes on
    late.cancel()  # not taken: withdrawn
    release.set()
    repo._step_insert_messages = insert  # type: ignore[method-assign]
    outcomes = await asyncio.gather(*tasks, late, return_exceptions=True)
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert isinstance(outcomes[-1], asyncio.CancelledError)
    answered = [o for o in outcomes[1:-1] if isinstance(o, DeliverResult)]
    assert len(answered) == 4 and all(r.created for r in answered)
    retry = await repo.deliver(deliveries[0])
    assert retry.duplicate and retry.uid not in {r.uid for r in answered}
    msgs, _ = await repo.list_messages("u", INBOX, 0, 100)
    assert len(msgs) == 6  # q0 and the group of five; q9 was never written
    assert await content_of(repo, "u", INBOX, retry.uid) == deliveries[0].content
    doc = await repo._mailboxes.find_one({"user": "u", "name": INBOX})
    assert doc is not None and not doc.get("pending")


async def test_crash_in_the_middle_of_a_grouped_insert_loses_and_duplicates_nothing(
    mongo_repo: MongoStoreRepository,
) -> None:
    """The store dies after a group's allocation with only part of its messages inserted
    (insert_many is not atomic): each delivery's retry resumes on its own, the inserted ones
    keep their UIDs, the others take new ones above every UID shown, no message is lost or
    doubled, and the retries clear the marks the dead group left."""
    repo = mongo_repo
    await repo.deliver(Delivery("q0", "u", "", content=message(0)))
    before = await repo.get_mailbox("u", INBOX)
    insert = repo._step_insert_messages

    async def half_then_die(records: list[Any]) -> Any:
        repo._step_insert_messages = insert  # type: ignore[method-assign]
        await insert(records[: len(records) // 2])
        raise Crash("_step_insert_messages")

    repo._step_insert_messages = half_then_die  # type: ignore[method-assign]
    deliveries = [Delivery(f"q{i}", "u", "", content=message(i)) for i in range(1, 9)]
    tasks = await queued_behind_the_lock(repo, deliveries)
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, Crash) for o in outcomes)  # every delivery of the group failed
    kept = {m.uid for m in (await repo.list_messages("u", INBOX, 0, 100))[0]}
    assert len(kept) == 1 + 4  # q0 and the half inserted before the crash
    # A killed process would not have cleared the group's marks: put them back as it leaves
    # them (this one cleared them on the exception).
    marks = {
        f"{watermark.FIELD}.{delivery_mark(delivery_key(d.queue_id, 'u', INBOX))}": (
            watermark.mark(before.highestmodseq + 1, before.uidnext, time.time())
        )
        for d in deliveries
    }
    await repo._mailboxes.update_one({"user": "u", "name": INBOX}, {"$set": marks})
    held = await repo.get_mailbox("u", INBOX)
    assert (held.uidnext, held.highestmodseq) == (before.uidnext, before.highestmodseq)

    retried = await asyncio.gather(*(repo.deliver(d) for d in deliveries))
    assert all(r.duplicate for r in retried)
    uids = {r.uid for r in retried}
    assert len(uids) == 8 and len(uids & kept) == 4  # the inserted half kept its UIDs
    assert min(uids - kept) > max(kept)  # the rest above every UID shown
    msgs, _ = await repo.list_messages("u", INBOX, 0, 100)
    assert len(msgs) == 9
    for r, d in zip(retried, deliveries, strict=True):
        assert d.content is not None
        assert await content_of(repo, "u", INBOX, r.uid) == d.content
        assert await repo.blob_refcount(hashlib.sha256(d.content).hexdigest()) == 1
    doc = await repo._mailboxes.find_one({"user": "u", "name": INBOX})
    assert doc is not None and not doc.get("pending")  # each retry cleared its own mark
    after = await repo.get_mailbox("u", INBOX)
    assert after.uidnext == max(uids) + 1


async def test_a_dead_writers_pending_mark_holds_readers_back_then_expires(
    mongo_repo: MongoStoreRepository,
) -> None:
    """What a store process killed between allocating and writing leaves on the mailbox (the
    counters taken, the pending mark, no message): readers report nothing at or above the
    mark until it goes stale, then move on; the next writer removes it (watermark.py)."""
    repo = mongo_repo
    await repo.deliver(Delivery("q1", "u", "", content=message(1)))
    before = await repo.get_mailbox("u", INBOX)
    boxes = repo._mailboxes  # the state a dead writer leaves, written directly
    await boxes.update_one(
        {"user": "u", "name": INBOX},
        {
            "$inc": {"uidnext": 1, "highestmodseq": 1},
            "$set": {"pending.dead": watermark.mark(before.highestmodseq + 1, 2, time.time())},
        },
    )
    await repo.deliver(Delivery("q2", "u", "", content=message(2)))  # UID 3, above the hole
    held = await repo.get_mailbox("u", INBOX)
    assert (held.uidnext, held.highestmodseq) == (before.uidnext, before.highestmodseq)
    assert (await repo.get_changes("u", INBOX, before.highestmodseq)).changed == []
    assert [m.uid for m in (await repo.list_messages("u", INBOX, 0, 10))[0]] == [1]

    # The same mark, as it is once its writer has been dead longer than STALE_SECONDS.
    aged = time.time() - watermark.STALE_SECONDS - 1
    await boxes.update_one({"user": "u", "name": INBOX}, {"$set": {"pending.dead.t": aged}})
    changes = await repo.get_changes("u", INBOX, before.highestmodseq)
    assert [m.uid for m in changes.changed] == [3]
    assert changes.highestmodseq == (await repo.get_mailbox("u", INBOX)).highestmodseq
    await repo.store_flags("u", INBOX, [3], FlagsMode.ADD, ["\\Seen"])
    doc = await boxes.find_one({"user": "u", "name": INBOX})
    assert doc is not None and not doc.get("pending")


async def test_expunge_crash_is_finished_by_next_expunge(
    mongo_repo: MongoStoreRepository,
) -> None:
    repo = mongo_repo
    content = message(1)
    blob_id = hashlib.sha256(content).hexdigest()
    await repo.deliver(Delivery("q1", "u", "", content=content))
    await repo.deliver(Delivery("q2", "u", "", content=message(2)))
    await repo.store_flags("u", INBOX, [1], FlagsMode.ADD, ["\\Deleted"])
    crash_after(repo.blobs, "release")
    with pytest.raises(Crash):
        await repo.expunge("u", INBOX)
    # Tombstoned: gone for every reader, and its reference already dropped.
    msgs, _ = await repo.list_messages("u", INBOX, 0, 10)
    assert [m.uid for m in msgs] == [2]
    assert await repo.blob_refcount(blob_id) is None
    # The next Expunge finishes the leftover and reports it.
    assert (await repo.expunge("u", INBOX)).uids == [1]
    assert (await repo.expunge("u", INBOX)).uids == []
    assert (await repo.get_mailbox("u", INBOX)).messages == 1


async def test_one_chunk_blob_is_one_document(mongo_repo: MongoStoreRepository) -> None:
    """Up to one chunk, a blob's bytes are in its own document, written complete at once; a
    bigger one is written as chunks and then completed. Both read back whole."""
    repo = mongo_repo
    small, big = message(1, b"s" * 1_000), message(2, b"b" * 300_000)
    for qid, content in (("q1", small), ("q2", big)):
        await repo.deliver(Delivery(qid, "u", "", content=content))
    small_doc = await repo.blobs.blobs.find_one({"_id": hashlib.sha256(small).hexdigest()})
    big_doc = await repo.blobs.blobs.find_one({"_id": hashlib.sha256(big).hexdigest()})
    assert small_doc is not None and big_doc is not None
    assert (small_doc["state"], bytes(small_doc["data"])) == (COMPLETE, small)
    assert big_doc["state"] == COMPLETE and "data" not in big_doc
    assert await repo.blobs.chunks.count_documents({"blob": small_doc["key"]}) == 0
    assert await repo.blobs.chunks.count_documents({"blob": big_doc["key"]}) == 2
    assert await content_of(repo, "u", INBOX, 1) == small
    assert await content_of(repo, "u", INBOX, 2) == big
    # A lookup of the blob's state does not carry its bytes.
    found = await repo.blobs.find(small_doc["_id"])
    assert found is not None and "data" not in found


@pytest.mark.parametrize("size", [600_000, 1_000], ids=["three-chunks", "one-chunk"])
async def test_deleter_crash_is_taken_over_by_writer(
    mongo_repo: MongoStoreRepository, size: int
) -> None:
    """A deleter that died after marking a blob 'deleting' (and maybe removing chunks) does not
    block a later delivery of the same content, which writes a new incarnation."""
    repo = mongo_repo
    content = message(1, b"y" * size)
    blob_id = hashlib.sha256(content).hexdigest()
    await repo.deliver(Delivery("q1", "u", "", content=content))
    await repo.store_flags("u", INBOX, [1], FlagsMode.ADD, ["\\Deleted"])

    async def die(*_: Any) -> bool:
        doc = await repo.blobs.blobs.find_one_and_update(
            {"_id": blob_id, "state": COMPLETE},
            {"$set": {"state": DELETING, "deleting_at": 0.0}},  # long ago: stale
        )
        assert doc is not None
        await repo.blobs.chunks.delete_one({"blob": doc["key"], "n": 1})  # half deleted
        raise Crash("deleter")

    repo.blobs.delete_if_unreferenced = die  # type: ignore[method-assign,assignment]
    with pytest.raises(Crash):
        await repo.expunge("u", INBOX)
    del repo.blobs.delete_if_unreferenced
    r = await repo.deliver(Delivery("q2", "v", "", content=content))
    assert await content_of(repo, "v", INBOX, r.uid) == content
    assert await repo.blob_refcount(blob_id) == 1


async def test_referenced_blob_survives_racing_deleter(mongo_repo: MongoStoreRepository) -> None:
    """The deleter re-counts references after marking a blob 'deleting' and gives it back."""
    repo = mongo_repo
    content = message(1)
    blob_id = hashlib.sha256(content).hexdigest()
    await repo.deliver(Delivery("q1", "u", "", content=content))
    # A deleter that counted zero just before this reference appeared marks and re-checks:
    await repo.blobs.blobs.update_one({"_id": blob_id}, {"$set": {"state": COMPLETE}})
    assert not await repo.blobs.delete_if_unreferenced(blob_id)
    assert (await repo.blobs.find(blob_id) or {}).get("state") == COMPLETE
    assert await content_of(repo, "u", INBOX, 1) == content


def crash_before(obj: Any, name: str) -> None:
    """Make ``obj.name`` 'die' before doing anything, once."""
    original: Callable[..., Awaitable[Any]] = getattr(obj, name)

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        setattr(obj, name, original)
        raise Crash(name)

    setattr(obj, name, wrapper)


async def live_uids(repo: MongoStoreRepository, user: str, mailbox: str) -> list[int]:
    return [m.uid for m in (await repo.list_messages(user, mailbox, 0, 100))[0]]


@pytest.mark.parametrize("step", ["_allocate", "_tombstone_sources"])
async def test_move_interrupted_is_rolled_forward(
    mongo_repo: MongoStoreRepository, step: str
) -> None:
    """A MOVE that died half-way (UIDs taken but nothing copied; or copied but the sources
    not expunged) is finished by the user's next operation: every message ends up exactly once,
    in the destination, holding one blob reference."""
    repo = mongo_repo
    repo.intent_lease_seconds = 0.0  # the crashed owner's lease is over at once
    contents = [message(i) for i in range(3)]
    for i, content in enumerate(contents):
        await repo.deliver(Delivery(f"q{i}", "u", "", content=content))
    if step == "_allocate":
        calls = 0
        original = repo._allocate

        async def allocate_then_die(*args: Any) -> tuple[int, int]:
            nonlocal calls
            calls += 1
            result = await original(*args)
            if calls == 1:
                raise Crash("allocate")
            return result

        repo._allocate = allocate_then_die  # type: ignore[method-assign,assignment]
    else:
        crash_before(repo, step)
    with pytest.raises(Crash):
        await repo.move_messages("u", INBOX, [1, 2, 3], "Archive")
    await repo.provision_user("u")  # the next operation of the user (an IMAP login)
    assert await live_uids(repo, "u", INBOX) == []
    archived = (await repo.list_messages("u", "Archive", 0, 10))[0]
    assert len(archived) == 3
    for m, content in zip(archived, contents, strict=True):
        assert await content_of(repo, "u", "Archive", m.uid) == content
        assert await repo.blob_refcount(m.blob_id) == 1
    assert await repo._intents.count_documents({}) == 0


async def test_delete_interrupted_is_rolled_forward(mongo_repo: MongoStoreRepository) -> None:
    repo = mongo_repo
    repo.intent_lease_seconds = 0.0
    await repo.provision_user("u")
    await repo.create_mailbox("u", "Box")
    blob_ids = []
    for i in range(3):
        content = message(i)
        blob_ids.append(hashlib.sha256(content).hexdigest())
        await repo.deliver(Delivery(f"q{i}", "u", "Box", content=content))
    crash_after(repo.blobs, "release")  # dies after dropping the first reference
    with pytest.raises(Crash):
        await repo.delete_mailbox("u", "Box")
    await repo.create_mailbox("u", "Other")  # any mailbox operation of the user finishes it
    for blob_id in blob_ids:
        assert await repo.blob_refcount(blob_id) is None
    assert "Box" not in [b.name for b in await repo.list_mailboxes("u")]
    assert await repo._messages.count_documents({"user": "u"}) == 0
    assert (await repo.create_mailbox("u", "Box")).mailbox.messages == 0


async def test_rename_interrupted_is_rolled_forward(mongo_repo: MongoStoreRepository) -> None:
    repo = mongo_repo
    repo.intent_lease_seconds = 0.0
    await repo.provision_user("u")
    await repo.create_mailbox("u", "a/b")
    await repo.set_subscription("u", "a/b", True)
    crash_before(repo, "_subscribe")  # mailboxes renamed, subscriptions not yet
    with pytest.raises(Crash):
        await repo.rename_mailbox("u", "a", "z")
    await repo.provision_user("u")
    names = {b.name for b in await repo.list_mailboxes("u")}
    assert {"z", "z/b"} <= names and not {"a", "a/b"} & names
    subs = await repo.list_subscriptions("u")
    assert "z/b" in subs and "a/b" not in subs


async def test_messages_stored_before_header_indexing(mongo_repo: MongoStoreRepository) -> None:
    """Message documents without indexed header fields (stored by an older store) are searched
    by the evaluator, then get the fields, so the next search matches them in the query."""
    repo = mongo_repo
    for n in (1, 2, 3):
        await repo.deliver(Delivery(f"q{n}", "u", "", content=message(n)))
    await repo._messages.update_many({"uid": {"$in": [2, 3]}}, {"$unset": {"sh": "", "shv": ""}})
    subject = store_pb2.SearchKey(header=store_pb2.HeaderMatch(name="subject", value="TEST 2"))
    either = store_pb2.SearchKey()
    getattr(either, "or").keys.extend([subject, store_pb2.SearchKey(flag_set="\\Seen")])
    for key in (subject, either):
        assert (await repo.search("u", INBOX, key)).uids == [2]
    healed = await repo._messages.find({"user": "u"}, {"uid": 1, "sh": 1, "shv": 1}).to_list()
    assert sorted(d["uid"] for d in healed if d.get("shv") == HEADERS_VERSION) == [1, 2, 3]
    assert "subject:test 2" in next(d["sh"] for d in healed if d["uid"] == 2)
