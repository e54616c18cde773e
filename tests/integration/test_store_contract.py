"""The store's repository contract on the MongoDB backend against a real FerretDB 1.24, plus
crash-and-retry tests of the transaction-free write sequences that only that backend has."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pymongo import AsyncMongoClient

pytest.register_assert_rewrite("postmesh.store.contract_suite")

from postmesh.store.contract_suite import StoreContract, content_of, message  # noqa: E402
from postmesh.store.model import INBOX, Delivery, FlagsMode  # noqa: E402
from postmesh.store.mongodb import MongoStoreRepository  # noqa: E402
from postmesh.store.mongodb.blobs import COMPLETE, DELETING  # noqa: E402
from tests.integration.infra import FerretDB  # noqa: E402


@pytest.fixture
async def mongo_repo(ferretdb: FerretDB) -> AsyncIterator[MongoStoreRepository]:
    # One database per test: isolation without dropping what other tests use.
    name = f"store_{uuid.uuid4().hex[:12]}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        ferretdb.url, serverSelectionTimeoutMS=5000
    )
    repo = MongoStoreRepository(ferretdb.url, name, client=client)
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
    "_step_insert_message",
    "_step_mark_done",
]


@pytest.mark.parametrize("step", DELIVER_STEPS)
@pytest.mark.parametrize("by_blob_id", [False, True], ids=["inline", "blob_id"])
async def test_deliver_retry_after_crash_makes_one_copy(
    mongo_repo: MongoStoreRepository, step: str, by_blob_id: bool
) -> None:
    repo = mongo_repo
    content = message(1, b"x" * 300_000)  # two chunks
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


async def test_deleter_crash_is_taken_over_by_writer(mongo_repo: MongoStoreRepository) -> None:
    """A deleter that died after marking a blob 'deleting' (and maybe removing chunks) does not
    block a later delivery of the same content, which writes a new incarnation."""
    repo = mongo_repo
    content = message(1, b"y" * 600_000)
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
