"""Exact quotas on the MongoDB backend (ADR 0036) against a real FerretDB 1.24: what a crashed
writer's reservation costs and how its retry counts, store replicas on one database checking
one at a time, a dead replica's quota lease taken over, and the janitor removing both."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from postmesh.store import leftovers as lo
from postmesh.store.errors import QuotaExceeded
from postmesh.store.model import INBOX, Delivery
from postmesh.store.mongodb import MongoStoreRepository, reservations
from tests.integration.infra import FerretDB

SIZE = 1_500


def sized(n: int) -> bytes:
    head = f"Subject: q {n:05d}\r\nMessage-ID: <q-{n:05d}@example.org>\r\n\r\n".encode()
    return head + b"x" * (SIZE - len(head))


@pytest.fixture
async def database(ferretdb: FerretDB) -> AsyncIterator[str]:
    name = f"store_{uuid.uuid4().hex[:12]}"
    yield name
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(ferretdb.url)
    await client.drop_database(name)
    await client.close()


async def replica(
    ferretdb: FerretDB, database: str, user_cache_seconds: float = 0.0
) -> MongoStoreRepository:
    """A store repository with its own client and in-process locks: another store replica."""
    repo = MongoStoreRepository(ferretdb.url, database, user_cache_seconds=user_cache_seconds)
    await repo.open()
    return repo


async def test_a_quota_set_through_another_replica_holds_within_about_a_second(
    ferretdb: FerretDB, database: str
) -> None:
    """ADR 55: a replica keeps a provisioned user's document for its Deliveries (60 s, as
    deployed), and still refuses past a limit set through another replica once it has read
    the users' change stamp again (at most a second later); through itself, at once."""
    a = await replica(ferretdb, database, user_cache_seconds=60.0)
    b = await replica(ferretdb, database, user_cache_seconds=60.0)
    try:
        await a.provision_user("u")
        for i in range(3):  # the document (no limit) is kept by replica a
            await a.deliver(Delivery(f"a{i}", "u", "", content=sized(i)))
        await b.set_quota("u", 0, 3)
        await asyncio.sleep(1.1)  # a's next stamp check
        with pytest.raises(QuotaExceeded, match="messages 3/3"):
            await a.deliver(Delivery("a3", "u", "", content=sized(3)))
        await a.set_quota("u", 0, 4)
        assert (await a.deliver(Delivery("a3", "u", "", content=sized(3)))).uid == 4
        with pytest.raises(QuotaExceeded, match="messages 4/4"):
            await a.deliver(Delivery("a4", "u", "", content=sized(4)))
        assert (await a.get_quota("u")).messages_used == 4
    finally:
        await a.close()
        await b.close()


class Crash(Exception):
    pass


def crash_after(obj: Any, name: str) -> None:
    original: Callable[..., Awaitable[Any]] = getattr(obj, name)

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        setattr(obj, name, original)
        await original(*args, **kwargs)
        raise Crash(name)

    setattr(obj, name, wrapper)


async def test_a_dead_deliverys_reservation_counts_until_its_retry_finishes(
    ferretdb: FerretDB, database: str
) -> None:
    """A Deliver that died after reserving (and taking its blob reference) still holds its
    room: a second delivery fills the rest, a third is refused. Kafka's redelivery of the dead
    one reuses its reservation (not refused although the user is now full) and counts once."""
    repo = await replica(ferretdb, database)
    try:
        await repo.provision_user("u")
        await repo.set_quota("u", 0, 2)
        crash_after(repo, "_step_reference_blob")
        with pytest.raises(Crash):
            await repo.deliver(Delivery("q1", "u", "", content=sized(1)))
        assert await repo._quota_gate.reservations.count_documents({"user": "u"}) == 1
        await repo.deliver(Delivery("q2", "u", "", content=sized(2)))
        with pytest.raises(QuotaExceeded, match="messages 2/2"):
            await repo.deliver(Delivery("q3", "u", "", content=sized(3)))
        retry = await repo.deliver(Delivery("q1", "u", "", content=sized(1)))
        assert (retry.duplicate, retry.created) == (True, True)
        q = await repo.get_quota("u")
        assert (q.messages_used, q.storage_used) == (2, 2 * SIZE)
        assert await repo._quota_gate.reservations.count_documents({}) == 0
        again = await repo.deliver(Delivery("q1", "u", "", content=sized(1)))
        assert (again.duplicate, again.uid) == (True, retry.uid)
    finally:
        await repo.close()


