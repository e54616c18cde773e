"""The store on the MongoDB API (PyMongo asyncio; MongoDB 6+ and FerretDB 1.24).

The backend is assembled from one module per concern: ``base.py`` (collections, users, mailbox
documents, quota usage), ``intents.py`` (all-or-nothing multi-document operations),
``mailboxes.py`` (provisioning, CREATE/DELETE/RENAME, subscriptions), ``delivery.py`` (Deliver,
Append) and ``messages.py`` (COPY/MOVE, flags, expunge, reads, search, changes), over the blob
store of ``blobs.py``.

What crashed writers and time leave behind (expired upload pins, unreferenced blobs, aged
tombstones and delivery records, expired intents, references of a dead Append, chunks of an
abandoned incarnation) is removed by the janitor through ``leftovers.py``.
"""

from __future__ import annotations

from postmesh.store.mongodb.delivery import delivery_key
from postmesh.store.mongodb.leftovers import MongoLeftovers


class MongoStoreRepository(MongoLeftovers):
    async def open(self) -> None:
        await super().open()
        # Operations a previous run left half-done (their leases have expired by now, or
        # will have when the user's next operation looks again).
        await self._recover()


__all__ = ["MongoStoreRepository", "delivery_key"]
