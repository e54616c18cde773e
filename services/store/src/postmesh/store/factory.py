"""Pick the repository the settings name."""

from __future__ import annotations

from postmesh.store.repository import StoreRepository
from postmesh.store.settings import StoreSettings


def create_repository(settings: StoreSettings) -> StoreRepository:
    if settings.store_backend == "mongodb":
        from postmesh.store.mongodb import MongoStoreRepository

        return MongoStoreRepository(
            settings.mongodb_url,
            settings.mongodb_database,
            max_message_bytes=settings.store_max_message_bytes,
            upload_pin_seconds=settings.store_upload_pin_seconds,
            default_quota_bytes=settings.store_default_quota_bytes,
            default_quota_messages=settings.store_default_quota_messages,
        )
    from postmesh.store.sqlite import SqliteStoreRepository

    return SqliteStoreRepository(
        settings.data_path(settings.store_sqlite_path),
        max_message_bytes=settings.store_max_message_bytes,
        upload_pin_seconds=settings.store_upload_pin_seconds,
        default_quota_bytes=settings.store_default_quota_bytes,
        default_quota_messages=settings.store_default_quota_messages,
    )
