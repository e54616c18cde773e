"""Contract: the janitor removes what time and deletions leave behind, and nothing else.

Time is moved by passing ``now`` to a pass (``Janitor.run_pass``): no sleeping."""

from __future__ import annotations

import hashlib
import time

from postmesh.store import leftovers as lo
from postmesh.store.contract_suite.helpers import content_of, deliver, message, stream
from postmesh.store.janitor import Janitor, JanitorPolicy
from postmesh.store.leftovers import Leftovers
from postmesh.store.model import INBOX, Delivery, FlagsMode
from postmesh.store.repository import StoreRepository

DAY = 24 * 3600
POLICY = JanitorPolicy(
    interval_seconds=0, batch=7, max_batches=1000, tombstone_retention_seconds=30 * DAY,
    delivery_retention_seconds=14 * DAY, orphan_grace_seconds=3600,
)  # fmt: skip
# Small batches (7) so that every kind takes several batches in the tests below.


def janitor(repo: StoreRepository) -> Janitor:
    assert isinstance(repo, Leftovers)
    return Janitor([repo], POLICY)


def later(seconds: float) -> float:
    return time.time() + seconds


async def census(repo: StoreRepository) -> dict[str, int]:
    assert isinstance(repo, Leftovers)
    return await repo.census()


class JanitorContract:
    async def test_expired_upload_pin_and_its_blob_are_collected(
        self, repo: StoreRepository
    ) -> None:
        content = message(1, b"uploaded and never delivered")
        info = await repo.put_blob(stream(content, 1000))
        # Pinned: kept although no message references it.
        await janitor(repo).run_pass(later(repo.upload_pin_seconds - 60))
        assert await repo.blob_refcount(info.blob_id) == 0
        removed = await janitor(repo).run_pass(later(repo.upload_pin_seconds + 60))
        # (MongoDB deletes the blob with its last reference; SQLite in the ``blobs`` step.)
        assert removed[lo.UPLOAD_PINS] == 1
        assert await repo.blob_refcount(info.blob_id) is None
        assert (await census(repo))["chunks"] == 0

    async def test_a_referenced_blob_survives_every_expiry(self, repo: StoreRepository) -> None:
        content = message(1, b"uploaded, then delivered")
        info = await repo.put_blob(stream(content, 1000))
        await repo.deliver(Delivery("q1", "u", "", blob_id=info.blob_id))
        second = message(2)
        await deliver(repo, "q2", "u", second)
        await janitor(repo).run_pass(later(365 * DAY))
        assert await repo.blob_refcount(info.blob_id) == 1
        assert await content_of(repo, "u", INBOX, 1) == content
        assert await content_of(repo, "u", INBOX, 2) == second

    async def test_blob_of_expunged_message_goes_unless_pinned(self, repo: StoreRepository) -> None:
        content = message(1)
        info = await repo.put_blob(stream(content, 1000))
        await repo.deliver(Delivery("q1", "u", "", blob_id=info.blob_id))
        await repo.store_flags("u", INBOX, [1], FlagsMode.ADD, ["\\Deleted"])
        await repo.expunge("u", INBOX)
        await janitor(repo).run_pass()
        assert await repo.blob_refcount(info.blob_id) == 0  # the upload's pin still holds it
        await janitor(repo).run_pass(later(repo.upload_pin_seconds + 60))
        assert await repo.blob_refcount(info.blob_id) is None

    async def test_tombstones_go_after_the_retention_and_changes_say_so(
        self, repo: StoreRepository
    ) -> None:
        for n in range(1, 5):
            await deliver(repo, f"q{n}", "u", message(n))
        before = (await repo.get_mailbox("u", INBOX)).highestmodseq
        await repo.store_flags("u", INBOX, [1, 2, 3], FlagsMode.ADD, ["\\Deleted"])
        await repo.expunge("u", INBOX)
        # Young tombstones stay.
        assert (await janitor(repo).run_pass(later(29 * DAY)))[lo.TOMBSTONES] == 0
        changes = await repo.get_changes("u", INBOX, before)
        assert (changes.expunged, changes.expunged_incomplete) == ([1, 2, 3], False)

        assert (await janitor(repo).run_pass(later(31 * DAY)))[lo.TOMBSTONES] == 3
        assert (await census(repo))["tombstones"] == 0
        # Since a MODSEQ below the removed tombstones: the answer says it is incomplete, and
        # the live messages are still all there.
        changes = await repo.get_changes("u", INBOX, before)
        assert changes.expunged_incomplete
        assert changes.expunged == []
        assert [m.uid for m in (await repo.list_messages("u", INBOX, 0, 10))[0]] == [4]
        # Since the current MODSEQ (a client that followed along): complete, and a new
        # expunge is reported as before.
        now = (await repo.get_mailbox("u", INBOX)).highestmodseq
        assert not (await repo.get_changes("u", INBOX, now)).expunged_incomplete
        await repo.store_flags("u", INBOX, [4], FlagsMode.ADD, ["\\Deleted"])
        await repo.expunge("u", INBOX)
        changes = await repo.get_changes("u", INBOX, now)
        assert (changes.expunged, changes.expunged_incomplete) == ([4], False)
        # Other mailboxes keep their floor at 0.
        assert not (await repo.get_changes("u", "Sent", 0)).expunged_incomplete

    async def test_delivery_records_go_after_the_retention(self, repo: StoreRepository) -> None:
        await deliver(repo, "q1", "u", message(1))
        await janitor(repo).run_pass(later(13 * DAY))
        again = await repo.deliver(Delivery("q1", "u", "", content=message(1)))
        assert again.duplicate  # the record is still there: a redelivery is recognised
        removed = await janitor(repo).run_pass(later(15 * DAY))
        assert removed[lo.DELIVERIES] == 1
        assert (await census(repo))["deliveries"] == 0
        # The message itself stays.
        assert [m.uid for m in (await repo.list_messages("u", INBOX, 0, 10))[0]] == [1]

    async def test_a_pass_is_idempotent(self, repo: StoreRepository) -> None:
        await deliver(repo, "q1", "u", message(1))
        await expunge_all(repo, "u", INBOX)
        first = await janitor(repo).run_pass(later(60 * DAY))
        assert first[lo.TOMBSTONES] == 1 and first[lo.DELIVERIES] == 1
        second = await janitor(repo).run_pass(later(60 * DAY))
        assert not any(n for kind, n in second.items() if kind != lo.PAGES)

    async def test_fill_and_delete_shrinks_back_to_the_baseline(
        self, repo: StoreRepository
    ) -> None:
        """The issue's test: N distinct messages delivered (half inline, half uploaded first as
        the SMTP edge does), copied, expunged everywhere; after a janitor pass past every
        retention the store holds what it held before the first one."""
        await repo.provision_user("u")
        kept = message(0)
        await deliver(repo, "keep", "u", kept)  # a message that must survive
        baseline = await census(repo)
        n = 40
        blob_ids = []
        for i in range(1, n + 1):
            content = message(i, bytes([i]) * (i * 9000))  # up to ~360 KB: several chunks
            blob_ids.append(hashlib.sha256(content).hexdigest())
            if i % 2:
                await deliver(repo, f"q{i}", "u", content)
            else:
                info = await repo.put_blob(stream(content, 64 * 1024))
                await repo.deliver(Delivery(f"q{i}", "u", "", blob_id=info.blob_id))
        uids = [m.uid for m in (await repo.list_messages("u", INBOX, 0, 100))[0] if m.uid > 1]
        await repo.copy_messages("u", INBOX, uids[:10], "Archive")
        full = await census(repo)
        assert full["messages"] == baseline["messages"] + n + 10
        assert full["blobs"] == baseline["blobs"] + n
        # At least the blobs of several chunks (the MongoDB backend keeps a blob of one chunk
        # in its own document).
        assert full["chunks"] > baseline["chunks"] + n // 4
        await expunge_all(repo, "u", INBOX, keep=1)
        await expunge_all(repo, "u", "Archive")
        removed = await janitor(repo).run_pass(later(60 * DAY))
        assert removed[lo.TOMBSTONES] == n + 10
        assert removed[lo.DELIVERIES] == n + 1  # "keep"'s record too: it is as old
        after = await census(repo)
        # "keep"'s record went, and its outcome where a backend keeps one apart (MongoDB).
        gone: dict[str, int] = {
            k: baseline[k] - 1 for k in ("deliveries", "delivered") if k in baseline
        }
        assert after == {**baseline, **gone}
        for blob_id in blob_ids:
            assert await repo.blob_refcount(blob_id) is None
        assert await content_of(repo, "u", INBOX, 1) == kept
        assert (await repo.get_mailbox("u", INBOX)).messages == 1


async def expunge_all(repo: StoreRepository, user: str, mailbox: str, keep: int = 0) -> None:
    uids = [m.uid for m in (await repo.list_messages(user, mailbox, 0, 1000))[0] if m.uid != keep]
    if uids:
        await repo.store_flags(user, mailbox, uids, FlagsMode.ADD, ["\\Deleted"])
        await repo.expunge(user, mailbox, uids)
