"""Pick the queue repository the store settings name (the same backend as the mailboxes)."""

from __future__ import annotations

from postmesh.store.queue.repository import QueueRepository
from postmesh.store.repository import StoreRepository
from postmesh.store.settings import StoreSettings


def create_queue_repository(
    settings: StoreSettings, store: StoreRepository | None = None
) -> QueueRepository:
    if settings.store_backend == "mongodb":
        from pymongo import AsyncMongoClient

        from postmesh.store.queue.mongodb import MongoQueueRepository

        url, options = settings.mongo_client_args()
        return MongoQueueRepository(
            None, settings.mongodb_database, client=AsyncMongoClient(url, **options)
        )
    from postmesh.store.queue.sqlite import SqliteQueueRepository
    from postmesh.store.sqlite import SqliteStoreRepository

    # Tables of their own in the store's database file: one file to back up, and on the
    # store's connection when there is one (one writer per process).
    path = settings.data_path(settings.store_sqlite_path)
    if isinstance(store, SqliteStoreRepository) and store.path == path:
        return SqliteQueueRepository(path, db=store.connection, blobs=True)
    return SqliteQueueRepository(path)
