"""A store replica keeps the mailbox documents its Deliveries read (ADR 60) against a real
FerretDB 1.24: a mailbox renamed, deleted, recreated or made \\Noselect through another replica
is never written through a kept document; the Deliver reads it again and goes where a fresh
read would have sent it. Also the counts (SELECT, STATUS, LIST-STATUS) read in one pass."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
from pymongo import AsyncMongoClient

from postmesh.store import leftovers as lo
from postmesh.store.errors import FailedPrecondition, NotFound
from postmesh.store.model import INBOX, Delivery, FlagsMode
from postmesh.store.mongodb import MongoStoreRepository
from postmesh.store.mongodb.messages import BY_UID
from tests.integration.infra import FerretDB


def message(n: int, size: int = 600) -> bytes:
    head = f"Subject: kept {n}\r\nMessage-ID: <kept-{n}@example.org>\r\n\r\n".encode()
    return head + b"y" * (size - len(head))


@pytest.fixture
def database() -> str:
    return f"store_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def replicas(
    ferretdb: FerretDB, database: str
) -> AsyncIterator[tuple[MongoStoreRepository, ...]]:
    """Two store repositories on one database, each with its own client and in-process state."""
    name = database
    repos = [MongoStoreRepository(ferretdb.url, name) for _ in range(2)]
    for repo in repos:
        await repo.open()
    yield tuple(repos)
    for repo in repos:
        await repo.close()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(ferretdb.url)
    await client.drop_database(name)
    await client.close()


async def test_a_mailbox_renamed_and_recreated_elsewhere_gets_the_next_delivery(
    replicas: tuple[MongoStoreRepository, MongoStoreRepository],
) -> None:
    a, b = replicas
    await a.provision_user("u")
    await a.create_mailbox("u", "Lists")
    first = await a.deliver(Delivery("q1", "u", "Lists", content=message(1)))
    await b.rename_mailbox("u", "Lists", "Old")
    fresh = (await b.create_mailbox("u", "Lists")).mailbox
    second = await a.deliver(Delivery("q2", "u", "Lists", content=message(2)))
    assert (second.mailbox, second.uidvalidity, second.uid) == ("Lists", fresh.uidvalidity, 1)
    assert first.uidvalidity != fresh.uidvalidity
    old = await a.get_mailbox("u", "Old")
    assert (old.messages, (await a.get_mailbox("u", "Lists")).messages) == (1, 1)
    # The retried write left a done record: a redelivery answers as the first did.
    again = await a.deliver(Delivery("q2", "u", "Lists", content=message(2)))
    assert (again.duplicate, again.uid, again.uidvalidity) == (True, 1, fresh.uidvalidity)
    assert old.uidnext == 2  # nothing was allocated in the renamed mailbox


async def test_a_mailbox_deleted_elsewhere_is_not_found(
    replicas: tuple[MongoStoreRepository, MongoStoreRepository],
) -> None:
    a, b = replicas
    await a.provision_user("u")
    await a.create_mailbox("u", "Gone")
    await a.deliver(Delivery("q1", "u", "Gone", content=message(1)))
    await b.delete_mailbox("u", "Gone")
    with pytest.raises(NotFound, match="Gone"):
        await a.deliver(Delivery("q2", "u", "Gone", content=message(2)))
    # Created again: the next delivery of the same queue id goes there.
    await b.create_mailbox("u", "Gone")
    result = await a.deliver(Delivery("q2", "u", "Gone", content=message(2)))
    assert (result.uid, (await a.get_mailbox("u", "Gone")).messages) == (1, 1)


async def test_a_mailbox_made_noselect_elsewhere_refuses_the_delivery(
    replicas: tuple[MongoStoreRepository, MongoStoreRepository],
) -> None:
    a, b = replicas
    await a.provision_user("u")
    await a.create_mailbox("u", "Parent")
    await a.create_mailbox("u", "Parent/Child")
    await a.deliver(Delivery("q1", "u", "Parent", content=message(1)))
    # DELETE of a mailbox with inferiors keeps it as \Noselect (RFC 9051 section 6.3.5).
    assert (await b.delete_mailbox("u", "Parent")).kept_as_noselect
    with pytest.raises(FailedPrecondition, match="Noselect"):
        await a.deliver(Delivery("q2", "u", "Parent", content=message(2)))


async def test_counts_of_one_mailbox_and_of_all_match_the_messages(
    replicas: tuple[MongoStoreRepository, MongoStoreRepository],
) -> None:
    a, _ = replicas
    await a.provision_user("u")
    await a.create_mailbox("u", "Other")
    sizes = [600, 700, 800, 900]
    for i, size in enumerate(sizes):
        await a.deliver(Delivery(f"i{i}", "u", INBOX, content=message(i, size)))
    await a.deliver(Delivery("o1", "u", "Other", content=message(9, 1000), flags=("\\Seen",)))
    await a.store_flags("u", INBOX, [1, 2], FlagsMode.ADD, ("\\Seen",))
    await a.store_flags("u", INBOX, [2, 3], FlagsMode.ADD, ("\\Deleted",))
    inbox = await a.get_mailbox("u", INBOX)
    assert (inbox.messages, inbox.unseen, inbox.deleted, inbox.size) == (4, 2, 2, sum(sizes))
    listed = {m.name: m for m in await a.list_mailboxes("u")}
    assert (listed[INBOX].messages, listed[INBOX].unseen, listed[INBOX].size) == (4, 2, 3000)
    assert (listed["Other"].messages, listed["Other"].unseen, listed["Other"].size) == (1, 0, 1000)


async def view(repo: MongoStoreRepository, mailbox: str) -> tuple[Any, ...]:
    """What SELECT reads of a mailbox: its counts and its (uid, modseq, flags) listing; the
    summaries FETCH FLAGS / RFC822.SIZE / INTERNALDATE reads are checked to match them."""
    box = await repo.get_mailbox("u", mailbox)
    page = await repo.list_flags("u", mailbox, 0, 1000)
    rows = [
        (uid, modseq, page.flag_sets[i])
        for uid, modseq, i in zip(page.uids, page.modseqs, page.flag_index, strict=True)
    ]
    listed, more = await repo.list_messages("u", mailbox, 0, 1000)
    assert not more and [(m.uid, m.modseq, m.flags) for m in listed] == rows
    assert sum(m.size for m in listed) == box.size
    return (box.messages, box.unseen, box.deleted, box.size, box.highestmodseq), rows, listed


async def test_a_kept_snapshot_follows_every_change_made_through_another_replica(
    ferretdb: FerretDB,
    database: str,
    replicas: tuple[MongoStoreRepository, MongoStoreRepository],
) -> None:
    """Replica a keeps its snapshots of INBOX and Other (ADR 60); b delivers, flags, expunges,
    copies and moves; after each step a's view equals the view of a replica that has never
    seen either mailbox (it reads every message)."""
    a, b = replicas
    await a.provision_user("u")
    await a.create_mailbox("u", "Other")
    for i in range(6):
        await b.deliver(Delivery(f"q{i}", "u", INBOX, content=message(i, 600 + i)))
    steps: list[Callable[[], Awaitable[object]]] = [
        lambda: b.store_flags("u", INBOX, [1, 2, 3], FlagsMode.ADD, ("\\Seen",)),
        lambda: b.store_flags("u", INBOX, [2, 4], FlagsMode.ADD, ("\\Deleted", "$Junk")),
        lambda: b.deliver(Delivery("q9", "u", INBOX, content=message(9, 900))),
        lambda: b.expunge("u", INBOX, None),
        lambda: b.copy_messages("u", INBOX, [1, 3], "Other"),
        lambda: b.move_messages("u", INBOX, [5, 6], "Other"),
        lambda: b.store_flags("u", "Other", [1], FlagsMode.REPLACE, ()),
        lambda: b.store_flags("u", INBOX, [1], FlagsMode.REMOVE, ("\\Seen",)),
    ]
    assert await view(a, INBOX) == await view(b, INBOX)
    for step in steps:
        await step()
        fresh = MongoStoreRepository(ferretdb.url, database)
        await fresh.open()
        try:
            for mailbox in (INBOX, "Other"):
                assert await view(a, mailbox) == await view(fresh, mailbox), (step, mailbox)
        finally:
            await fresh.close()
    counts, rows, _ = await view(a, INBOX)
    assert [uid for uid, _, _ in rows] == [1, 3, 7] and counts[:3] == (3, 2, 0)


async def test_a_snapshot_is_taken_again_once_the_janitor_removed_tombstones_it_needed(
    ferretdb: FerretDB,
    database: str,
    replicas: tuple[MongoStoreRepository, MongoStoreRepository],
) -> None:
    a, b = replicas
    await a.provision_user("u")
    for i in range(4):
        await a.deliver(Delivery(f"q{i}", "u", INBOX, content=message(i)))
    before = await view(a, INBOX)  # kept by a
    await b.store_flags("u", INBOX, [2, 3], FlagsMode.ADD, ("\\Deleted",))
    await b.expunge("u", INBOX, None)
    now = time.time()
    # Every tombstone is old enough for the janitor: it raises the floor and removes them.
    assert await b.collect(lo.TOMBSTONES, lo.Cutoffs(now, now + 60, 0.0, 0.0), 100) == 2
    after = await view(a, INBOX)
    assert [uid for uid, _, _ in after[1]] == [1, 4] and after[0][0] == 2
    assert after != before


async def test_a_flag_change_that_does_not_bump_the_counter_is_still_seen(
    ferretdb: FerretDB,
    database: str,
    replicas: tuple[MongoStoreRepository, MongoStoreRepository],
) -> None:
    """What a store replica of an earlier version does on a STORE (ADR 60): a new MODSEQ for the
    mailbox and the message, no `changes` counter. Written here as that version wrote it."""
    a, _ = replicas
    await a.provision_user("u")
    for i in range(3):
        await a.deliver(Delivery(f"q{i}", "u", INBOX, content=message(i)))
    await view(a, INBOX)  # kept by a
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(ferretdb.url)
    try:
        db = client[database]
        box = await db["store_mailboxes"].find_one_and_update(
            {"user": "u", "name": INBOX}, {"$inc": {"highestmodseq": 1}}
        )
        assert box is not None
        modseq = int(box["highestmodseq"]) + 1
        await db["store_messages"].update_one(
            {"mailbox_id": box["_id"], "uid": 2}, {"$set": {"flags": ["\\Seen"], "modseq": modseq}}
        )
    finally:
        await client.close()
    await a.deliver(Delivery("q3", "u", INBOX, content=message(3)))
    counts, rows, _ = await view(a, INBOX)
    assert counts[:2] == (4, 3) and rows[1] == (2, modseq, ("\\Seen",))


class _Reads:
    """Counts the snapshot's reads of message documents (find_one by UID, find by MODSEQ)."""

    def __init__(self, repo: MongoStoreRepository) -> None:
        self.by_uid = self.queries = 0
        messages = repo._snapshots._messages
        find_one, find = messages.find_one, messages.find

        def counted_find_one(*args: Any, **kwargs: Any) -> Any:
            self.by_uid += 1
            return find_one(*args, **kwargs)

        def counted_find(*args: Any, **kwargs: Any) -> Any:
            self.queries += 1
            return find(*args, **kwargs)

        repo._snapshots._messages = cast(Any, _Wrapped(messages, counted_find_one, counted_find))


