"""The store on the MongoDB API (PyMongo asyncio; MongoDB 6+ and FerretDB 1.24).

Without multi-document transactions, Deliver is a sequence of single-document writes, each
idempotent, recorded in a delivery document so a retry after a crash at any point resumes
where the first attempt stopped (see ``_deliver``). UIDs and MODSEQs come from an atomic
``$inc`` on the mailbox document, as WildDuck does.

Collections: store_mailboxes, store_messages, store_deliveries, and the blob collections of
``postmesh.store.mongodb.blobs``. Expunged messages stay as small tombstones (no content): they
stop a retried delivery from bringing a message back, and carry the expunge MODSEQ that
QRESYNC's VANISHED (RFC 7162 section 3.2.10) will need.

Not cleaned up yet (a janitor task, next issue): tombstones and delivery records older than the
Kafka retention, expired upload pins (then their unreferenced blobs), delivery records left
``pending`` by a delivery never retried, and chunks of a blob whose writer crashed before the
blob document existed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from postmesh.store.blobs import BlobSource
from postmesh.store.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from postmesh.store.model import (
    INBOX,
    DeliverResult,
    Delivery,
    ExpungeResult,
    FlagsMode,
    FlagsResult,
    Mailbox,
    Message,
)
from postmesh.store.mongodb.blobs import DELETING, UPLOAD, MongoBlobStore
from postmesh.store.repository import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_UPLOAD_PIN_SECONDS,
    StoreRepository,
    new_uidvalidity,
)
from postmesh.store.validation import DELETED, SEEN, apply_flags

Doc = dict[str, Any]
PENDING, DONE = "pending", "done"
# Optimistic retries of one message's flag update under concurrent writers.
FLAG_RETRIES = 20


def delivery_key(queue_id: str, user: str, mailbox: str) -> str:
    """Deterministic _id of a delivery (and of the message it makes)."""
    return hashlib.sha256(json.dumps([queue_id, user, mailbox]).encode()).hexdigest()


class KeyedLocks:
    """One asyncio lock per mailbox, dropped when unused.

    Why, besides ordering UIDs: FerretDB 1.24 (SQLite handler) applies an update as
    read-then-write outside any transaction, so concurrent $inc / findAndModify on one document
    lose updates (measured: 50 concurrent $inc ended at 8; FerretDB issue #3040). Only unique-
    index inserts are atomic there. Serialising a mailbox's writes in the process makes the
    store correct on FerretDB with one replica; on MongoDB the atomic single-document updates
    keep several replicas correct as well.
    """

    def __init__(self) -> None:
        self._locks: dict[Any, asyncio.Lock] = {}
        self._users: dict[Any, int] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Any) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]


def _message(doc: Doc) -> Message:
    return Message(
        int(doc["uid"]),
        tuple(doc["flags"]),
        int(doc["size"]),
        int(doc["internal_date"]),
        int(doc["modseq"]),
        str(doc["blob_id"]),
    )


class MongoStoreRepository(StoreRepository):
    transient_errors = (PyMongoError,)

    def __init__(
        self,
        url: str,
        database: str,
        *,
        client: AsyncMongoClient[Doc] | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        upload_pin_seconds: int = DEFAULT_UPLOAD_PIN_SECONDS,
    ) -> None:
        super().__init__(max_message_bytes=max_message_bytes, upload_pin_seconds=upload_pin_seconds)
        self._client: AsyncMongoClient[Doc] = client or AsyncMongoClient(
            url, serverSelectionTimeoutMS=5000
        )
        db = self._client[database]
        self._mailboxes = db["store_mailboxes"]
        self._messages = db["store_messages"]
        self._deliveries = db["store_deliveries"]
        self._locks = KeyedLocks()
        self.blobs = MongoBlobStore(
            db["store_blobs"], db["store_blob_chunks"], db["store_blob_refs"]
        )

    async def open(self) -> None:
        await self._mailboxes.create_index([("user", ASCENDING), ("name", ASCENDING)], unique=True)
        await self._messages.create_index(
            [("mailbox_id", ASCENDING), ("uid", ASCENDING)], unique=True
        )
        await self.blobs.create_indexes()

    async def close(self) -> None:
        await self._client.close()

    async def ping(self) -> bool:
        try:
            await self._client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    # -- mailboxes ---------------------------------------------------------------------------

    async def _mailbox_doc(self, user: str, name: str) -> Doc:
        doc = await self._mailboxes.find_one({"user": user, "name": name})
        if doc is None:
            raise NotFound(f"mailbox {name!r} of {user} does not exist")
        return doc

    async def _insert_mailbox(self, user: str, name: str) -> Doc | None:
        """The new mailbox, or None if it exists (the unique index decides a race)."""
        doc: Doc = {
            "_id": ObjectId(),
            "user": user,
            "name": name,
            "uidvalidity": new_uidvalidity(),
            "uidnext": 1,
            "highestmodseq": 1,
            "special_use": "",
            "subscribed": name == INBOX,
            "created_at": time.time(),
        }
        try:
            await self._mailboxes.insert_one(doc)
        except DuplicateKeyError:
            return None
        return doc

    async def _to_mailbox(self, doc: Doc) -> Mailbox:
        # Counts are derived, not counters: without transactions a counter would drift when a
        # writer dies between the message write and the counter update.
        live = {"mailbox_id": doc["_id"], "expunged": False}
        total = await self._messages.count_documents(live)
        seen = await self._messages.count_documents({**live, "flags": SEEN}) if total else 0
        return Mailbox(
            str(doc["_id"]), doc["user"], doc["name"], int(doc["uidvalidity"]),
            int(doc["uidnext"]), int(doc["highestmodseq"]), total, total - seen,
            doc.get("special_use", ""), bool(doc.get("subscribed", False)),
        )  # fmt: skip

    async def _create_mailbox(self, user: str, name: str) -> Mailbox:
        doc = await self._insert_mailbox(user, name)
        if doc is None:
            raise AlreadyExists(f"mailbox {name!r} of {user} exists")
        return await self._to_mailbox(doc)

    async def _list_mailboxes(self, user: str) -> list[Mailbox]:
        docs = await self._mailboxes.find({"user": user}).sort("name", ASCENDING).to_list(None)
        return [await self._to_mailbox(d) for d in docs]

    async def _get_mailbox(self, user: str, name: str) -> Mailbox:
        return await self._to_mailbox(await self._mailbox_doc(user, name))

    async def _allocate(self, mailbox_id: ObjectId, uids: int) -> tuple[int, int]:
        """Atomically take ``uids`` UIDs (0 for none) and one MODSEQ: (first uid, modseq)."""
        before = await self._mailboxes.find_one_and_update(
            {"_id": mailbox_id},
            {"$inc": {"uidnext": uids, "highestmodseq": 1}},
            return_document=ReturnDocument.BEFORE,
        )
        if before is None:
            raise NotFound("mailbox was deleted")
        return int(before["uidnext"]), int(before["highestmodseq"]) + 1

    # -- deliver -----------------------------------------------------------------------------

    async def _deliver(self, delivery: Delivery, source: BlobSource | None) -> DeliverResult:
        """Steps, each idempotent, so a retry resumes after a crash anywhere:

        1. insert the delivery document {_id: key, state: pending} (unique _id: the first
           attempt wins; a retry reads it back, and returns at once if it is done);
        2. if the message document does not exist yet:
           a. take the blob reference (ref _id = delivery key: held at most once);
           b. allocate UID and MODSEQ with $inc and record them in the delivery document only
              if none is recorded (a crash in between burns a UID, which RFC 9051 allows);
           c. insert the message with _id = delivery key (a duplicate means it exists);
        3. mark the delivery done.
        """
        assert delivery.blob_id is not None
        blob_id = delivery.blob_id
        did = delivery_key(delivery.queue_id, delivery.user, delivery.mailbox)
        # Fast path for a redelivered record, valid even after the message (and maybe its
        # blob) is long gone.
        done = await self._deliveries.find_one({"_id": did, "state": DONE})
        if done is not None:
            return self._result(done, duplicate=True, created=False)
        if source is None:
            blob = await self.blobs.find(blob_id)
            if blob is None or blob["state"] == DELETING:
                raise InvalidArgument(f"unknown blob_id {blob_id}")
            size = int(blob["size"])
        else:
            size = source.size
        mailbox_created = False
        try:
            mbox = await self._mailbox_doc(delivery.user, delivery.mailbox)
        except NotFound:
            if delivery.mailbox != INBOX:
                raise
            # INBOX exists for every user from the first delivery on (RFC 9051 section 5.1);
            # two concurrent first deliveries meet at the unique (user, name) index.
            new_box = await self._insert_mailbox(delivery.user, INBOX)
            mailbox_created = new_box is not None
            mbox = new_box or await self._mailbox_doc(delivery.user, INBOX)

        record: Doc = {
            "_id": did,
            "queue_id": delivery.queue_id,
            "user": delivery.user,
            "mailbox": delivery.mailbox,
            "mailbox_id": mbox["_id"],
            "uidvalidity": mbox["uidvalidity"],
            "blob_id": blob_id,
            "size": size,
            "flags": list(delivery.flags),
            "internal_date": delivery.internal_date,
            "state": PENDING,
            "created_at": time.time(),
        }
        duplicate = False
        try:
            await self._deliveries.insert_one(record)
        except DuplicateKeyError:
            duplicate = True
            mailbox_created = False
            found = await self._deliveries.find_one({"_id": did})
            if found is None:
                raise Unavailable("delivery record vanished; retry") from None
            record = found
            if record["state"] == DONE:
                return self._result(record, duplicate=True, created=False)
            if record["blob_id"] != blob_id:
                raise InvalidArgument(
                    f"queue id {delivery.queue_id} was delivered with other content"
                ) from None
        created = False
        if await self._messages.find_one({"_id": did}, {"_id": 1}) is None:
            await self._step_reference_blob(record, source)
            # Allocation and insert under the mailbox lock: UIDs become visible in ascending
            # order (a client told UIDNEXT=n must never later see a UID below n appear).
            async with self._locks.hold(record["mailbox_id"]):
                record = await self._step_allocate(record)
                record, created = await self._step_insert_message(record)
        else:
            found = await self._deliveries.find_one({"_id": did})
            if found is None or "uid" not in found:
                raise Unavailable("delivery record inconsistent; retry")
            record = found
        await self._step_mark_done(did)
        return self._result(
            record, duplicate=duplicate, created=created, mailbox_created=mailbox_created
        )

    @staticmethod
    def _result(
        record: Doc, *, duplicate: bool, created: bool, mailbox_created: bool = False
    ) -> DeliverResult:
        return DeliverResult(
            int(record["uid"]), int(record["uidvalidity"]), record["mailbox"],
            int(record["modseq"]), duplicate=duplicate, created=created,
            mailbox_created=mailbox_created,
        )  # fmt: skip

    async def _step_reference_blob(self, record: Doc, source: BlobSource | None) -> None:
        await self.blobs.acquire(record["_id"], record["blob_id"], source)

    async def _step_allocate(self, record: Doc) -> Doc:
        """Record a UID for the delivery (caller holds the mailbox lock). A UID recorded by a
        crashed attempt is reused only while it is still the newest one; otherwise a new one
        is taken, so a late retry never slips a message in below UIDs already shown."""
        latest = await self._deliveries.find_one({"_id": record["_id"]})
        if latest is not None:
            record = latest
        if "uid" in record:
            mbox = await self._mailboxes.find_one({"_id": record["mailbox_id"]}, {"uidnext": 1})
            if mbox is not None and int(mbox["uidnext"]) == int(record["uid"]) + 1:
                return record
        uid, modseq = await self._allocate(record["mailbox_id"], 1)
        await self._deliveries.update_one(
            {"_id": record["_id"]}, {"$set": {"uid": uid, "modseq": modseq}}
        )
        return {**record, "uid": uid, "modseq": modseq}

    async def _step_insert_message(self, record: Doc) -> tuple[Doc, bool]:
        """Insert the message (_id = delivery key); returns the record as the message shows it
        and whether this call inserted it."""
        try:
            await self._messages.insert_one(
                {
                    "_id": record["_id"],
                    "mailbox_id": record["mailbox_id"],
                    "user": record["user"],
                    "uid": record["uid"],
                    "modseq": record["modseq"],
                    "flags": record["flags"],
                    "internal_date": record["internal_date"],
                    "size": record["size"],
                    "blob_id": record["blob_id"],
                    "expunged": False,
                    "released": False,
                }
            )
        except DuplicateKeyError:
            # Another attempt (another store replica) inserted it first: report its UID.
            msg = await self._messages.find_one({"_id": record["_id"]})
            if msg is None:
                raise Unavailable("concurrent delivery of the same message; retry") from None
            await self._deliveries.update_one(
                {"_id": record["_id"]}, {"$set": {"uid": msg["uid"], "modseq": msg["modseq"]}}
            )
            return {**record, "uid": msg["uid"], "modseq": msg["modseq"]}, False
        return record, True

    async def _step_mark_done(self, did: str) -> None:
        await self._deliveries.update_one({"_id": did}, {"$set": {"state": DONE}})

    async def _put_blob(self, source: BlobSource) -> None:
        # A pin per upload (not per blob): uploads of one content by two edges both hold it.
        expires = time.time() + self.upload_pin_seconds
        await self.blobs.acquire(
            f"upload-{uuid.uuid4().hex}", source.blob_id, source, kind=UPLOAD, expires_at=expires
        )

    # -- messages ----------------------------------------------------------------------------

    async def _list_messages(
        self, user: str, mailbox: str, after_uid: int, limit: int
    ) -> tuple[list[Message], bool]:
        mbox = await self._mailbox_doc(user, mailbox)
        docs = (
            await self._messages.find(
                {"mailbox_id": mbox["_id"], "expunged": False, "uid": {"$gt": after_uid}}
            )
            .sort("uid", ASCENDING)
            .limit(limit + 1)
            .to_list(None)
        )
        return [_message(d) for d in docs[:limit]], len(docs) > limit

    async def _read_message(self, user: str, mailbox: str, uid: int) -> AsyncIterator[bytes]:
        mbox = await self._mailbox_doc(user, mailbox)
        doc = await self._messages.find_one(
            {"mailbox_id": mbox["_id"], "uid": uid, "expunged": False}
        )
        if doc is None:
            raise NotFound(f"no message with uid {uid} in {mailbox!r}")
        return await self.blobs.read(doc["blob_id"], int(doc["size"]))

    async def _store_flags(
        self, user: str, mailbox: str, uids: list[int], mode: FlagsMode, flags: tuple[str, ...]
    ) -> FlagsResult:
        mbox = await self._mailbox_doc(user, mailbox)
        async with self._locks.hold(mbox["_id"]):
            return await self._store_flags_locked(mbox, uids, mode, flags)

    async def _store_flags_locked(
        self, mbox: Doc, uids: list[int], mode: FlagsMode, flags: tuple[str, ...]
    ) -> FlagsResult:
        docs = (
            await self._messages.find(
                {"mailbox_id": mbox["_id"], "uid": {"$in": uids}, "expunged": False}
            )
            .sort("uid", ASCENDING)
            .to_list(None)
        )
        result = FlagsResult()
        modseq = 0
        for doc in docs:
            current: Doc | None = doc
            for _ in range(FLAG_RETRIES):
                assert current is not None
                new = apply_flags(current["flags"], mode, flags)
                if set(new) == set(current["flags"]):
                    result.messages.append(_message(current))
                    break
                # RFC 7162 section 3.1: one MODSEQ for what one STORE changes, unless a
                # concurrent change got a later one in between (MODSEQ never goes back).
                if modseq <= int(current["modseq"]):
                    modseq = (await self._allocate(mbox["_id"], 0))[1]
                # Compare-and-set on the message's MODSEQ, which every change replaces.
                done = await self._messages.update_one(
                    {"_id": current["_id"], "modseq": current["modseq"], "expunged": False},
                    {"$set": {"flags": list(new), "modseq": modseq}},
                )
                if done.matched_count:
                    result.messages.append(_message({**current, "flags": new, "modseq": modseq}))
                    result.changed.append(int(current["uid"]))
                    break
                current = await self._messages.find_one({"_id": current["_id"]})
                if current is None or current["expunged"]:
                    break
            else:
                raise Unavailable(f"uid {doc['uid']} is being changed concurrently; retry")
        return result

    async def _expunge(self, user: str, mailbox: str, uids: list[int] | None) -> ExpungeResult:
        """Tombstone (expunged=true, invisible from then on) → drop the blob reference →
        released=true. A crash leaves a tombstone not yet released, which the next Expunge of
        the mailbox finishes; every step is idempotent."""
        mbox = await self._mailbox_doc(user, mailbox)
        async with self._locks.hold(mbox["_id"]):
            return await self._expunge_locked(mbox, uids)

    async def _expunge_locked(self, mbox: Doc, uids: list[int] | None) -> ExpungeResult:
        query: Doc = {"mailbox_id": mbox["_id"], "flags": DELETED, "expunged": False}
        if uids is not None:
            query["uid"] = {"$in": uids}
        candidates = await self._messages.find(query, {"uid": 1, "blob_id": 1}).to_list(None)
        leftovers = await self._messages.find(
            {"mailbox_id": mbox["_id"], "expunged": True, "released": False},
            {"uid": 1, "blob_id": 1},
        ).to_list(None)
        if not candidates and not leftovers:
            return ExpungeResult()
        modseq = 0
        mine: list[Doc] = []
        if candidates:
            modseq = (await self._allocate(mbox["_id"], 0))[1]
            for doc in candidates:
                r = await self._messages.update_one(
                    {"_id": doc["_id"], "expunged": False, "flags": DELETED},
                    {"$set": {"expunged": True, "modseq": modseq}},
                )
                if r.modified_count:  # else: a concurrent Expunge owns it, or \Deleted went
                    mine.append(doc)
        for doc in [*mine, *leftovers]:
            await self.blobs.release(doc["_id"], doc["blob_id"])
            await self._messages.update_one({"_id": doc["_id"]}, {"$set": {"released": True}})
        expunged = sorted({int(d["uid"]) for d in [*mine, *leftovers]})
        return ExpungeResult(expunged, modseq or int(mbox["highestmodseq"]))

    async def _read_blob(self, blob_id: str) -> AsyncIterator[bytes]:
        return await self.blobs.read(blob_id)

    async def _blob_refcount(self, blob_id: str) -> int | None:
        return await self.blobs.refcount(blob_id)


__all__ = ["MongoStoreRepository", "delivery_key"]
