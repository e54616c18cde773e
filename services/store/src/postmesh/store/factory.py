"""Pick the repository the settings name."""

from __future__ import annotations

from postmesh.store.repository import StoreRepository
from postmesh.store.settings import StoreSettings


def create_repository(settings: StoreSettings) -> StoreRepository:
    if settings.store_backend == "mongodb":
        from pymongo import AsyncMongoClient

        from postmesh.store.mongodb import MongoStoreRepository

        url, options = settings.mongo_client_args()
        return MongoStoreRepository(
            None,
            settings.mongodb_database,
            client=AsyncMongoClient(url, **options),
            user_cache_seconds=settings.store_user_cache_seconds,
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