class _Wrapped:
    def __init__(self, inner: Any, find_one: Any, find: Any) -> None:
        self._inner, self.find_one, self.find = inner, find_one, find

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_new_messages_this_replica_wrote_are_not_read_back(
    ferretdb: FerretDB,
    database: str,
    replicas: tuple[MongoStoreRepository, MongoStoreRepository],
) -> None:
    """ADR 63: a replica's snapshot takes the messages its own Delivers (grouped or not) and
    Appends inserted from what it inserted, however many (past the 64 read by UID at most);
    those another replica wrote are still read. After each step the view equals that of a
    replica that reads everything."""
    a, b = replicas
    await a.provision_user("u")
    await a.deliver(Delivery("q0", "u", INBOX, content=message(0)))
    await view(a, INBOX)  # kept by a
    reads = _Reads(a)

    async def same_as_fresh() -> None:
        fresh = MongoStoreRepository(ferretdb.url, database)
        await fresh.open()
        try:
            assert await view(a, INBOX) == await view(fresh, INBOX)
        finally:
            await fresh.close()

    # 80 at once: grouped under the mailbox lock (grouping.py), more than NEW_BY_UID.
    await asyncio.gather(
        *(
            a.deliver(Delivery(f"q{i}", "u", INBOX, content=message(i, 600 + i)))
            for i in range(1, 81)
        )
    )
    await same_as_fresh()
    assert (reads.by_uid, reads.queries) == (0, 0)
    await a.append("u", INBOX, ("\\Seen",), 1_700_000_000, 700, _chunks(message(99, 700)))
    await same_as_fresh()
    assert (reads.by_uid, reads.queries) == (0, 0)
    # Written through b: a reads those two by UID; its own third is not read.
    await b.deliver(Delivery("b1", "u", INBOX, content=message(101)))
    await b.deliver(Delivery("b2", "u", INBOX, content=message(102)))
    await a.deliver(Delivery("q200", "u", INBOX, content=message(200)))
    await same_as_fresh()
    assert (reads.by_uid, reads.queries) == (2, 0)
    # A flag change (through a) takes the MODSEQ query, as before.
    await a.store_flags("u", INBOX, [3], FlagsMode.ADD, ("\\Flagged",))
    await same_as_fresh()
    assert reads.queries == 1
    counts, rows, _ = await view(a, INBOX)
    assert counts[0] == 85 and [uid for uid, _, _ in rows] == list(range(1, 86))


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


