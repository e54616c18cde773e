"""Several store replicas on FerretDB are noticed (ADR 37, mongodb/replicas.py): each replica
says it is alive in the database, and on FerretDB more than one alive sets
postmesh_store_unsafe_replicas and logs an error. Against the session's real FerretDB."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from postmesh.store.mongodb.replicas import ALIVE_SECONDS, ReplicaWatch, is_ferretdb
from tests.integration.infra import FerretDB


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


@pytest.fixture
async def database(ferretdb: FerretDB) -> AsyncIterator[Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(ferretdb.url)
    name = f"replicas_{uuid.uuid4().hex[:10]}"
    yield client[name]
    await client.drop_database(name)
    await client.close()


async def test_ferretdb_says_what_it_is(database: Any) -> None:
    assert is_ferretdb(await database.client.admin.command("buildInfo"))
    assert not is_ferretdb({"version": "7.0.14", "gitVersion": "ce59cfc"})  # MongoDB's shape


async def test_a_second_replica_on_ferretdb_is_reported_until_it_goes(
    database: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    one = ReplicaWatch(database["store_replicas"], replica_id="store-a", clock=clock)
    two = ReplicaWatch(database["store_replicas"], replica_id="store-b", clock=clock)

    assert await one.beat() == 1
    assert _gauge("postmesh_store_replicas_alive") == 1
    assert _gauge("postmesh_store_unsafe_replicas") == 0

    with caplog.at_level(logging.ERROR, logger="postmesh.store.mongodb.replicas"):
        assert await two.beat() == 2
    assert _gauge("postmesh_store_unsafe_replicas") == 1
    assert any("run one store replica" in r.getMessage() for r in caplog.records)

    # A replica that stopped cleanly is gone at once ...
    await two.leave()
    assert await one.beat() == 1
    assert _gauge("postmesh_store_unsafe_replicas") == 0
    # ... and one that died, once it missed its beats.
    await two.beat()
    clock.now += ALIVE_SECONDS + 1
    assert await one.beat() == 1
    assert _gauge("postmesh_store_unsafe_replicas") == 0
