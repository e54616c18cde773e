"""Pick the repository the settings name."""

from __future__ import annotations

from postmesh.store.repository import StoreRepository
from postmesh.store.settings import StoreSettings


def create_repository(settings: StoreSettings) -> StoreRepository:
    max_bytes = settings.store_max_message_bytes
    pin = settings.store_upload_pin_seconds
    if settings.store_backend == "mongodb":
        from postmesh.store.mongodb import MongoStoreRepository

        return MongoStoreRepository(
            settings.mongodb_url,
            settings.mongodb_database,
            max_message_bytes=max_bytes,
            upload_pin_seconds=pin,
        )
    from postmesh.store.sqlite import SqliteStoreRepository

    return SqliteStoreRepository(
        settings.data_path(settings.store_sqlite_path),
        max_message_bytes=max_bytes,
        upload_pin_seconds=pin,
    )
