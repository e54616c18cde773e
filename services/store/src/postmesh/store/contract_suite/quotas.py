"""Contract: quotas (RFC 9208) and one stored copy of a message delivered to many users."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter
from collections.abc import Awaitable

import grpc
import pytest

from postmesh.api.store.v1 import store_pb2, store_pb2_grpc
from postmesh.store.contract_suite.helpers import (
    content_of,
    deliver,
    expunge_uids,
    grpc_store,
    message,
    stream,
)
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

    @pytest.mark.parametrize("resource", ["storage", "messages"])
    async def test_concurrent_writers_fill_a_quota_exactly(
        self, repo: StoreRepository, resource: str
    ) -> None:
        """Deliver (some of them sent twice, as a redelivered record is), Append and COPY
        into four mailboxes of one user, all at once over gRPC, each adding one message of
        the same size, at a user with room for FREE more: exactly FREE writes are accepted
        whatever the interleaving, every other one is refused with RESOURCE_EXHAUSTED, and the
        usage ends exactly at the limit."""
        user, seeded, free = "full@example.com", 4, 12
        for i in range(seeded):  # the copies' sources
            await deliver(repo, f"seed{i}", user, sized(i), "Drafts")
        if resource == "storage":
            await repo.set_quota(user, (seeded + free) * SIZE, 0)
        else:
            await repo.set_quota(user, 0, seeded + free)
        async with grpc_store(repo) as stub:
            calls = write_calls(stub, user, seeded)
            random.Random(5).shuffle(calls)
            outcomes = await asyncio.gather(*(outcome(key, call) for key, call in calls))
            by_write: dict[str, set[str]] = {}
            for key, result in outcomes:
                by_write.setdefault(key, set()).add(result)
            # A write sent twice (the same delivery key) has one outcome.
            assert all(len(results) == 1 for results in by_write.values()), by_write
            tally = Counter(result for _, result in outcomes)
            assert tally["ok"] + tally["refused"] == len(calls)
            accepted = [k for k, results in by_write.items() if results == {"ok"}]
            assert (len(by_write), len(accepted)) == (WRITES, free), tally
            info = await stub.GetQuota(store_pb2.GetQuotaRequest(user=user), timeout=30)
            assert (info.storage_used_bytes, info.messages_used) == (
                (seeded + free) * SIZE, seeded + free,
            )  # fmt: skip
            boxes = await repo.list_mailboxes(user)
            assert sum(b.messages for b in boxes) == seeded + free
            # A retried delivery is answered, not counted again; a refused one stays refused.
            done = next(k for k in accepted if k.startswith("deliver "))
            _, qid, mailbox = done.split()
            again = await stub.Deliver(delivery_request(qid, user, mailbox), timeout=30)
            assert again.duplicate
            refused = next(k for k in by_write if k.startswith("deliver ") and k not in accepted)
            _, qid, mailbox = refused.split()
            with pytest.raises(grpc.aio.AioRpcError) as info_err:
                await stub.Deliver(delivery_request(qid, user, mailbox), timeout=30)
            assert info_err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            q = await repo.get_quota(user)
            assert (q.storage_used, q.messages_used) == ((seeded + free) * SIZE, seeded + free)


WRITES = 48  # distinct writes of write_calls()
SIZE = 2_000  # every message of the concurrency test, so a count of writes fills a limit


def sized(n: int) -> bytes:
    head = (
        f"From: sender@example.org\r\nTo: full@example.com\r\nSubject: fill {n:05d}\r\n"
        f"Message-ID: <fill-{n:05d}@example.org>\r\n\r\n"
    ).encode()
    return head + b"x" * (SIZE - len(head))


def delivery_request(qid: str, user: str, mailbox: str) -> store_pb2.DeliverRequest:
    n = int(qid.removeprefix("Q"))
    return store_pb2.DeliverRequest(queue_id=qid, user=user, mailbox=mailbox, content=sized(n))


def write_calls(
    stub: store_pb2_grpc.StoreServiceStub, user: str, sources: int
) -> list[tuple[str, Awaitable[object]]]:
    """(write, call) pairs: 24 deliveries (8 of them sent twice), 16 appends, 8 copies."""
    calls: list[tuple[str, Awaitable[object]]] = []
    for n in range(100, 124):
        mailbox = "INBOX" if n % 3 else "Sent"
        key = f"deliver Q{n} {mailbox}"
        for _ in range(2 if n % 3 == 1 else 1):
            calls.append((key, stub.Deliver(delivery_request(f"Q{n}", user, mailbox), timeout=60)))
    for n in range(200, 216):
        mailbox = "INBOX" if n % 2 else "Archive"
        header = store_pb2.AppendHeader(user=user, mailbox=mailbox, size=SIZE)
        parts = [store_pb2.AppendRequest(header=header), store_pb2.AppendRequest(chunk=sized(n))]
        calls.append((f"append {n}", stub.Append(iter(parts), timeout=60)))
    for n in range(8):
        request = store_pb2.CopyMessagesRequest(
            user=user, mailbox="Drafts", uids=[n % sources + 1],
            destination="Archive" if n % 2 else "Trash",
        )  # fmt: skip
        calls.append((f"copy {n}", stub.CopyMessages(request, timeout=60)))
    return calls


async def outcome(key: str, call: Awaitable[object]) -> tuple[str, str]:
    try:
        await call
    except grpc.aio.AioRpcError as e:
        if e.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        return key, "refused"
    return key, "ok"