async def test_a_dead_writers_reservation_lapses(ferretdb: FerretDB, database: str) -> None:
    """What a writer that never comes back reserved counts for RESERVATION_SECONDS, no more."""
    repo = await replica(ferretdb, database)
    try:
        await repo.provision_user("u")
        await repo.set_quota("u", 0, 1)
        crash_after(repo, "_step_reference_blob")
        with pytest.raises(Crash):
            await repo.deliver(Delivery("q1", "u", "", content=sized(1)))
        with pytest.raises(QuotaExceeded):
            await repo.deliver(Delivery("q2", "u", "", content=sized(2)))
        aged = time.time() - 1  # as it is RESERVATION_SECONDS later
        await repo._quota_gate.reservations.update_many({}, {"$set": {"expires_at": aged}})
        assert (await repo.deliver(Delivery("q2", "u", "", content=sized(2)))).created
        assert (await repo.get_quota("u")).messages_used == 1
    finally:
        await repo.close()


async def test_the_janitor_removes_what_dead_writers_left(
    ferretdb: FerretDB, database: str
) -> None:
    """A lapsed reservation of a user who never writes again, and a dead replica's lease."""
    repo = await replica(ferretdb, database)
    try:
        await repo.provision_user("u")
        await repo.set_quota("u", 0, 5)
        crash_after(repo, "_step_reference_blob")
        with pytest.raises(Crash):
            await repo.deliver(Delivery("q1", "u", "", content=sized(1)))
        gate = repo._quota_gate
        await gate.leases.insert_one({"_id": "v", "owner": "dead", "until": time.time() + 60})
        now = time.time()
        cutoffs = lo.Cutoffs(now, now, now, now)
        assert await repo.collect(lo.RESERVATIONS, cutoffs, 10) == 0  # all still alive
        later = now + reservations.RESERVATION_SECONDS + 1
        assert await repo.collect(lo.RESERVATIONS, lo.Cutoffs(later, now, now, now), 10) == 2
        assert await gate.reservations.count_documents({}) == 0
        assert await gate.leases.count_documents({}) == 0
    finally:
        await repo.close()


async def test_replicas_fill_a_quota_exactly(ferretdb: FerretDB, database: str) -> None:
    """Four store replicas (own clients, own in-process locks) on one database deliver into
    one user at once, each into its own mailbox (concurrent allocations in one mailbox
    document need MongoDB proper, not FerretDB): the quota lease makes their checks take
    turns, so exactly the room left is filled, for each of several users."""
    mailboxes = [INBOX, "Sent", "Archive", "Drafts"]
    repos = [await replica(ferretdb, database) for _ in mailboxes]
    try:
        free = 10
        for user in USERS:
            await repos[0].provision_user(user)
            await repos[0].set_quota(user, free * SIZE, 0)

        async def one(repo: MongoStoreRepository, user: str, n: int, mailbox: str) -> bool:
            try:
                await repo.deliver(Delivery(f"q{n}", user, mailbox, content=sized(n)))
            except QuotaExceeded:
                return False
            return True

        for user in USERS:
            results = await asyncio.gather(
                *(
                    one(repo, user, 100 * i + n, mailbox)
                    for n in range(8)
                    for i, (repo, mailbox) in enumerate(zip(repos, mailboxes, strict=True))
                )
            )
            q = await repos[0].get_quota(user)
            assert (sum(results), q.storage_used, q.messages_used) == (free, free * SIZE, free)
        assert await repos[0]._quota_gate.leases.count_documents({}) == 0
    finally:
        for repo in repos:
            await repo.close()


USERS = ["u1", "u2", "u3", "u4", "u5"]


async def test_a_dead_replicas_quota_lease_is_taken_over(ferretdb: FerretDB, database: str) -> None:
    """A lease left by a replica that died while checking holds the user's limited writes back
    until it expires, then the next check removes it."""
    repo = await replica(ferretdb, database)
    try:
        await repo.provision_user("u")
        await repo.set_quota("u", 0, 5)
        leases = repo._quota_gate.leases
        await leases.insert_one({"_id": "u", "owner": "dead", "until": time.time() + 0.5})
        started = time.monotonic()
        await repo.deliver(Delivery("q1", "u", "", content=sized(1)))
        assert time.monotonic() - started >= 0.4
        assert await leases.count_documents({}) == 0
        await leases.insert_one({"_id": "u", "owner": "dead", "until": time.time() - 1})
        await repo.deliver(Delivery("q2", "u", "", content=sized(2)))
        assert (await repo.get_quota("u")).messages_used == 2
    finally:
        await repo.close()
