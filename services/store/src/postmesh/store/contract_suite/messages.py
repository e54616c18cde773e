"""Contract: MessageMeta, SEARCH, APPEND, COPY/MOVE, UNCHANGEDSINCE and changes since a MODSEQ."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from postmesh.api.store.v1 import store_pb2
from postmesh.store.contract_suite.helpers import content_of, deliver, expunge_uids, message, stream
from postmesh.store.errors import FailedPrecondition, InvalidArgument, NotFound
from postmesh.store.model import INBOX, FlagsMode
from postmesh.store.repository import StoreRepository

DAY = 86_400
Key = store_pb2.SearchKey


def mail(subject: str, body: str, date: str = "Mon, 02 Mar 2026 10:00:00 +0000") -> bytes:
    return (
        f"From: Alice Example <alice@example.org>\r\nTo: bob@example.com\r\n"
        f"Subject: {subject}\r\nDate: {date}\r\nMessage-ID: <{subject}@x>\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def uids(*ranges: tuple[int, int]) -> Key:
    return Key(
        uid=store_pb2.UidRangeList(ranges=[store_pb2.UidRange(first=a, last=b) for a, b in ranges])
    )


def both(*keys: Key) -> Key:
    key = Key()
    getattr(key, "and").keys.extend(keys)
    return key


def either(*keys: Key) -> Key:
    key = Key()
    getattr(key, "or").keys.extend(keys)
    return key


def negate(inner: Key) -> Key:
    key = Key()
    getattr(key, "not").CopyFrom(inner)
    return key


class MessageContract:
    # -- meta --------------------------------------------------------------------------------

    async def test_meta_is_stored_at_delivery(self, repo: StoreRepository) -> None:
        content = mail("Hello meta", "body text")
        await deliver(repo, "q1", "u", content)
        await deliver(repo, "q2", "u", mail("Second", "more"))
        got = await repo.get_meta("u", INBOX, [2, 1, 7])
        assert [uid for uid, _ in got] == [1, 2]  # ascending; unknown UIDs skipped
        meta = store_pb2.MessageMeta.FromString(got[0][1])
        assert meta.envelope.subject == "Hello meta" and meta.envelope.has_subject
        assert [(a.name, a.mailbox, a.host) for a in getattr(meta.envelope, "from")] == [
            ("Alice Example", "alice", "example.org")
        ]
        assert (meta.body.type, meta.body.subtype) == ("text", "plain")
        assert meta.header == content[: meta.body_offset]
        assert content[meta.body_offset :] == b"body text\r\n"
        for bad in ([0], [], [2**32]):
            with pytest.raises(InvalidArgument):
                await repo.get_meta("u", INBOX, bad)
        with pytest.raises(NotFound):
            await repo.get_meta("u", "Nope", [1])

    # -- the compact listing (ListMessageFlags) ----------------------------------------------

    async def test_list_flags_matches_the_listing(self, repo: StoreRepository) -> None:
        for i in range(1, 8):
            await deliver(repo, f"q{i}", "u", message(i), flags=("\\Seen",) if i % 3 else ())
        await repo.store_flags("u", INBOX, [2, 5], FlagsMode.ADD, ["$Work", "\\Flagged"])
        await expunge_uids(repo, "u", INBOX, [4])
        msgs, _ = await repo.list_messages("u", INBOX, 0, 100)
        page = await repo.list_flags("u", INBOX, 0, 100)
        assert not page.more
        assert list(page.uids) == [m.uid for m in msgs] == [1, 2, 3, 5, 6, 7]
        assert page.modseqs == [m.modseq for m in msgs]
        got = [set(page.flag_sets[i]) for i in page.flag_index]
        assert got == [set(m.flags) for m in msgs]
        # Each distinct set is sent once: (), (\Seen), (\Seen \Flagged $Work).
        assert len(page.flag_sets) == 3 == len({frozenset(f) for f in page.flag_sets})
        # Pages in ascending UID order; "more" until the last.
        first = await repo.list_flags("u", INBOX, 0, 4)
        assert (list(first.uids), first.more) == ([1, 2, 3, 5], True)
        rest = await repo.list_flags("u", INBOX, 5, 4)
        assert (list(rest.uids), rest.more) == ([6, 7], False)
        assert [set(rest.flag_sets[i]) for i in rest.flag_index] == got[4:]
        empty = await repo.list_flags("u", INBOX, 7, 4)
        assert (list(empty.uids), empty.flag_sets, empty.more) == ([], [], False)
        assert list((await repo.list_flags("u", "Sent", 0, 10)).uids) == []
        with pytest.raises(NotFound):
            await repo.list_flags("u", "Nope", 0, 10)
        for after, limit in ((0, 0), (-1, 10)):
            with pytest.raises(InvalidArgument):
                await repo.list_flags("u", INBOX, after, limit)

    # -- search ------------------------------------------------------------------------------

    async def test_search(self, repo: StoreRepository) -> None:
        await deliver(repo, "q1", "u", mail("Invoice 42", "please pay"), internal_date=10 * DAY)
        await deliver(repo, "q2", "u", mail("Lunch", "pizza today"), internal_date=20 * DAY)
        await deliver(
            repo, "q3", "u", mail("Re: Invoice", "paid", "Tue, 10 Mar 2026 09:00:00 +0000"),
            internal_date=30 * DAY,
        )  # fmt: skip
        r = await repo.store_flags("u", INBOX, [2], FlagsMode.ADD, ["\\Seen", "$Food"])
        flagged_modseq = r.messages[0].modseq

        async def search(key: Key) -> list[int]:
            return (await repo.search("u", INBOX, key)).uids

        assert await search(Key(all=True)) == [1, 2, 3]
        assert await search(Key(flag_set="\\Seen")) == [2]
        assert await search(Key(flag_unset="\\seen")) == [1, 3]
        assert await search(Key(flag_set="$food")) == [2]
        hdr = store_pb2.HeaderMatch(name="subject", value="invoice")
        assert await search(Key(header=hdr)) == [1, 3]
        assert await search(Key(body="PIZZA")) == [2]
        assert await search(Key(text="alice@example.org")) == [1, 2, 3]
        assert await search(Key(since=20)) == [2, 3]
        assert await search(Key(before=20)) == [1]
        march_10 = 20522  # days since 1970-01-01 of 2026-03-10
        assert await search(Key(sent_on=march_10)) == [3]
        assert await search(Key(sent_before=march_10)) == [1, 2]
        assert await search(Key(modseq=flagged_modseq)) == [2]
        assert await search(uids((2, 0))) == [2, 3]
        assert await search(uids((9, 0))) == [3]  # "9:*" includes the highest UID
        assert await search(uids((1, 1), (3, 3))) == [1, 3]
        assert await search(both(uids((2, 3)), Key(header=hdr))) == [3]
        assert await search(negate(Key(flag_set="\\Seen"))) == [1, 3]
        assert await search(either(Key(body="paid"), Key(body="pizza"))) == [2, 3]
        res = await repo.search("u", INBOX, Key(flag_set="\\Seen"))
        assert res.highest_modseq == flagged_modseq
        none = await repo.search("u", INBOX, Key(body="nothing like this"))
        assert (none.uids, none.highest_modseq) == ([], 0)

    async def test_invalid_search(self, repo: StoreRepository) -> None:
        await deliver(repo, "q1", "u", message(1))
        for bad in (
            Key(),
            uids((0, 5)),
            uids((5, 2)),
            Key(uid=store_pb2.UidRangeList()),
            Key(header=store_pb2.HeaderMatch(name="bad name:", value="x")),
            both(),
        ):
            with pytest.raises(InvalidArgument):
                await repo.search("u", INBOX, bad)
        with pytest.raises(NotFound):
            await repo.search("u", "Nope", Key(all=True))

    # -- append ------------------------------------------------------------------------------

    async def test_append(self, repo: StoreRepository) -> None:
        await repo.provision_user("u")
        content = mail("Draft", "x" * 400_000)
        r = await repo.append(
            "u",
            "Drafts",
            ["\\seen", "\\Draft", "\\Seen"],
            1_700_000_000,
            len(content),
            stream(content, 70_000),
        )
        box = await repo.get_mailbox("u", "Drafts")
        assert (r.uid, r.uidvalidity, r.mailbox) == (1, box.uidvalidity, "Drafts")
        assert r.flags == ("\\Draft", "\\Seen")  # as stored: canonical, once each
        assert box.highestmodseq == r.modseq and box.messages == 1
        (m,), _ = await repo.list_messages("u", "Drafts", 0, 10)
        assert (m.flags, m.internal_date, m.size) == (
            ("\\Draft", "\\Seen"),
            1_700_000_000,
            len(content),
        )
        assert m.blob_id == hashlib.sha256(content).hexdigest()
        assert await content_of(repo, "u", "Drafts", 1) == content
        ((_, meta),) = await repo.get_meta("u", "Drafts", [1])
        assert store_pb2.MessageMeta.FromString(meta).envelope.subject == "Draft"
        hdr = store_pb2.HeaderMatch(name="subject", value="draft")
        assert (await repo.search("u", "Drafts", Key(header=hdr))).uids == [1]
        # The same content appended again is a second message on the same blob.
        r2 = await repo.append("u", "Drafts", [], 0, len(content), stream(content, 1 << 20))
        assert r2.uid == 2 and await repo.blob_refcount(m.blob_id) == 2

    async def test_append_normalizes_bare_lf_when_asked(self, repo: StoreRepository) -> None:
        """An IMAP literal's bare LFs are stored as CRLF (RFC 5322 section 2.1); the declared
        size is of the octets sent; a CRLF split between two chunks stays one."""
        await repo.provision_user("u")
        sent = b"From: a@example.org\nSubject: lf\r\n\nline one\r\nline two\n"
        r = await repo.append(
            "u", INBOX, [], 0, len(sent), stream(sent, 28), normalize_line_ends=True
        )  # the 28th octet is the CR of "lf\r\n"
        stored = sent.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        assert await content_of(repo, "u", INBOX, r.uid) == stored
        (m,), _ = await repo.list_messages("u", INBOX, 0, 10)
        assert m.size == len(stored) == len(sent) + 3
        for declared in (len(stored), len(sent) - 1):  # the size sent, not the size stored
            with pytest.raises(InvalidArgument, match="declared size"):
                await repo.append(
                    "u", INBOX, [], 0, declared, stream(sent, 7), normalize_line_ends=True
                )
        # Without it, the octets are kept as sent (a literal8, RFC 3516 section 4.4).
        r = await repo.append("u", INBOX, [], 0, len(sent), stream(sent, 7))
        assert await content_of(repo, "u", INBOX, r.uid) == sent

    async def test_append_refuses_bad_input(self, repo: StoreRepository) -> None:
        await repo.provision_user("u")
        content = message(1)
        for declared in (len(content) - 1, len(content) + 1):
            with pytest.raises(InvalidArgument, match="declared size"):
                await repo.append("u", INBOX, [], 0, declared, stream(content, 10))
        with pytest.raises(InvalidArgument):
            await repo.append("u", INBOX, [], 0, 0, stream(b"", 1))
        with pytest.raises(InvalidArgument):
            await repo.append("u", INBOX, ["\\Recent"], 0, len(content), stream(content, 10))
        with pytest.raises(NotFound):
            await repo.append("u", "Nope", [], 0, len(content), stream(content, 10))
        with pytest.raises(NotFound, match="no such user"):
            await repo.append("x", INBOX, [], 0, len(content), stream(content, 10))
        repo.max_message_bytes = 100
        with pytest.raises(InvalidArgument):
            await repo.append("u", INBOX, [], 0, 101, stream(b"x" * 101, 10))
        box = await repo.get_mailbox("u", INBOX)
        assert (box.messages, box.uidnext) == (0, 1)  # nothing stored, no UID spent

    # -- copy and move -----------------------------------------------------------------------

    async def test_copy(self, repo: StoreRepository) -> None:
        for i in range(4):
            await deliver(repo, f"q{i}", "u", message(i), internal_date=1_000 + i)
        await repo.store_flags("u", INBOX, [2], FlagsMode.ADD, ["\\Flagged", "$X"])
        await repo.create_mailbox("u", "Dest")
        await deliver(repo, "q9", "u", message(9), "Dest")
        r = await repo.copy_messages("u", INBOX, [4, 2, 99, 3], "Dest")
        dest = await repo.get_mailbox("u", "Dest")
        assert (r.uidvalidity, r.source_uids, r.dest_uids) == (
            dest.uidvalidity,
            [2, 3, 4],
            [2, 3, 4],
        )
        assert r.expunged == [] and r.modseq == dest.highestmodseq
        src, _ = await repo.list_messages("u", INBOX, 0, 10)
        copies, _ = await repo.list_messages("u", "Dest", 1, 10)
        for s, c in zip(src[1:], copies, strict=True):
            assert (c.flags, c.internal_date, c.size, c.blob_id) == (
                s.flags, s.internal_date, s.size, s.blob_id,
            )  # fmt: skip
            assert await repo.blob_refcount(c.blob_id) == 2  # a reference, not a new blob
            assert await content_of(repo, "u", "Dest", c.uid) == await content_of(
                repo, "u", INBOX, s.uid
            )
        assert (await repo.get_mailbox("u", INBOX)).messages == 4
        empty = await repo.copy_messages("u", INBOX, [50], "Dest")
        assert (empty.source_uids, empty.dest_uids) == ([], [])
        with pytest.raises(NotFound):
            await repo.copy_messages("u", INBOX, [1], "Nope")
        with pytest.raises(InvalidArgument):
            await repo.copy_messages("u", INBOX, [0], "Dest")
        with pytest.raises(InvalidArgument):
            await repo.copy_messages("u", INBOX, [1], "")

    async def test_move(self, repo: StoreRepository) -> None:
        for i in range(3):
            await deliver(repo, f"q{i}", "u", message(i))
        before = await repo.get_mailbox("u", INBOX)
        r = await repo.move_messages("u", INBOX, [1, 3], "Archive")
        assert (r.source_uids, r.dest_uids, r.expunged) == ([1, 3], [1, 2], [1, 3])
        assert r.source_modseq > before.highestmodseq
        after = await repo.get_mailbox("u", INBOX)
        assert (after.messages, after.highestmodseq) == (1, r.source_modseq)
        archived, _ = await repo.list_messages("u", "Archive", 0, 10)
        assert [m.uid for m in archived] == [1, 2]
        for m in archived:
            assert await repo.blob_refcount(m.blob_id) == 1  # moved, not copied
        changes = await repo.get_changes("u", INBOX, before.highestmodseq)
        assert changes.expunged == [1, 3] and changes.changed == []
        # Moving within one mailbox gives new UIDs.
        same = await repo.move_messages("u", INBOX, [2], INBOX)
        assert same.dest_uids == [4] and same.expunged == [2]
        assert [m.uid for m in (await repo.list_messages("u", INBOX, 0, 10))[0]] == [4]

    # -- flags and changes -------------------------------------------------------------------

    async def test_unchanged_since(self, repo: StoreRepository) -> None:
        for i in range(3):
            await deliver(repo, f"q{i}", "u", message(i))
        seen = await repo.store_flags("u", INBOX, [1, 2, 3], FlagsMode.ADD, ["\\Seen"])
        base = seen.messages[0].modseq
        later = await repo.store_flags("u", INBOX, [2], FlagsMode.ADD, ["$Later"])
        # RFC 7162 section 3.1.3: message 2 changed after `base`, so it is left alone.
        r = await repo.store_flags(
            "u", INBOX, [1, 2, 3], FlagsMode.ADD, ["\\Flagged"], unchanged_since=base
        )
        assert r.modified == [2] and r.changed == [1, 3]
        assert [m.uid for m in r.messages] == [1, 3]
        msgs, _ = await repo.list_messages("u", INBOX, 0, 10)
        assert [("\\Flagged" in m.flags) for m in msgs] == [True, False, True]
        assert msgs[1].modseq == later.messages[0].modseq
        with pytest.raises(InvalidArgument):
            await repo.store_flags("u", INBOX, [1], FlagsMode.ADD, ["\\Seen"], unchanged_since=-1)

    async def test_get_changes(self, repo: StoreRepository) -> None:
        for i in range(4):
            await deliver(repo, f"q{i}", "u", message(i))
        box = await repo.get_mailbox("u", INBOX)
        everything = await repo.get_changes("u", INBOX, 0)
        assert [m.uid for m in everything.changed] == [1, 2, 3, 4] and everything.expunged == []
        assert (everything.highestmodseq, everything.uidvalidity) == (
            box.highestmodseq, box.uidvalidity,
        )  # fmt: skip
        mark = box.highestmodseq
        assert (await repo.get_changes("u", INBOX, mark)).changed == []
        await repo.store_flags("u", INBOX, [3], FlagsMode.ADD, ["\\Answered"])
        assert await expunge_uids(repo, "u", INBOX, [1]) == [1]
        changes = await repo.get_changes("u", INBOX, mark)
        assert [(m.uid, m.flags) for m in changes.changed] == [(3, ("\\Answered",))]
        assert changes.expunged == [1]
        assert changes.highestmodseq == (await repo.get_mailbox("u", INBOX)).highestmodseq
        with pytest.raises(FailedPrecondition):
            await repo.create_mailbox("u", "p/c")
            await repo.delete_mailbox("u", "p")
            await repo.get_changes("u", "p", 0)

    async def test_changes_polled_during_writes_miss_nothing(self, repo: StoreRepository) -> None:
        """A session follows a mailbox by GetChanges since the HIGHESTMODSEQ it was last told
        (RFC 7162 section 3.1): a MODSEQ reported must cover every change at or below it, even
        while writers are between taking a UID/MODSEQ and writing the message. And UIDs must
        appear in ascending order (RFC 9051 section 2.3.1.1): never one below a UID shown."""
        await deliver(repo, "q0", "u", message(0))
        start = await repo.get_mailbox("u", INBOX)
        since, seen, done = start.highestmodseq, {1}, False
        flags: dict[int, tuple[str, ...]] = {1: ()}
        order: list[int] = []

        async def writers() -> None:
            nonlocal done
            try:
                for n in range(1, 41):
                    await asyncio.gather(
                        deliver(repo, f"q{n}", "u", message(n)),
                        repo.store_flags("u", INBOX, [n], FlagsMode.ADD, [f"k{n}"]),
                    )
            finally:
                done = True

        async def reader() -> None:
            nonlocal since
            while True:
                last = done
                changes = await repo.get_changes("u", INBOX, since)
                for m in changes.changed:
                    if m.uid not in seen:
                        assert m.uid > max(seen), f"uid {m.uid} appeared below {max(seen)}"
                        order.append(m.uid)
                    seen.add(m.uid)
                    flags[m.uid] = m.flags
                since = changes.highestmodseq
                if last:
                    return
                await asyncio.sleep(0)

        await asyncio.gather(writers(), reader())
        final = await repo.get_changes("u", INBOX, 0)
        assert seen == {m.uid for m in final.changed}
        assert flags == {m.uid: m.flags for m in final.changed}
        assert since == final.highestmodseq

    # -- reading content after listings and changes -------------------------------------------

    async def test_content_reads_follow_listings_and_changes(self, repo: StoreRepository) -> None:
        """A read answers from the mailbox as it is, whatever was listed before it: a backend
        that keeps a listing (the MongoDB store's snapshots, ADR 81) must not serve a message
        changed, expunged or moved since from it."""
        bodies = {n: message(n) for n in range(1, 13)}
        for n, content in bodies.items():
            await deliver(repo, f"q{n}", "u", content)

        async def subjects(uids: list[int]) -> dict[int, str]:
            got = await repo.get_meta("u", INBOX, uids)
            return {uid: store_pb2.MessageMeta.FromString(m).envelope.subject for uid, m in got}

        async def read(mailbox: str, uid: int) -> tuple[bytes, bool | None] | None:
            found = [item async for item in repo.read_messages("u", mailbox, [uid])]
            assert [u for u, _ in found] == [uid]
            stored = found[0][1]
            if stored is None:
                return None
            return b"".join([c async for c in stored.chunks]), stored.wire_ready

        unlisted = await read(INBOX, 2)  # before any listing
        every = list(range(1, 13))
        assert await subjects(every) == {n: f"test {n}" for n in every}
        await repo.list_flags("u", INBOX, 0, 100)
        assert await subjects(every) == {n: f"test {n}" for n in every}
        assert await subjects([2, 12, 13]) == {2: "test 2", 12: "test 12"}
        listed = await read(INBOX, 2)
        assert listed is not None and listed[0] == bodies[2]
        assert listed == unlisted  # the same content and the same wire-form answer either way
        await repo.store_flags("u", INBOX, [2], FlagsMode.ADD, ["\\Seen"])
        assert await read(INBOX, 2) == listed  # flags changed since the listing
        await expunge_uids(repo, "u", INBOX, [2])
        assert await read(INBOX, 2) is None  # expunged since the listing
        assert sorted(await subjects(every)) == [1, *range(3, 13)]
        with pytest.raises(NotFound):
            await content_of(repo, "u", INBOX, 2)
        await repo.list_flags("u", INBOX, 0, 100)
        assert await read(INBOX, 2) is None  # and after the next one
        assert sorted(await subjects(every)) == [1, *range(3, 13)]
        assert await content_of(repo, "u", INBOX, 3) == bodies[3]
        moved = await repo.move_messages("u", INBOX, [3], "Sent")
        assert await read(INBOX, 3) is None  # moved since the listing
        assert await content_of(repo, "u", "Sent", moved.dest_uids[0]) == bodies[3]
        await repo.list_flags("u", INBOX, 0, 100)
        assert await content_of(repo, "u", INBOX, 1) == bodies[1]
        assert sorted(await subjects(every)) == [1, *range(4, 13)]
        assert await read(INBOX, 13) is None  # never delivered
        # Many at once (a POP3 download), in the order asked, the gone ones None.
        asked = [12, 1, 2, 13, 5, 3, *range(4, 12)]
        got = [
            (uid, None if found is None else b"".join([c async for c in found.chunks]))
            async for uid, found in repo.read_messages("u", INBOX, asked)
        ]
        assert got == [(u, None if u in (2, 3, 13) else bodies[u]) for u in asked]
