"""Contract: quotas (RFC 9208) and one stored copy of a message delivered to many users."""

from __future__ import annotations

import hashlib

import pytest

from postmesh.store.contract_suite.helpers import content_of, deliver, expunge_uids, message, stream
from postmesh.store.errors import QuotaExceeded
from postmesh.store.model import INBOX, Delivery
from postmesh.store.repository import StoreRepository


class QuotaContract:
    async def test_one_blob_for_a_hundred_users(self, repo: StoreRepository) -> None:
        content = message(1, b"z" * 300_000)
        blob_id = hashlib.sha256(content).hexdigest()
        users = [f"user{i}@example.com" for i in range(100)]
        for user in users:
            r = await repo.deliver(Delivery("q-fanout", user, "", content=content))
            assert (r.uid, r.duplicate) == (1, False)
        assert await repo.blob_refcount(blob_id) == 100
        assert await content_of(repo, users[-1], INBOX, 1) == content
        for n, user in enumerate(users, 1):
            assert await expunge_uids(repo, user, INBOX, [1]) == [1]
            assert await repo.blob_refcount(blob_id) == (100 - n or None)
        assert await repo.blob_refcount(blob_id) is None

    async def test_usage_and_limits(self, repo: StoreRepository) -> None:
        contents = [message(1), message(2)]
        sizes = [len(m) for m in contents]
        await deliver(repo, "q1", "u", contents[0])
        await deliver(repo, "q2", "u", contents[1], "Sent")
        q = await repo.get_quota("u")
        assert (q.storage_used, q.messages_used) == (sum(sizes), 2)
        assert (q.storage_limit, q.message_limit) == (0, 0)  # unlimited by default
        q = await repo.set_quota("u", 10_000, 5)
        assert (q.storage_limit, q.message_limit, q.storage_used) == (10_000, 5, sum(sizes))
        assert (await repo.get_quota("u")).message_limit == 5

    async def test_storage_quota_is_enforced(self, repo: StoreRepository) -> None:
        first = message(1, b"a" * 400)
        await deliver(repo, "q1", "u", first)
        limit = len(first) + 500
        await repo.set_quota("u", limit, 0)
        big = message(2, b"b" * 600)
        with pytest.raises(
            QuotaExceeded, match=f"quota exceeded: storage {len(first)}/{limit} bytes"
        ):
            await deliver(repo, "q2", "u", big)
        with pytest.raises(QuotaExceeded):
            await repo.append("u", INBOX, [], 0, len(big), stream(big, 100))
        # A redelivery of a message stored before still answers as a duplicate.
        assert (await repo.deliver(Delivery("q1", "u", "", content=first))).duplicate
        # COPY adds usage, MOVE within the user does not.
        with pytest.raises(QuotaExceeded):
            await repo.copy_messages("u", INBOX, [1], "Archive")
        moved = await repo.move_messages("u", INBOX, [1], "Archive")
        assert moved.dest_uids == [1]
        small = message(3)
        assert await deliver(repo, "q3", "u", small) > 0
        # Expunging frees space.
        await expunge_uids(repo, "u", "Archive", [1])
        assert (await repo.get_quota("u")).storage_used == len(small)
        assert await deliver(repo, "q4", "u", big) > 0
        box = await repo.get_mailbox("u", INBOX)
        assert box.messages == 2

    async def test_message_quota_and_default(self, repo: StoreRepository) -> None:
        repo.default_quota_messages = 2
        await deliver(repo, "q1", "u", message(1))
        await deliver(repo, "q2", "u", message(2))
        assert (await repo.get_quota("u")).message_limit == 2
        with pytest.raises(QuotaExceeded, match="quota exceeded: messages 2/2"):
            await deliver(repo, "q3", "u", message(3))
        # A user's own limit replaces the default; 0 is unlimited.
        await repo.set_quota("u", 0, 0)
        assert await deliver(repo, "q3", "u", message(3)) == 3
        q = await repo.get_quota("u")
        assert (q.message_limit, q.messages_used) == (0, 3)
