"""The store on the MongoDB API (PyMongo asyncio; MongoDB 6+ and FerretDB 1.24).

The backend is assembled from one module per concern: ``base.py`` (collections, users, mailbox
documents, quota usage), ``intents.py`` (all-or-nothing multi-document operations),
``mailboxes.py`` (provisioning, CREATE/DELETE/RENAME, subscriptions), ``delivery.py`` (Deliver,
Append) and ``messages.py`` (COPY/MOVE, flags, expunge, reads, search, changes), over the blob
store of ``blobs.py``.

Not cleaned up yet (a janitor task, next issue): tombstones and delivery records older than the
Kafka retention, expired upload pins (then their unreferenced blobs), delivery records left
``pending`` by a delivery never retried, references taken by an Append that died before its
message existed, and chunks of a blob whose writer crashed before the blob document existed.
"""

from __future__ import annotations

from postmesh.store.mongodb.delivery import delivery_key
from postmesh.store.mongodb.messages import MongoMessages


class MongoStoreRepository(MongoMessages):
    async def open(self) -> None:
        await super().open()
        # Operations a previous run left half-done (their leases have expired by now, or
        # will have when the user's next operation looks again).
        await self._recover()


__all__ = ["MongoStoreRepository", "delivery_key"]
