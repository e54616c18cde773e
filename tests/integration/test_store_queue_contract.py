"""The queue/lock contract on the MongoDB backend against a real FerretDB 1.24, where updates
are not atomic: every claim and lock decision must rest on unique-index inserts. Separate
repository instances (each its own client) stand in for separate store replicas."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from postmesh.store.queue.contract_suite import (
    FakeClock,
    OpenRepo,
    QueueContract,
    entry,
)
from postmesh.store.queue.mongodb import MongoQueueRepository
from postmesh.store.queue.repository import QueueRepository
from tests.integration.infra import FerretDB


@pytest.fixture
async def database(ferretdb: FerretDB) -> AsyncIterator[str]:
    name = f"queue_{uuid.uuid4().hex[:12]}"
    yield name
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(ferretdb.url)
    await client.drop_database(name)
    await client.close()


@pytest.fixture
async def open_mongo(ferretdb: FerretDB, database: str) -> AsyncIterator[OpenRepo]:
    opened: list[MongoQueueRepository] = []

    async def open_repo(clock: FakeClock) -> QueueRepository:
        repo = MongoQueueRepository(ferretdb.url, database, clock=clock)
        await repo.open()
        opened.append(repo)
        return repo

    yield open_repo
    for repo in opened:
        await repo.close()


class TestMongoQueueContractOnFerretDB(QueueContract):
    @pytest.fixture
    def open_repo(self, open_mongo: OpenRepo) -> OpenRepo:
        return open_mongo


async def test_claimer_dead_after_insert_is_rolled_forward(open_mongo: OpenRepo) -> None:
    """A replica that won a transition and died before writing the entry document: the next
    reader applies the transition itself, so the entry is neither stuck nor claimed twice."""
    clock = FakeClock()
    repo = await open_mongo(clock)
    assert isinstance(repo, MongoQueueRepository)
    await repo.enqueue(entry())

    async def die(doc: dict[str, Any], t: dict[str, Any]) -> None:
        raise RuntimeError("replica died")

    repo._apply = die  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError):
        await repo.claim_due("dead", 1, 30)
    del repo._apply
    other = await open_mongo(clock)
    assert await other.claim_due("b", 1, 30) == []  # the dead replica's lease still runs
    current = await other.get("Q1", "bob@example.net")
    assert current is not None and current.lease_owner == "dead"
    clock.advance(31)
    (taken,) = await other.claim_due("b", 1, 30)
    assert taken.lease_owner == "b"


async def test_deleter_dead_after_insert_is_finished(open_mongo: OpenRepo) -> None:
    clock = FakeClock()
    repo = await open_mongo(clock)
    assert isinstance(repo, MongoQueueRepository)
    await repo.enqueue(entry())
    await repo.claim_due("a", 1, 30)

    async def die(doc: dict[str, Any], t: dict[str, Any]) -> None:
        raise RuntimeError("replica died")

    repo._apply = die  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError):
        await repo.delete("Q1", "bob@example.net", "a")
    del repo._apply
    other = await open_mongo(clock)
    assert await other.get("Q1", "bob@example.net") is None
    assert (await other.stats()).entries == 0
    assert (await other.enqueue(entry()))[1] is False
