"""Contract: delivery, idempotency, blobs, flags, expunge, listing, input errors."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from postmesh.store.contract_suite.helpers import (
    DEFAULT_NAMES,
    SPECIAL_USES,
    MiB,
    content_of,
    deliver,
    expunge_uids,
    message,
    random_bytes,
    stream,
)
from postmesh.store.errors import AlreadyExists, InvalidArgument, NotFound, UnknownUser
from postmesh.store.model import BLOB_CHUNK_BYTES, INBOX, Delivery, FlagsMode
from postmesh.store.repository import StoreRepository


class DeliveryContract:
    """Deliver, idempotency, blobs, flags, expunge, listing and input errors."""

    # -- delivery, INBOX, idempotency --------------------------------------------------------

    async def test_first_delivery_provisions_the_user(self, repo: StoreRepository) -> None:
        r = await repo.deliver(Delivery("q1", "alice@example.com", "", content=message(1)))
        assert (r.uid, r.mailbox, r.duplicate, r.created, r.mailbox_created) == (
            1, INBOX, False, True, True,
        )  # fmt: skip
        assert sorted(r.created_mailboxes) == sorted(DEFAULT_NAMES)
        boxes = await repo.list_mailboxes("alice@example.com")
        assert [b.name for b in boxes] == DEFAULT_NAMES
        assert {b.name: b.special_use for b in boxes} == SPECIAL_USES
        assert all(b.subscribed and not b.noselect for b in boxes)
        (box,) = [b for b in boxes if b.name == INBOX]
        assert (box.messages, box.unseen, box.uidnext) == (1, 1, 2)
        assert box.uidvalidity == r.uidvalidity > 0
        assert box.highestmodseq >= r.modseq > 0
        assert await repo.get_mailbox("alice@example.com", "inbox") == box

    async def test_inbox_is_case_insensitive(self, repo: StoreRepository) -> None:
        r1 = await repo.deliver(Delivery("q1", "u", "inbox", content=message(1)))
        r2 = await repo.deliver(Delivery("q2", "u", "InBoX", content=message(2)))
        assert (r1.mailbox, r2.mailbox, r2.uid, r2.mailbox_created) == (INBOX, INBOX, 2, False)
        assert [b.name for b in await repo.list_mailboxes("u")] == DEFAULT_NAMES

    async def test_same_queue_id_twice_is_one_message(self, repo: StoreRepository) -> None:
        content = message(1)
        first = await repo.deliver(Delivery("q1", "u", "", content=content))
        box = await repo.get_mailbox("u", INBOX)
        again = await repo.deliver(Delivery("q1", "u", "", content=content))
        assert (again.uid, again.uidvalidity, again.duplicate, again.created) == (
            first.uid, first.uidvalidity, True, False,
        )  # fmt: skip
        msgs, _ = await repo.list_messages("u", INBOX, 0, 100)
        assert [m.uid for m in msgs] == [first.uid]
        assert await repo.blob_refcount(msgs[0].blob_id) == 1
        assert await repo.get_mailbox("u", INBOX) == box  # no UID or MODSEQ consumed

    async def test_queue_id_is_per_user_and_mailbox(self, repo: StoreRepository) -> None:
        await repo.provision_user("u")
        a = await repo.deliver(Delivery("q1", "u", "", content=message(1)))
        b = await repo.deliver(Delivery("q1", "v", "", content=message(1)))
        c = await repo.deliver(Delivery("q1", "u", "Archive", content=message(1)))
        assert not (a.duplicate or b.duplicate or c.duplicate)
        assert (await repo.get_mailbox("u", INBOX)).messages == 1
        assert (await repo.get_mailbox("u", "Archive")).messages == 1
        assert (await repo.get_mailbox("v", INBOX)).messages == 1

    async def test_concurrent_redeliveries_make_one_message(self, repo: StoreRepository) -> None:
        content = message(1)
        results = await asyncio.gather(
            *(repo.deliver(Delivery("q1", "u", "", content=content)) for _ in range(6))
        )
        assert len({r.uid for r in results}) == 1
        assert sum(r.created for r in results) == 1
        assert sum(not r.duplicate for r in results) == 1
        msgs, _ = await repo.list_messages("u", INBOX, 0, 100)
        assert len(msgs) == 1
        assert await repo.blob_refcount(msgs[0].blob_id) == 1

    async def test_concurrent_first_deliveries_make_one_inbox(self, repo: StoreRepository) -> None:
        results = await asyncio.gather(
            *(repo.deliver(Delivery(f"q{i}", "new", "", content=message(i))) for i in range(8))
        )
        assert [b.name for b in await repo.list_mailboxes("new")] == DEFAULT_NAMES
        assert sorted(r.uid for r in results) == sorted({r.uid for r in results})
        assert len({r.uidvalidity for r in results}) == 1
        msgs, _ = await repo.list_messages("new", INBOX, 0, 100)
        assert len(msgs) == 8

    async def test_uids_and_modseqs_strictly_ascend(self, repo: StoreRepository) -> None:
        results = [
            await repo.deliver(Delivery(f"q{i}", "u", "", content=message(i))) for i in range(10)
        ]
        uids = [r.uid for r in results]
        modseqs = [r.modseq for r in results]
        assert uids == sorted(set(uids)) and uids[0] >= 1
        assert modseqs == sorted(set(modseqs))
        box = await repo.get_mailbox("u", INBOX)
        assert box.uidnext > uids[-1] and box.highestmodseq >= modseqs[-1]

    async def test_expunged_uid_is_never_reused(self, repo: StoreRepository) -> None:
        for i in range(3):
            await deliver(repo, f"q{i}", "u", message(i))
        await repo.store_flags("u", INBOX, [3], FlagsMode.ADD, ["\\Deleted"])
        assert (await repo.expunge("u", INBOX)).uids == [3]
        assert await deliver(repo, "q9", "u", message(9)) > 3

    async def test_redelivery_after_expunge_does_not_resurrect(self, repo: StoreRepository) -> None:
        content = message(1)
        uid = await deliver(repo, "q1", "u", content)
        await repo.store_flags("u", INBOX, [uid], FlagsMode.ADD, ["\\Deleted"])
        await repo.expunge("u", INBOX)
        again = await repo.deliver(Delivery("q1", "u", "", content=content))
        assert (again.duplicate, again.created, again.uid) == (True, False, uid)
        assert (await repo.list_messages("u", INBOX, 0, 10))[0] == []
        # Also when the record names a blob that is gone by now (claim check).
        blob_id = hashlib.sha256(content).hexdigest()
        assert await repo.blob_refcount(blob_id) is None
        by_blob = await repo.deliver(Delivery("q1", "u", "", blob_id=blob_id))
        assert (by_blob.duplicate, by_blob.uid) == (True, uid)

    async def test_delivery_keeps_date_flags_and_size(self, repo: StoreRepository) -> None:
        content = message(1)
        await repo.deliver(
            Delivery(
                "q1", "u", "", content=content, flags=("\\seen", "$Label1"),
                internal_date=1_700_000_000,
            )
        )  # fmt: skip
        (m,), more = await repo.list_messages("u", INBOX, 0, 10)
        assert not more
        assert m.flags == ("\\Seen", "$Label1")
        assert (m.internal_date, m.size) == (1_700_000_000, len(content))
        assert m.blob_id == hashlib.sha256(content).hexdigest()
        assert (await repo.get_mailbox("u", INBOX)).unseen == 0

    async def test_failed_delivery_leaves_nothing(self, repo: StoreRepository) -> None:
        with pytest.raises(InvalidArgument):
            await repo.deliver(Delivery("q1", "u", "", blob_id="0" * 64))
        with pytest.raises(UnknownUser):
            await repo.list_mailboxes("u")  # not provisioned by a delivery that failed
        with pytest.raises(NotFound):
            await repo.deliver(Delivery("q2", "u", "Lists", content=message(2)))
        await repo.provision_user("u")
        await repo.create_mailbox("u", "Lists")
        r = await repo.deliver(Delivery("q2", "u", "Lists", content=message(2)))
        assert (r.uid, r.duplicate, r.mailbox) == (1, False, "Lists")

    # -- blobs -------------------------------------------------------------------------------

    async def test_one_blob_for_three_users(self, repo: StoreRepository) -> None:
        content = message(1, random_bytes(600 * 1024))
        users = ["a@x", "b@x", "c@x"]
        for user in users:
            await deliver(repo, "q1", user, content)
        blob_ids = set()
        for user in users:
            (m,), _ = await repo.list_messages(user, INBOX, 0, 10)
            blob_ids.add(m.blob_id)
        (blob_id,) = blob_ids
        assert await repo.blob_refcount(blob_id) == 3
        for left, user in zip((2, 1), users, strict=False):
            await repo.store_flags(user, INBOX, [1], FlagsMode.ADD, ["\\Deleted"])
            assert (await repo.expunge(user, INBOX)).uids == [1]
            assert await repo.blob_refcount(blob_id) == left
        assert await content_of(repo, "c@x", INBOX, 1) == content
        await repo.store_flags("c@x", INBOX, [1], FlagsMode.ADD, ["\\Deleted"])
        await repo.expunge("c@x", INBOX)
        assert await repo.blob_refcount(blob_id) is None  # deleted at zero
        with pytest.raises(NotFound):
            await repo.read_blob(blob_id)
        # The same content again is stored afresh and reads back whole.
        await deliver(repo, "q2", "a@x", content)
        assert await repo.blob_refcount(blob_id) == 1
        assert await content_of(repo, "a@x", INBOX, 2) == content

    async def test_put_blob_then_deliver_by_blob_id(self, repo: StoreRepository) -> None:
        content = message(1, random_bytes(MiB + 12345, seed=3))
        info = await repo.put_blob(stream(content, 100_000))
        assert info.blob_id == hashlib.sha256(content).hexdigest()
        assert info.size == len(content)
        assert await repo.blob_refcount(info.blob_id) == 0  # pending, pinned
        assert b"".join([c async for c in await repo.read_blob(info.blob_id)]) == content
        for user in ("a", "b"):
            r = await repo.deliver(Delivery("q1", user, "", blob_id=info.blob_id))
            assert (r.uid, r.duplicate) == (1, False)
            assert await content_of(repo, user, INBOX, 1) == content
        assert await repo.blob_refcount(info.blob_id) == 2
        (m,), _ = await repo.list_messages("a", INBOX, 0, 10)
        assert (m.size, m.blob_id) == (len(content), info.blob_id)
        # An upload of the same content (an edge retrying) is the same blob.
        again = await repo.put_blob(stream(content, 65536))
        assert again == info
        assert await repo.blob_refcount(info.blob_id) == 2
        # Expunging every message keeps a blob whose upload pin has not expired.
        for user in ("a", "b"):
            await repo.store_flags(user, INBOX, [1], FlagsMode.ADD, ["\\Deleted"])
            await repo.expunge(user, INBOX)
        assert await repo.blob_refcount(info.blob_id) == 0
        r = await repo.deliver(Delivery("q2", "a", "", blob_id=info.blob_id))
        assert await content_of(repo, "a", INBOX, r.uid) == content

    async def test_inline_delivery_reuses_uploaded_blob(self, repo: StoreRepository) -> None:
        content = message(1)
        info = await repo.put_blob(stream(content, 10))
        await deliver(repo, "q1", "u", content)
        assert await repo.blob_refcount(info.blob_id) == 1

    async def test_content_round_trip_3mib(self, repo: StoreRepository) -> None:
        big = message(1, random_bytes(3 * MiB))
        small = message(2)
        exact = random_bytes(2 * BLOB_CHUNK_BYTES, seed=5)  # ends on a chunk boundary
        for i, content in enumerate((big, small, exact), 1):
            assert await deliver(repo, f"q{i}", "u", content) == i
        assert await content_of(repo, "u", INBOX, 1) == big
        assert await content_of(repo, "u", INBOX, 2) == small
        assert await content_of(repo, "u", INBOX, 3) == exact
        msgs, _ = await repo.list_messages("u", INBOX, 0, 10)
        assert [m.size for m in msgs] == [len(big), len(small), len(exact)]

    # -- flags -------------------------------------------------------------------------------

    async def test_flags_add_remove_replace(self, repo: StoreRepository) -> None:
        for i in range(3):
            await deliver(repo, f"q{i}", "u", message(i))
        base = (await repo.get_mailbox("u", INBOX)).highestmodseq

        r = await repo.store_flags("u", INBOX, [1, 2], FlagsMode.ADD, ["\\seen", "$Work"])
        assert r.changed == [1, 2]
        assert [m.flags for m in r.messages] == [("\\Seen", "$Work")] * 2
        # RFC 7162: one MODSEQ for one STORE, above everything before it.
        assert r.messages[0].modseq == r.messages[1].modseq > base
        box = await repo.get_mailbox("u", INBOX)
        assert (box.unseen, box.highestmodseq) == (1, r.messages[0].modseq)

        r2 = await repo.store_flags("u", INBOX, [1], FlagsMode.ADD, ["\\Seen"])
        assert r2.changed == [] and r2.messages[0].modseq == r.messages[0].modseq

        r3 = await repo.store_flags("u", INBOX, [1], FlagsMode.REMOVE, ["\\Seen", "\\Flagged"])
        assert r3.changed == [1] and r3.messages[0].flags == ("$Work",)
        assert r3.messages[0].modseq > r.messages[0].modseq

        r4 = await repo.store_flags("u", INBOX, [1, 3], FlagsMode.REPLACE, ["\\Answered"])
        assert [(m.uid, m.flags) for m in r4.messages] == [
            (1, ("\\Answered",)),
            (3, ("\\Answered",)),
        ]
        msgs, _ = await repo.list_messages("u", INBOX, 0, 10)
        assert [m.flags for m in msgs] == [("\\Answered",), ("\\Seen", "$Work"), ("\\Answered",)]
        assert (await repo.get_mailbox("u", INBOX)).unseen == 2

        r5 = await repo.store_flags("u", INBOX, [2, 99], FlagsMode.REPLACE, [])
        assert [(m.uid, m.flags) for m in r5.messages] == [(2, ())]  # 99 does not exist

    async def test_invalid_flags_are_refused(self, repo: StoreRepository) -> None:
        await deliver(repo, "q1", "u", message(1))
        for bad in ("\\Recent", "\\Bogus", "two words", "a]b", "", "caf\u00e9", "x" * 101):
            with pytest.raises(InvalidArgument):
                await repo.store_flags("u", INBOX, [1], FlagsMode.ADD, [bad])
        with pytest.raises(InvalidArgument):
            await repo.store_flags("u", INBOX, [], FlagsMode.ADD, ["\\Seen"])
        with pytest.raises(InvalidArgument):
            await repo.deliver(Delivery("q2", "u", "", content=b"x", flags=("\\Recent",)))

    # -- expunge -----------------------------------------------------------------------------

    async def test_expunge_removes_only_deleted(self, repo: StoreRepository) -> None:
        for i in range(6):
            await deliver(repo, f"q{i}", "u", message(i))
        await repo.store_flags("u", INBOX, [2, 4], FlagsMode.ADD, ["\\Deleted"])
        before = await repo.get_mailbox("u", INBOX)
        r = await repo.expunge("u", INBOX)
        assert r.uids == [2, 4]
        assert r.modseq > before.highestmodseq
        msgs, _ = await repo.list_messages("u", INBOX, 0, 10)
        assert [m.uid for m in msgs] == [1, 3, 5, 6]
        after = await repo.get_mailbox("u", INBOX)
        assert (after.messages, after.unseen, after.highestmodseq) == (4, 4, r.modseq)
        assert (await repo.expunge("u", INBOX)).uids == []
        with pytest.raises(NotFound):
            await repo.read_message("u", INBOX, 2)

        # UID EXPUNGE: only the named UIDs that are flagged \Deleted.
        await repo.store_flags("u", INBOX, [1, 3], FlagsMode.ADD, ["\\Deleted"])
        assert (await repo.expunge("u", INBOX, [3, 5])).uids == [3]
        msgs, _ = await repo.list_messages("u", INBOX, 0, 10)
        assert [m.uid for m in msgs] == [1, 5, 6]

    # -- listing -----------------------------------------------------------------------------

    async def test_list_messages_pages(self, repo: StoreRepository) -> None:
        for i in range(25):
            await deliver(repo, f"q{i}", "u", message(i))
        pages = []
        after, more = 0, True
        while more:
            msgs, more = await repo.list_messages("u", INBOX, after, 10)
            pages.append([m.uid for m in msgs])
            after = msgs[-1].uid
        assert pages == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
        assert await repo.list_messages("u", INBOX, 25, 10) == ([], False)
        exact, more = await repo.list_messages("u", INBOX, 15, 10)
        assert len(exact) == 10 and not more

    async def test_mailboxes_per_user(self, repo: StoreRepository) -> None:
        await deliver(repo, "q1", "u", message(1))
        archive = (await repo.create_mailbox("u", "Archive/2026")).mailbox
        assert (archive.name, archive.messages, archive.uidnext) == ("Archive/2026", 0, 1)
        with pytest.raises(AlreadyExists):
            await repo.create_mailbox("u", "Archive/2026")
        names = [b.name for b in await repo.list_mailboxes("u")]
        assert names == sorted([*DEFAULT_NAMES, "Archive/2026"], key=str.encode)
        with pytest.raises(UnknownUser):
            await repo.list_mailboxes("other")
        with pytest.raises(NotFound):
            await repo.get_mailbox("other", INBOX)

    # -- errors ------------------------------------------------------------------------------

    async def test_invalid_arguments(self, repo: StoreRepository) -> None:
        cases = [
            Delivery("q1", "", "", content=b"x"),
            Delivery("", "u", "", content=b"x"),
            Delivery("q1", "u", "", content=b""),
            Delivery("q1", "u", "", content=None, blob_id=None),
            Delivery("q1", "u", "", content=b"x", blob_id="0" * 64),
            Delivery("q1", "u", "", blob_id="not-a-hash"),
            Delivery("q1", "u", "", blob_id="a" * 64),  # well-formed but not stored
            Delivery("q1", "u", "", content=b"x", internal_date=-1),
        ]
        cases += [
            Delivery("q1", "u", name, content=b"x")
            for name in ("a//b", "/a", "a/", "a*", "50%", "a\x00b", "a\r\nb", "x" * 600)
        ]
        for case in cases:
            with pytest.raises(InvalidArgument):
                await repo.deliver(case)
        for call in (
            repo.list_mailboxes(""),
            repo.get_mailbox("", INBOX),
            repo.list_messages("u", INBOX, 0, 0),
            repo.read_message("u", INBOX, 0),
            repo.read_blob("XYZ"),
            repo.put_blob(stream(b"", 1)),
            repo.create_mailbox("u", "bad//name"),
        ):
            with pytest.raises(InvalidArgument):
                await call
        with pytest.raises(UnknownUser):
            await repo.list_mailboxes("u")

    async def test_unknown_mailbox_and_message(self, repo: StoreRepository) -> None:
        await deliver(repo, "q1", "u", message(1))
        for call in (
            repo.get_mailbox("u", "Nope"),
            repo.list_messages("u", "Nope", 0, 10),
            repo.read_message("u", "Nope", 1),
            repo.store_flags("u", "Nope", [1], FlagsMode.ADD, ["\\Seen"]),
            repo.expunge("u", "Nope"),
            repo.read_message("u", INBOX, 2),
            repo.read_blob("b" * 64),
        ):
            with pytest.raises(NotFound):
                await call

    async def test_read_messages_in_the_order_asked(self, repo: StoreRepository) -> None:
        big = message(1, random_bytes(2 * BLOB_CHUNK_BYTES + 5, seed=9))
        contents = {1: big}
        for i in range(2, 21):  # more than one backend read group
            contents[i] = message(i)
        for i, content in contents.items():
            assert await deliver(repo, f"q{i}", "u", content) == i
        await expunge_uids(repo, "u", INBOX, [7])
        asked = [3, 1, 7, 99, *range(2, 21)]
        got = [
            (uid, None if found is None else b"".join([c async for c in found.chunks]))
            async for uid, found in repo.read_messages("u", INBOX, asked)
        ]
        assert got == [(u, contents.get(u) if u not in (7, 99) else None) for u in asked]
        # No such mailbox (or user): every message is reported missing.
        assert [x async for x in repo.read_messages("u", "Nope", [1])] == [(1, None)]
        assert [x async for x in repo.read_messages("nobody", INBOX, [1])] == [(1, None)]
        with pytest.raises(InvalidArgument):
            [x async for x in repo.read_messages("u", INBOX, [0])]

    async def test_read_messages_tell_which_contents_are_in_wire_form(
        self, repo: StoreRepository
    ) -> None:
        """ADR 0042: a content whose lines all end in CRLF and none begins with "." is sent by
        POP3 as stored; the bit is recorded at Deliver and Append, kept with the stored index
        (a claim-check Deliver of content indexed before) and by COPY."""
        clean = message(1, b"line\r\n" * (BLOB_CHUNK_BYTES // 6 + 10))  # two chunks
        contents = {
            1: clean,
            2: message(2, b".leading dot\r\n"),
            3: message(3, b"a bare\nLF\r\n"),
            4: message(4, b"no line end"),
            5: b".first line\r\n\r\nbody\r\n",
        }
        for uid, content in contents.items():
            assert await deliver(repo, f"q{uid}", "u", content) == uid
        # The same content delivered again by its blob: the index stored with it says so.
        stored = await repo.put_blob(stream(clean, 1 << 16))
        again = await repo.deliver(Delivery("q6", "u", "", blob_id=stored.blob_id))
        plain = message(7)
        added = await repo.append("u", INBOX, [], 0, len(plain), stream(plain, 100))
        await repo.create_mailbox("u", "Dest")
        copied = await repo.copy_messages("u", INBOX, [1, 2], "Dest")
        want = {1: True, 2: False, 3: False, 4: False, 5: False, again.uid: True, added.uid: True}
        got = {
            uid: (found.wire_ready, b"".join([c async for c in found.chunks]))
            async for uid, found in repo.read_messages("u", INBOX, list(want))
            if found is not None
        }
        assert {uid: bit for uid, (bit, _) in got.items()} == want
        assert got[again.uid][1] == clean and got[added.uid][1] == plain
        dest = {
            uid: found.wire_ready
            async for uid, found in repo.read_messages("u", "Dest", copied.dest_uids)
            if found is not None
        }
        assert list(dest.values()) == [True, False]

    async def test_size_limit(self, repo: StoreRepository) -> None:
        repo.max_message_bytes = 1000
        with pytest.raises(InvalidArgument):
            await repo.deliver(Delivery("q1", "u", "", content=b"x" * 1001))
        with pytest.raises(InvalidArgument):
            await repo.put_blob(stream(b"x" * 1001, 100))
        assert (await repo.deliver(Delivery("q1", "u", "", content=b"x" * 1000))).uid == 1