class _MessageQueries:
    """Counts a replica's reads of message documents by MODSEQ range (GetChanges, snapshot
    catch-up), by UID, and of a whole mailbox (a snapshot taken)."""

    def __init__(self, repo: MongoStoreRepository) -> None:
        self.by_modseq = self.by_uid = self.whole = 0
        for owner in (repo, repo._snapshots):
            messages = owner._messages
            owner._messages = cast(
                Any, _Wrapped(messages, self._count(messages.find_one), self._count(messages.find))
            )

    def _count(self, read: Any) -> Any:
        def counted(query: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            if "modseq" in query:
                self.by_modseq += 1
            elif "uid" in query:
                self.by_uid += 1
            else:
                self.whole += 1
            return read(query, *args, **kwargs)

        return counted

    def total(self) -> tuple[int, int, int]:
        return self.by_modseq, self.by_uid, self.whole


async def test_get_changes_reads_messages_only_when_something_else_than_new_mail_came(
    ferretdb: FerretDB,
    database: str,
    replicas: tuple[MongoStoreRepository, MongoStoreRepository],
) -> None:
    """GetChanges, what every NOOP, IDLE wake-up and FETCH poll of a selected mailbox asks:
    with nothing new it reads no message; after new messages alone it answers from the
    mailbox's snapshot (the new ones read by UID); a flag change or an EXPUNGE made through
    another replica takes the MODSEQ query (FerretDB 1.24 decodes the whole mailbox for it).
    Every answer equals that of a replica that never kept a snapshot."""
    a, b = replicas
    await a.provision_user("u")
    for i in range(3):
        await a.deliver(Delivery(f"q{i}", "u", INBOX, content=message(i)))
    since = (await a.get_changes("u", INBOX, 0)).highestmodseq  # a keeps a snapshot now
    reads = _MessageQueries(a)

    async def changes_as_fresh(since: int) -> tuple[list[int], list[int], int]:
        fresh = MongoStoreRepository(ferretdb.url, database)
        await fresh.open()
        try:
            expected = await fresh.get_changes("u", INBOX, since)
        finally:
            await fresh.close()
        got = await a.get_changes("u", INBOX, since)
        assert got == expected
        return [m.uid for m in got.changed], got.expunged, got.highestmodseq

    assert await changes_as_fresh(since) == ([], [], since)
    assert reads.total() == (0, 0, 0)  # a NOOP with nothing new: no message read

    await b.deliver(Delivery("b1", "u", INBOX, content=message(11)))
    await b.deliver(Delivery("b2", "u", INBOX, content=message(12)))
    changed, expunged, since = await changes_as_fresh(since)
    assert (changed, expunged) == ([4, 5], [])
    assert reads.total() == (0, 2, 0)  # the two new ones, by UID

    await b.store_flags("u", INBOX, [1], FlagsMode.ADD, ("\\Seen",))
    changed, expunged, since = await changes_as_fresh(since)
    assert (changed, expunged) == ([1], [])
    assert reads.by_modseq == 2  # the snapshot's catch-up, then GetChanges' own query

    await b.store_flags("u", INBOX, [2, 4], FlagsMode.ADD, ("\\Deleted",))
    await b.expunge("u", INBOX, None)
    changed, expunged, since = await changes_as_fresh(since)
    assert (changed, expunged) == ([], [2, 4])

    # From the answer after those changes on, new mail alone is answered from the snapshot.
    before = reads.by_modseq
    await b.deliver(Delivery("b3", "u", INBOX, content=message(13)))
    changed, expunged, since = await changes_as_fresh(since)
    assert (changed, expunged, reads.by_modseq) == ([6], [], before)
    # A STORE of more UIDs than are read one by one takes the $in query, and is seen too.
    uids = list(range(1, BY_UID + 4))
    await b.store_flags("u", INBOX, uids, FlagsMode.ADD, ("$Label1",))
    changed, expunged, since = await changes_as_fresh(since)
    assert (changed, expunged) == ([1, 3, 5, 6], [])
