"""The GIN index script for FerretDB on PostgreSQL and the by-id reader's choice (ADR 0036); the
script itself runs on a real PostgreSQL in tests/integration/test_store_explain_ferretdb.py."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from postmesh.store.mongodb import MongoStoreRepository, pg_indexes
from postmesh.store.mongodb.by_id import served_one_by_one
from postmesh.store.queue.mongodb import MongoQueueRepository

Doc = dict[str, Any]


def store_collections() -> set[str]:
    """The collections the store's code names (the client connects only when used)."""
    client: AsyncMongoClient[Doc] = AsyncMongoClient("mongodb://127.0.0.1:9/", connect=False)
    repo = MongoStoreRepository(None, "db", client=client)
    queue = MongoQueueRepository(None, "db", client=client)
    colls = [
        repo._users, repo._mailboxes, repo._subscriptions, repo._messages, repo._deliveries,
        repo._delivered, repo._intents, repo._quota_gate.reservations,
        repo._quota_gate.leases,
        repo.blobs.blobs, repo.blobs.chunks, repo.blobs.refs, repo.blobs.index,
        queue._entries, queue._transitions, queue._locks,
    ]  # fmt: skip
    return {c.name for c in colls}


def test_every_collection_gets_an_id_index() -> None:
    with_id = {c for c, f in pg_indexes.FIELDS if f == "_id"}
    assert store_collections() == with_id


def test_index_names_fit_postgresql() -> None:
    for coll, field in pg_indexes.FIELDS:
        table = f"{coll}_0123abcd"  # FerretDB's table name: the collection and a hash
        name = pg_indexes.index_name(table, field)
        assert len(name.encode()) <= 63 and name.startswith(pg_indexes.PREFIX)
    script = pg_indexes.sql('odd"name')
    assert '"odd""name"._ferretdb_database_metadata' in script
    assert all(f"('{c}', '{f}')" in script for c, f in pg_indexes.FIELDS)


def explained(plan: Doc, *, ferretdb: bool = True, pushed: bool = True) -> Doc:
    out: Doc = {"queryPlanner": {"Plan": plan}, "filterPushdown": pushed, "serverInfo": {}}
    if ferretdb:
        out["serverInfo"]["ferretdbVersion"] = "v1.24.2"
    return out


def test_one_by_one_only_where_a_gin_index_serves_the_lookup() -> None:
    gin = {
        "Node Type": "Bitmap Heap Scan",
        "Plans": [{"Node Type": "Bitmap Index Scan", "Index Name": "postmesh_gin_t_abc_id"}],
    }
    assert served_one_by_one(explained(gin))
    # FerretDB without the script: a sequential scan; MongoDB: $in is served there anyway.
    assert not served_one_by_one(explained({"Node Type": "Seq Scan"}))
    assert not served_one_by_one(explained(gin, pushed=False))
    assert not served_one_by_one(explained(gin, ferretdb=False))
    mongodb = {"queryPlanner": {"winningPlan": {"stage": "EXPRESS_IDHACK"}}, "serverInfo": {}}
    assert not served_one_by_one(mongodb)
