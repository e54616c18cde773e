"""Contract: users, mailboxes, hierarchy, subscriptions (RFC 9051 section 6.3, RFC 6154)."""

from __future__ import annotations

import asyncio

import pytest

from postmesh.api.store.v1 import store_pb2
from postmesh.store.contract_suite.helpers import (
    DEFAULT_NAMES,
    SPECIAL_USES,
    content_of,
    deliver,
    expunge_uids,
    message,
    stream,
)
from postmesh.store.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    UnknownUser,
)
from postmesh.store.model import INBOX, Delivery, FlagsMode
from postmesh.store.repository import StoreRepository


class MailboxContract:
    async def test_provision_is_idempotent(self, repo: StoreRepository) -> None:
        first = await repo.provision_user("u")
        assert sorted(first.created) == sorted(DEFAULT_NAMES)
        assert [b.name for b in first.mailboxes] == DEFAULT_NAMES
        assert {b.name: b.special_use for b in first.mailboxes} == SPECIAL_USES
        assert await repo.list_subscriptions("u") == DEFAULT_NAMES
        again = await repo.provision_user("u")
        assert again.created == [] and again.mailboxes == first.mailboxes
        # A default mailbox the user deleted is not forced back on them.
        await repo.delete_mailbox("u", "Junk")
        assert "Junk" not in [b.name for b in (await repo.provision_user("u")).mailboxes]
        # Every mailbox has its own UIDVALIDITY.
        assert len({b.uidvalidity for b in first.mailboxes}) == len(DEFAULT_NAMES)

    async def test_provision_without_listing_provisions_all_the_same(
        self, repo: StoreRepository
    ) -> None:
        first = await repo.provision_user("u", listing=False)
        assert sorted(first.created) == sorted(DEFAULT_NAMES) and first.mailboxes == []
        assert [b.name for b in await repo.list_mailboxes("u")] == DEFAULT_NAMES
        assert await repo.list_subscriptions("u") == DEFAULT_NAMES
        await repo.deliver(Delivery("q1", "u", content=message(1)))
        again = await repo.provision_user("u", listing=False)
        assert again.created == [] and again.mailboxes == []
        assert (await repo.get_mailbox("u", INBOX)).messages == 1

    async def test_unknown_user(self, repo: StoreRepository) -> None:
        for call in (
            repo.list_mailboxes("nobody"),
            repo.list_subscriptions("nobody"),
            repo.get_mailbox("nobody", INBOX),
            repo.create_mailbox("nobody", "X"),
            repo.delete_mailbox("nobody", "X"),
            repo.rename_mailbox("nobody", "X", "Y"),
            repo.set_subscription("nobody", "X", True),
            repo.list_messages("nobody", INBOX, 0, 10),
            repo.get_quota("nobody"),
            repo.set_quota("nobody", 1, 1),
        ):
            with pytest.raises(UnknownUser, match="no such user"):
                await call

    async def test_create_makes_parents(self, repo: StoreRepository) -> None:
        await repo.provision_user("u")
        r = await repo.create_mailbox("u", "a/b/c")
        assert r.created == ["a", "a/b", "a/b/c"]
        assert (r.mailbox.name, r.mailbox.has_children, r.mailbox.noselect) == (
            "a/b/c",
            False,
            False,
        )
        boxes = {b.name: b for b in await repo.list_mailboxes("u")}
        assert boxes["a"].has_children and boxes["a/b"].has_children
        assert not boxes["a"].noselect and not boxes["INBOX"].has_children
        assert (await repo.get_mailbox("u", "a")).has_children
        # Only what is missing is created.
        assert (await repo.create_mailbox("u", "a/x")).created == ["a/x"]
        for existing in ("a/b", "a", "INBOX", "inbox", "Sent"):
            with pytest.raises(AlreadyExists):
                await repo.create_mailbox("u", existing)
        sub = await repo.create_mailbox("u", "inbox/Lists")
        assert sub.mailbox.name == "INBOX/Lists"
        assert (await repo.get_mailbox("u", INBOX)).has_children

    async def test_create_special_use(self, repo: StoreRepository) -> None:
        await repo.provision_user("u")
        r = await repo.create_mailbox("u", "Old mail", "\\archive")
        assert r.mailbox.special_use == "\\Archive"
        for bad in ("\\All", "\\Flagged", "\\Bogus", "Archive"):
            with pytest.raises(InvalidArgument):
                await repo.create_mailbox("u", "Other", bad)

    async def test_invalid_names(self, repo: StoreRepository) -> None:
        await repo.provision_user("u")
        bad = [
            "", "/", "/a", "a/", "a//b", "..", "a/../b", ".", "a\x01b", "a\x7fb", "a*", "a%",
            "x" * 256, "\u00e9" * 128,
        ]  # fmt: skip
        for name in bad:
            for call in (
                repo.create_mailbox("u", name),
                repo.delete_mailbox("u", name),
                repo.rename_mailbox("u", "Sent", name),
                repo.set_subscription("u", name, True),
            ):
                with pytest.raises(InvalidArgument):
                    await call
        # 255 octets is the longest name.
        assert (await repo.create_mailbox("u", "y" * 255)).mailbox.name == "y" * 255

    async def test_recreated_mailbox_gets_a_larger_uidvalidity(self, repo: StoreRepository) -> None:
        await repo.provision_user("u")
        first = (await repo.create_mailbox("u", "Box")).mailbox
        await repo.delete_mailbox("u", "Box")
        second = (await repo.create_mailbox("u", "Box")).mailbox
        await repo.delete_mailbox("u", "Box")
        third = (await repo.create_mailbox("u", "Box")).mailbox
        assert first.uidvalidity < second.uidvalidity < third.uidvalidity

    async def test_delete_mailbox(self, repo: StoreRepository) -> None:
        await repo.provision_user("u")
        await repo.create_mailbox("u", "Box")
        content = message(1)
        await deliver(repo, "q1", "u", content, "Box")
        await deliver(repo, "q2", "u", message(2), "Box")
        await deliver(repo, "q1", "u", content)  # same content in INBOX too
        (m,), _ = await repo.list_messages("u", INBOX, 0, 10)
        assert await repo.blob_refcount(m.blob_id) == 2
        r = await repo.delete_mailbox("u", "Box")
        assert (r.messages_deleted, r.removed, r.kept_as_noselect) == (2, ["Box"], False)
        assert await repo.blob_refcount(m.blob_id) == 1  # the INBOX copy is left
        assert await content_of(repo, "u", INBOX, m.uid) == content
        with pytest.raises(NotFound):
            await repo.get_mailbox("u", "Box")
        with pytest.raises(NotFound):
            await repo.delete_mailbox("u", "Box")
        for inbox in ("INBOX", "inbox"):
            with pytest.raises(FailedPrecondition):
                await repo.delete_mailbox("u", inbox)

    async def test_delete_parent_keeps_noselect(self, repo: StoreRepository) -> None:
        await repo.provision_user("u")
        await repo.create_mailbox("u", "p/c")
        await deliver(repo, "q1", "u", message(1), "p")
        before = await repo.get_mailbox("u", "p")
        r = await repo.delete_mailbox("u", "p")
        assert (r.messages_deleted, r.removed, r.kept_as_noselect) == (1, [], True)
        parent = await repo.get_mailbox("u", "p")
        assert (parent.noselect, parent.has_children, parent.messages) == (True, True, 0)
        for call in (
            repo.list_messages("u", "p", 0, 10),
            repo.expunge("u", "p"),
            repo.search("u", "p", store_pb2.SearchKey(all=True)),
            repo.copy_messages("u", INBOX, [1], "p"),
        ):
            with pytest.raises(FailedPrecondition):
                await call
        with pytest.raises(FailedPrecondition):
            await repo.deliver(Delivery("q2", "u", "p", content=message(2)))
        # RFC 9051 section 6.3.5: a \Noselect name with inferiors cannot be deleted.
        with pytest.raises(FailedPrecondition):
            await repo.delete_mailbox("u", "p")
        # CREATE makes it a mailbox again, with a new UIDVALIDITY.
        again = (await repo.create_mailbox("u", "p")).mailbox
        assert not again.noselect and again.uidvalidity > before.uidvalidity
        await repo.delete_mailbox("u", "p")
        # Deleting the last child removes the childless \Noselect parent as well.
        r = await repo.delete_mailbox("u", "p/c")
        assert r.removed == ["p/c", "p"]
        assert "p" not in [b.name for b in await repo.list_mailboxes("u")]

    async def test_rename_moves_inferiors(self, repo: StoreRepository) -> None:
        await repo.provision_user("u")
        await repo.create_mailbox("u", "a/b/c")
        content = message(1)
        uid = await deliver(repo, "q1", "u", content, "a/b")
        before = await repo.get_mailbox("u", "a/b")
        await repo.set_subscription("u", "a/b", True)
        r = await repo.rename_mailbox("u", "a", "x/y")
        assert r.renamed == [("a", "x/y"), ("a/b", "x/y/b"), ("a/b/c", "x/y/b/c")]
        assert r.created == ["x"] and r.mailbox.name == "x/y" and r.moved is None
        names = [b.name for b in await repo.list_mailboxes("u")]
        assert "a" not in names and {"x", "x/y", "x/y/b", "x/y/b/c"} <= set(names)
        moved = await repo.get_mailbox("u", "x/y/b")
        assert (moved.uidvalidity, moved.messages, moved.subscribed) == (
            before.uidvalidity, 1, True,
        )  # fmt: skip
        assert await content_of(repo, "u", "x/y/b", uid) == content
        assert "x/y/b" in await repo.list_subscriptions("u")
        assert "a/b" not in await repo.list_subscriptions("u")

    async def test_rename_errors(self, repo: StoreRepository) -> None:
        await repo.provision_user("u")
        await repo.create_mailbox("u", "a/b")
        with pytest.raises(AlreadyExists):
            await repo.rename_mailbox("u", "a", "Sent")
        with pytest.raises(AlreadyExists):
            await repo.rename_mailbox("u", "Sent", "a/b")
        with pytest.raises(AlreadyExists):
            await repo.rename_mailbox("u", "Sent", "INBOX")
        with pytest.raises(InvalidArgument):
            await repo.rename_mailbox("u", "a", "a/b/c")  # into its own inferior
        with pytest.raises(NotFound):
            await repo.rename_mailbox("u", "nope", "other")
        # A renamed-away child leaves its \Noselect-free parent as it is.
        await repo.rename_mailbox("u", "a/b", "b")
        assert {"a", "b"} <= {b.name for b in await repo.list_mailboxes("u")}

    async def test_rename_inbox_moves_its_messages(self, repo: StoreRepository) -> None:
        contents = [message(i) for i in range(3)]
        for i, content in enumerate(contents):
            await deliver(repo, f"q{i}", "u", content)
        await repo.create_mailbox("u", "INBOX/keep")
        await repo.store_flags("u", INBOX, [2], FlagsMode.ADD, ["\\Seen"])
        inbox = await repo.get_mailbox("u", INBOX)
        r = await repo.rename_mailbox("u", "inbox", "Old")
        assert r.renamed == [(INBOX, "Old")] and r.moved is not None
        assert r.moved.source_uids == [1, 2, 3] and len(r.moved.dest_uids) == 3
        old = await repo.get_mailbox("u", "Old")
        assert (old.messages, old.unseen) == (3, 2)
        msgs, _ = await repo.list_messages("u", "Old", 0, 10)
        assert [m.flags for m in msgs] == [(), ("\\Seen",), ()]
        for m, content in zip(msgs, contents, strict=True):
            assert await content_of(repo, "u", "Old", m.uid) == content
            assert await repo.blob_refcount(m.blob_id) == 1
        after = await repo.get_mailbox("u", INBOX)
        assert (after.messages, after.uidvalidity) == (0, inbox.uidvalidity)
        assert after.uidnext == inbox.uidnext and after.highestmodseq > inbox.highestmodseq
        changes = await repo.get_changes("u", INBOX, inbox.highestmodseq)
        assert changes.expunged == [1, 2, 3] and changes.changed == []
        assert "INBOX/keep" in {b.name for b in await repo.list_mailboxes("u")}
        # New mail still arrives in INBOX.
        assert await deliver(repo, "q9", "u", message(9)) == inbox.uidnext

    async def test_subscriptions(self, repo: StoreRepository) -> None:
        await repo.provision_user("u")
        await repo.set_subscription("u", "Not/There", True)
        await repo.set_subscription("u", "Not/There", True)  # idempotent
        await repo.set_subscription("u", "Sent", False)
        await repo.set_subscription("u", "Sent", False)
        subs = await repo.list_subscriptions("u")
        assert "Not/There" in subs and "Sent" not in subs
        boxes = {b.name: b for b in await repo.list_mailboxes("u")}
        assert not boxes["Sent"].subscribed and boxes[INBOX].subscribed
        assert "Not/There" not in boxes
        # A deleted mailbox's subscription stays (RFC 9051 section 6.3.7).
        await repo.create_mailbox("u", "Gone")
        await repo.set_subscription("u", "Gone", True)
        await repo.delete_mailbox("u", "Gone")
        assert "Gone" in await repo.list_subscriptions("u")

    async def test_mailbox_counts(self, repo: StoreRepository) -> None:
        sizes = []
        for i in range(4):
            content = message(i, b"x" * i * 100)
            sizes.append(len(content))
            await deliver(repo, f"q{i}", "u", content)
        await repo.store_flags("u", INBOX, [1, 2], FlagsMode.ADD, ["\\Seen"])
        r = await repo.store_flags("u", INBOX, [2, 3], FlagsMode.ADD, ["\\Deleted"])
        box = await repo.get_mailbox("u", INBOX)
        assert (box.messages, box.unseen, box.deleted, box.size) == (4, 2, 2, sum(sizes))
        assert box.highestmodseq == r.messages[0].modseq
        (listed,) = [b for b in await repo.list_mailboxes("u") if b.name == INBOX]
        assert listed == box
        await expunge_uids(repo, "u", INBOX, [2, 3])
        box = await repo.get_mailbox("u", INBOX)
        assert (box.messages, box.unseen, box.deleted, box.size) == (2, 1, 0, sizes[0] + sizes[3])

    async def test_recent_is_claimed_once(self, repo: StoreRepository) -> None:
        """IMAP4rev1 \\Recent (RFC 3501 section 2.3.2): the first session told of a message
        claims it; no later one gets it, and STATUS RECENT counts what nobody claimed."""

        async def recent() -> tuple[int, int]:
            box = await repo.get_mailbox("u", INBOX)
            (listed,) = [b for b in await repo.list_mailboxes("u") if b.name == INBOX]
            assert listed == box
            return box.first_recent_uid, box.recent

        for i in range(3):
            await deliver(repo, f"q{i}", "u", message(i))
        assert await recent() == (1, 3)
        c = await repo.claim_recent("u", INBOX, 0)
        assert (c.first, c.last) == (1, 3)
        assert c.uidvalidity == (await repo.get_mailbox("u", INBOX)).uidvalidity
        assert await recent() == (4, 0)
        again = await repo.claim_recent("u", INBOX, 0)
        assert again.last < again.first  # nothing left
        for i in range(3, 5):
            await deliver(repo, f"q{i}", "u", message(i))
        assert await recent() == (4, 2)
        c = await repo.claim_recent("u", INBOX, 4)
        assert (c.first, c.last) == (4, 4) and await recent() == (5, 1)
        # A UID above the highest claims up to the highest, never a UID not given out yet.
        c = await repo.claim_recent("u", INBOX, 99)
        assert (c.first, c.last) == (5, 5) and await recent() == (6, 0)
        # An expunged message is not counted.
        for i in range(5, 7):
            await deliver(repo, f"q{i}", "u", message(i))
        await expunge_uids(repo, "u", INBOX, [6])
        assert await recent() == (6, 1)
        # Two claims at once: one of them gets the message, the other nothing.
        both = await asyncio.gather(
            repo.claim_recent("u", INBOX, 0), repo.claim_recent("u", INBOX, 0)
        )
        assert sorted((c.first, c.last) for c in both if c.last >= c.first) == [(6, 7)]
        # Copies are new in their mailbox: recent there (RFC 3501 section 6.4.7).
        await repo.copy_messages("u", INBOX, [1, 2], "Archive")
        archive = await repo.get_mailbox("u", "Archive")
        assert (archive.first_recent_uid, archive.recent) == (1, 2)

    async def test_recent_claim_errors(self, repo: StoreRepository) -> None:
        await repo.provision_user("u")
        with pytest.raises(NotFound):
            await repo.claim_recent("u", "Nope", 0)
        with pytest.raises(UnknownUser):
            await repo.claim_recent("nobody", INBOX, 0)
        with pytest.raises(InvalidArgument):
            await repo.claim_recent("u", INBOX, -1)
        # A \Noselect parent has nothing to claim (its SELECT fails on its own).
        await repo.create_mailbox("u", "P/C")
        await deliver(repo, "q1", "u", message(1), "P")
        await repo.delete_mailbox("u", "P")
        claim = await repo.claim_recent("u", "P", 0)
        assert claim.last < claim.first

    async def test_append_claims_recent_when_asked(self, repo: StoreRepository) -> None:
        """RFC 3501 section 6.3.11: an APPEND by a session that has the mailbox selected claims
        \\Recent up to the new message in the same write; otherwise it claims nothing."""
        await deliver(repo, "q1", "u", message(1))
        plain = message(2)
        r = await repo.append("u", INBOX, [], 0, len(plain), stream(plain, 100))
        assert r.recent_first == 0
        box = await repo.get_mailbox("u", INBOX)
        assert (box.first_recent_uid, box.recent) == (1, 2)
        r = await repo.append("u", INBOX, [], 0, len(plain), stream(plain, 100), claim_recent=True)
        assert (r.uid, r.recent_first) == (3, 1)  # the unclaimed ones before it too
        box = await repo.get_mailbox("u", INBOX)
        assert (box.first_recent_uid, box.recent) == (4, 0)
        r = await repo.append("u", INBOX, [], 0, len(plain), stream(plain, 100), claim_recent=True)
        assert (r.uid, r.recent_first) == (4, 4)
        claim = await repo.claim_recent("u", INBOX, 0)
        assert claim.last < claim.first
