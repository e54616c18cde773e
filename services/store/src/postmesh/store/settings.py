"""Store settings; every field is read from POSTMESH_<FIELD>."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from postmesh.common.mongo import MongoSettings


class StoreSettings(MongoSettings):
    ops_port: int = Field(default=9105, ge=0, le=65535)
    # gRPC listen address, host:port (mutual TLS) or unix:/path (ADR 73); clients reach it
    # through POSTMESH_STORE_ADDRESS.
    store_listen: str = "127.0.0.1:50061"
    # sqlite (embedded) or mongodb (production; MongoDB 6+, FerretDB 1.24 in tests).
    store_backend: Literal["sqlite", "mongodb"] = "sqlite"
    # Relative paths are under data_dir.
    store_sqlite_path: Path = Path("store.sqlite3")
    # MongoDB database, when the backend is mongodb (the connection: POSTMESH_MONGODB_URL etc.).
    mongodb_database: str = Field(default="postmesh", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    # Largest message (Deliver content or PutBlob stream) the store accepts.
    store_max_message_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # How long a PutBlob upload is kept without any message referencing it (claim check:
    # the Kafka record naming it may be consumed much later, e.g. after a delivery backlog).
    store_upload_pin_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    # ListMessages page size when the request says 0, and the most one page may hold.
    store_default_page_size: int = Field(default=500, gt=0, le=10_000)
    store_max_page_size: int = Field(default=5000, gt=0, le=100_000)
    # Quota of a user without their own (SetQuota): storage in bytes and message count, 0 for
    # unlimited (RFC 9208 STORAGE and MESSAGE). Enforced on Deliver, Append and Copy.
    store_default_quota_bytes: int = Field(default=0, ge=0)
    store_default_quota_messages: int = Field(default=0, ge=0)
    # MongoDB backend: how long a Deliver may use a provisioned user's document (its limits)
    # read before; a SetQuota through any replica is seen within about a second anyway, by
    # the users' change stamp (ADR 55). 0 reads it for every Deliver.
    store_user_cache_seconds: float = Field(default=60.0, ge=0)
    # A mailbox event that cannot be published within this time is logged and dropped
    # (the store is the source of truth; readers resynchronise from MODSEQ).
    store_event_publish_timeout_seconds: float = Field(default=5.0, gt=0)
    # The janitor (janitor.py): a pass every this many seconds (jittered; 0 = never), each kind
    # removed in batches of store_janitor_batch, at most store_janitor_max_batches per pass.
    store_janitor_interval_seconds: float = Field(default=300.0, ge=0)
    store_janitor_batch: int = Field(default=500, gt=0, le=10_000)
    store_janitor_max_batches: int = Field(default=20, gt=0)
    # Expunge tombstones (QRESYNC VANISHED, RFC 7162 3.2.10) are kept this long; a client that
    # resynchronises from an older MODSEQ gets a UID-list comparison instead (correct, slower).
    store_tombstone_retention_seconds: int = Field(default=30 * 24 * 3600, gt=0)
    # Deliver idempotency records are kept this long: longer than any redelivery of a queue id
    # can come (the Kafka topic's retention, 7 days by default, and the deferred queue's
    # lifetime), so a replayed record never makes a second copy. At least the upload pin.
    store_delivery_retention_seconds: int = Field(default=14 * 24 * 3600, gt=0)
    # A half-written leftover (blob reference without its message, blob left "writing", queue
    # transition without its entry) untouched this long is a dead writer's and is removed.
    store_janitor_orphan_grace_seconds: int = Field(default=3600, gt=0)

    @model_validator(mode="after")
    def _delivery_records_outlive_uploads(self) -> StoreSettings:
        # A Deliver naming a PutBlob upload can come until its pin expires; its record must
        # still be there when a redelivery of it does.
        if self.store_delivery_retention_seconds < self.store_upload_pin_seconds:
            raise ValueError(
                "store_delivery_retention_seconds must be at least store_upload_pin_seconds"
            )
        return self
